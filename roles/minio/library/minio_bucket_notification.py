#!/usr/bin/python
# MIT License (see the role's meta/main.yml).
"""Ansible module: set MinIO bucket notification configurations (webhook targets), idempotently."""

from __future__ import annotations

import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    HAS_BOTO3 = False
else:
    HAS_BOTO3 = True

DOCUMENTATION = r"""
---
module: minio_bucket_notification
short_description: Set the notification configuration of MinIO buckets (webhook targets).
description:
  - Sets, through the S3 API (boto3), the notification configuration of each listed bucket to
    exactly the given rules, each one a C(QueueConfiguration) with the ARN
    C(arn:minio:sqs::<webhook>:webhook) of a MinIO webhook target, its events and one prefix filter.
  - The configuration of a listed bucket is replaced as a whole; buckets that are not listed are
    left alone. The current and the wanted configuration are compared without the rule ids and
    the region of the ARNs, so a second run changes nothing.
  - Not M(community.aws.s3_bucket_notification), because that module sends the filter rule names
    as C(Prefix) and C(Suffix) with an empty suffix, and MinIO only accepts C(prefix) and C(suffix).
  - The webhook target must be configured on the server (C(MINIO_NOTIFY_WEBHOOK_ENABLE_<ID>) and
    C(MINIO_NOTIFY_WEBHOOK_ENDPOINT_<ID>)) before a rule may name it; MinIO refuses an unknown ARN.
  - In check mode a bucket that does not exist yet counts as one without notifications.
options:
  endpoint_url:
    description: The S3 API URL of the MinIO server, e.g. C(http://10.0.0.2:9000).
    type: str
    required: true
  access_key:
    description: Access key (the root user).
    type: str
    required: true
  secret_key:
    description: Secret key (the root password).
    type: str
    required: true
  region:
    description: Region the requests are signed for.
    type: str
    default: us-east-1
  notifications:
    description:
      - The rules. Several entries may name the same bucket; their rules are combined.
    type: list
    elements: dict
    required: true
    suboptions:
      bucket:
        description: The bucket.
        type: str
        required: true
      webhook:
        description:
          - Id of the webhook target, the C(<ID>) of C(MINIO_NOTIFY_WEBHOOK_*_<ID>) (letters, digits, _).
        type: str
        required: true
      prefixes:
        description: Key prefixes to notify about, one rule each; empty notifies about the whole bucket.
        type: list
        elements: str
        default: []
      suffix:
        description: Key suffix every rule of the entry filters on; empty filters on none.
        type: str
        default: ""
      events:
        description: Event names, e.g. C(s3:ObjectCreated:*) or C(s3:ObjectCreated:Put).
        type: list
        elements: str
        default: ["s3:ObjectCreated:*"]
requirements: [boto3]
"""

EXAMPLES = r"""
- name: Notify the event bridge about new objects under raw/ and forecast-requests/
  minio_bucket_notification:
    endpoint_url: http://127.0.0.1:9000
    access_key: "{{ minio_root_user }}"
    secret_key: "{{ minio_root_password }}"
    notifications:
      - bucket: iot-data
        webhook: event_bridge
        prefixes: [raw/, forecast-requests/]
        events: ["s3:ObjectCreated:*"]
"""

RETURN = r"""
changed_buckets:
  description: Buckets whose configuration was (in check mode, would be) replaced.
  returned: always
  type: list
  elements: str
configurations:
  description: The wanted rules of each listed bucket, as the API takes them.
  returned: always
  type: dict
"""

WEBHOOK_ID = re.compile(r"^[A-Za-z0-9_]+$")
OTHER_TARGETS = ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration")

# One rule: (webhook id, sorted events, prefix, suffix).
Rule = tuple[str, tuple[str, ...], str, str]


def webhook_arn(webhook: str) -> str:
    return f"arn:minio:sqs::{webhook}:webhook"


def wanted_rules(notifications: list[dict]) -> dict[str, list[Rule]]:
    """The rules of each bucket, sorted and without duplicates."""
    by_bucket: dict[str, set[Rule]] = {}
    for entry in notifications:
        rules = by_bucket.setdefault(entry["bucket"], set())
        events = tuple(sorted(set(entry["events"])))
        for prefix in entry["prefixes"] or [""]:
            rules.add((entry["webhook"], events, prefix, entry["suffix"]))
    return {bucket: sorted(rules) for bucket, rules in by_bucket.items()}


