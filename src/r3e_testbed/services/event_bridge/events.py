"""Object events: what the bridge delivers, and the parsers of what the object stores report.

- SeaweedFS: the filer's metadata log (``SubscribeMetadataResponse`` messages, as protobuf JSON,
  the stream ``weed filer.meta.tail`` prints): :class:`FilerStream` splits the stream into
  messages, :func:`parse_filer_event` reads one.
- MinIO (and AWS-style S3): a bucket notification webhook body, :func:`parse_minio`.

Only object creations and replacements count; deletes, directories (S3 "folder" markers
included), multipart-upload parts and SeaweedFS' own folders are :class:`Ignored` with a reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: The filer keeps S3 buckets under this folder.
SEAWEEDFS_BUCKETS_DIR = "/buckets"
#: Folder inside a bucket where SeaweedFS keeps multipart-upload parts until they are combined.
SEAWEEDFS_UPLOADS_DIR = ".uploads"
#: Extended attribute holding the S3 ETag (base64 in the message, like every bytes field).
SEAWEEDFS_ETAG_ATTRIBUTE = "Seaweed-X-Amz-ETag"


class PayloadError(ValueError):
    """A message that is not a notification of the expected kind; the message says why."""


@dataclass(frozen=True)
class ObjectEvent:
    """An object was created or replaced: what the asset event's extra carries."""

    bucket: str
    key: str
    etag: str
    size: int
    event_type: str
    source: str


@dataclass(frozen=True)
class Ignored:
    """A well-formed notification that is not an object create/update (a delete, a folder, ...)."""

    reason: str
    path: str


def counts_as_object(key: str) -> bool:
    """Whether a key of a bucket listing is an object the bridge delivers (not a folder marker,
    not a multipart part)."""
    return bool(key) and not key.endswith("/") and key.split("/", 1)[0] != SEAWEEDFS_UPLOADS_DIR


def _field(obj: Any, name: str, kind: type | tuple[type, ...], where: str, *, required: bool = True) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else None
    if value is None:
        if required:
            raise PayloadError(f"{where}{name} is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PayloadError(f"{where}{name} has the wrong type ({type(value).__name__})")
    return value


def _size(value: Any, where: str) -> int:
    """A protobuf int64: JSON gives it as a string, or leaves it out when it is zero."""
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PayloadError(f"{where} is not a non-negative integer")


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise PayloadError(f"{where} is not base64: {error}") from None


def _seaweedfs_etag(entry: dict[str, Any], where: str) -> str:
    """The ETag S3 reports for the entry (measured equal to HEAD's for plain, multipart, copy)."""
    extended = _field(entry, "extended", dict, where, required=False) or {}
    encoded = extended.get(SEAWEEDFS_ETAG_ATTRIBUTE)
    if isinstance(encoded, str) and encoded:
        raw = _b64(encoded, f"{where}extended.{SEAWEEDFS_ETAG_ATTRIBUTE}")
        try:
            return raw.decode("ascii").strip('"')
        except UnicodeDecodeError:
            raise PayloadError(f"{where}extended.{SEAWEEDFS_ETAG_ATTRIBUTE} is not ASCII") from None
    attributes = _field(entry, "attributes", dict, where, required=False) or {}
    md5 = attributes.get("md5")
    if isinstance(md5, str) and md5:
        # Files written through the filer rather than S3 have no S3 ETag, only the MD5.
        return _b64(md5, f"{where}attributes.md5").hex()
    # Neither: a stable stand-in, so that a replayed event still dedupes and a rewrite does not.
    mtime = attributes.get("mtime") or 0
    return f"mtime-{mtime}-{_size(attributes.get('fileSize'), f'{where}attributes.fileSize')}"


def parse_filer_event(message: Any) -> tuple[int, ObjectEvent | Ignored]:
    """One message of the filer's metadata log: its ``tsNs`` and what it means for the bridge."""
    if not isinstance(message, dict):
        raise PayloadError("the message is not a JSON object")
    raw_ts = _field(message, "tsNs", (str, int), "")
    ts_ns = _size(raw_ts, "tsNs")
    directory = _field(message, "directory", str, "", required=False) or ""
    notification = _field(message, "eventNotification", dict, "")
    old = _field(notification, "oldEntry", dict, "eventNotification.", required=False)
    new = _field(notification, "newEntry", dict, "eventNotification.", required=False)
    if new is None:
        name = old.get("name", "") if old else ""
        return ts_ns, Ignored("delete event", f"{directory}/{name}")
    parent = _field(notification, "newParentPath", str, "eventNotification.", required=False) or directory
    name = _field(new, "name", str, "eventNotification.newEntry.")
    path = f"{parent.rstrip('/')}/{name}"
    if new.get("isDirectory"):
        return ts_ns, Ignored("directory", path)
    prefix = SEAWEEDFS_BUCKETS_DIR + "/"
    if not path.startswith(prefix):
        return ts_ns, Ignored(f"not under {SEAWEEDFS_BUCKETS_DIR}", path)
    bucket, _, key = path[len(prefix) :].partition("/")
    if not key:
        return ts_ns, Ignored("not an object", path)
    if bucket.startswith("."):
        return ts_ns, Ignored("SeaweedFS system folder", path)
    if not counts_as_object(key):
        return ts_ns, Ignored("multipart-upload part", path)
    if old is None:
        event_type = "create"
    elif old.get("name") == name and directory.rstrip("/") == parent.rstrip("/"):
        event_type = "update"
    else:
        event_type = "rename"  # moved onto this key: new content there all the same
    attributes = _field(new, "attributes", dict, "eventNotification.newEntry.", required=False) or {}
    size = _size(attributes.get("fileSize"), "eventNotification.newEntry.attributes.fileSize")
    etag = _seaweedfs_etag(new, "eventNotification.newEntry.")
    return ts_ns, ObjectEvent(bucket, key, etag, size, event_type, "seaweedfs")


class FilerStream:
    """Splits ``weed filer.meta.tail`` output into messages: JSON objects one after another, each
    printed over several lines. Lines outside an object are weed's own words (an error at exit)."""

    def __init__(self) -> None:
        self._decoder = json.JSONDecoder()
        self._pending = ""

    def feed(self, line: str) -> Iterator[dict[str, Any] | str]:
        """The messages (dicts) and weed's own lines (str) that ``line`` completes."""
        if not self._pending and not line.lstrip().startswith("{"):
            if line.strip():
                yield line.strip()
            return
        self._pending += line
        # A message ends with a closing brace at the start of a line: only then try to decode.
        if not line.startswith("}"):
            return
        try:
            message, end = self._decoder.raw_decode(self._pending)
        except ValueError:
            return
        rest, self._pending = self._pending[end:], ""
        yield message
        if rest.strip():
            yield from self.feed(rest)


def parse_minio(payload: Any) -> list[ObjectEvent | Ignored]:
    """One MinIO (or AWS S3 style) bucket notification, with one or more records."""
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    records = _field(payload, "Records", list, "")
    if not records:
        raise PayloadError("Records is empty")
    results: list[ObjectEvent | Ignored] = []
    for index, record in enumerate(records):
        where = f"Records[{index}]."
        if not isinstance(record, dict):
            raise PayloadError(f"Records[{index}] is not an object")
        name = _field(record, "eventName", str, where)
        s3 = _field(record, "s3", dict, where)
        bucket = _field(_field(s3, "bucket", dict, f"{where}s3."), "name", str, f"{where}s3.bucket.")
        obj = _field(s3, "object", dict, f"{where}s3.")
        # Keys arrive URL-encoded ("raw%2Fa+b.csv"), as in AWS's notifications.
        key = urllib.parse.unquote_plus(_field(obj, "key", str, f"{where}s3.object."))
        path = f"{bucket}/{key}"
        if "ObjectCreated:" not in name:
            results.append(Ignored(f"{name} event", path))
            continue
        if not key or key.endswith("/"):
            results.append(Ignored("directory", path))
            continue
        etag = _field(obj, "eTag", str, f"{where}s3.object.").strip('"')
        if not etag:
            raise PayloadError(f"{where}s3.object.eTag is empty")
        size = _size(obj.get("size"), f"{where}s3.object.size")
        results.append(ObjectEvent(bucket, key, etag, size, name, "minio"))
    return results