def current_rules(config: dict) -> list[Rule]:
    """A GetBucketNotificationConfiguration answer as rules, the ARN's region and the ids left out."""
    rules: set[Rule] = set()
    for queue in config.get("QueueConfigurations") or []:
        arn = queue.get("QueueArn", "")
        parts = arn.split(":")
        # arn:minio:sqs:<region>:<id>:webhook; any other target keeps its whole ARN, which
        # never equals a wanted rule's webhook id, so the configuration is replaced.
        is_webhook = len(parts) == 6 and parts[:3] == ["arn", "minio", "sqs"] and parts[5] == "webhook"
        webhook = parts[4] if is_webhook else arn
        prefix = suffix = ""
        for rule in ((queue.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []:
            name = str(rule.get("Name", "")).lower()
            if name == "prefix":
                prefix = rule.get("Value", "")
            elif name == "suffix":
                suffix = rule.get("Value", "")
        rules.add((webhook, tuple(sorted(set(queue.get("Events") or []))), prefix, suffix))
    for key in OTHER_TARGETS:
        if config.get(key):
            rules.add((f"<{key}>", (), "", ""))
    return sorted(rules)


def api_configuration(rules: list[Rule]) -> dict:
    """Rules as a NotificationConfiguration; MinIO wants the filter names in lower case."""
    queues = []
    for number, (webhook, events, prefix, suffix) in enumerate(rules, start=1):
        queue: dict = {"Id": f"{webhook}-{number}", "QueueArn": webhook_arn(webhook), "Events": list(events)}
        filters = [
            {"Name": name, "Value": value}
            for name, value in (("prefix", prefix), ("suffix", suffix))
            if value
        ]
        if filters:
            queue["Filter"] = {"Key": {"FilterRules": filters}}
        queues.append(queue)
    return {"QueueConfigurations": queues} if queues else {}


def readable(rules: list[Rule]) -> list[dict]:
    return [
        {"webhook": webhook, "events": list(events), "prefix": prefix, "suffix": suffix}
        for webhook, events, prefix, suffix in rules
    ]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "endpoint_url": {"type": "str", "required": True},
            "access_key": {"type": "str", "required": True, "no_log": False},
            "secret_key": {"type": "str", "required": True, "no_log": True},
            "region": {"type": "str", "default": "us-east-1"},
            "notifications": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "bucket": {"type": "str", "required": True},
                    "webhook": {"type": "str", "required": True},
                    "prefixes": {"type": "list", "elements": "str", "default": []},
                    "suffix": {"type": "str", "default": ""},
                    "events": {"type": "list", "elements": "str", "default": ["s3:ObjectCreated:*"]},
                },
            },
        },
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"))
    params = module.params
    for entry in params["notifications"]:
        if not WEBHOOK_ID.match(entry["webhook"]):
            module.fail_json(
                msg=f"webhook {entry['webhook']!r} is not a MinIO target id (letters, digits, _)."
            )
        if not entry["events"]:
            module.fail_json(msg=f"the notification of bucket {entry['bucket']} names no events")

    client = boto3.client(
        "s3",
        endpoint_url=params["endpoint_url"],
        aws_access_key_id=params["access_key"],
        aws_secret_access_key=params["secret_key"],
        region_name=params["region"],
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5}),
    )
    wanted = wanted_rules(params["notifications"])
    changed_buckets = []
    before: dict[str, list[dict]] = {}
    after: dict[str, list[dict]] = {}
    for bucket, rules in sorted(wanted.items()):
        try:
            current = current_rules(client.get_bucket_notification_configuration(Bucket=bucket))
        except ClientError as error:
            if not (module.check_mode and error.response.get("Error", {}).get("Code") == "NoSuchBucket"):
                module.fail_json(msg=f"cannot read the notifications of bucket {bucket}: {error}")
            module.warn(f"bucket {bucket} does not exist yet; a real run creates it first")
            current = []
        except BotoCoreError as error:
            module.fail_json(msg=f"cannot read the notifications of bucket {bucket}: {error}")
        if current == rules:
            continue
        changed_buckets.append(bucket)
        before[bucket] = readable(current)
        after[bucket] = readable(rules)
        if module.check_mode:
            continue
        try:
            client.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=api_configuration(rules)
            )
        except (BotoCoreError, ClientError) as error:
            module.fail_json(
                msg=f"cannot set the notification configuration of bucket {bucket}: {error}",
                changed_buckets=changed_buckets[:-1],
            )

    module.exit_json(
        changed=bool(changed_buckets),
        changed_buckets=changed_buckets,
        configurations={bucket: api_configuration(rules) for bucket, rules in wanted.items()},
        diff={"before": before, "after": after},
    )


if __name__ == "__main__":
    main()
