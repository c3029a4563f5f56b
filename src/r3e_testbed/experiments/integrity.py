"""Integrity of the model registry after an experiment: nothing lost, nothing partial, nothing twice.

Each experiment judges the promotions made during it (the records that were not there when it
started), never the registry's whole history: a long-lived registry holds earlier promotions
that are no business of this experiment.

A promotion record is ``iot/promotions/<time>-<version>.json`` (``registry.promote``), written
just before the production pointer, so the records in name order are production's history.
``iot_deploy`` never promotes the version already in production (and runs one at a time), so:

- a *re-promotion*, a version promoted again after another one (A, B, A: newer data, then the
  older data's version back), is a promotion like any other;
- a *duplicate* is a record naming the same version as the record just before it: production
  already was that version, so the record is a second write of one promotion (a retried or
  doubled switch) or a promotion around the deploy rule. The record before may predate the
  experiment: a duplicate of the promotion in production when it started counts too.

Works on any ``ObjectStore`` (s3fs on the testbed, ``DirectoryStore`` in tests).
"""

from __future__ import annotations

import json
import re
from typing import Any

from r3e_testbed.pipeline.registry import (
    ROOT,
    ObjectStore,
    RegistryError,
    read_manifest,
    read_production,
    sha256_hex,
)

from .results import Check

PROMOTIONS = f"{ROOT}/promotions/"
VERSIONS = f"{ROOT}/versions/"
RECORD_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z-(?P<version>[^/]+)\.json")  # registry.promote's names


def promotion_records(store: ObjectStore) -> list[str]:
    """Every promotion record, oldest first (their names start with the promotion's time)."""
    return sorted(key for key in store.keys(PROMOTIONS) if key.endswith(".json"))


def recorded_version(key: str) -> str | None:
    """The version a record's name gives (``<time>-<version>.json``); ``None`` for another name.

    Read from the name, so judging a promotion against the history needs no read of old records.
    """
    match = RECORD_NAME.fullmatch(key.removeprefix(PROMOTIONS))
    return match["version"] if match else None


def registered_versions(store: ObjectStore) -> list[str]:
    """Versions with a manifest (a version folder without one is a partial write)."""
    return sorted(
        key[len(VERSIONS) :].split("/")[0] for key in store.keys(VERSIONS) if key.endswith("/manifest.json")
    )


def artifacts_intact(store: ObjectStore) -> Check:
    """Every registered version's files are present and match their recorded SHA-256."""
    problems: list[str] = []
    versions = registered_versions(store)
    for version in versions:
        try:
            manifest = read_manifest(store, version)
        except RegistryError as error:
            problems.append(str(error))
            continue
        for series, kinds in manifest.get("files", {}).items():
            for kind, entry in kinds.items():
                try:
                    data = store.get(entry["key"])
                except KeyError:
                    problems.append(f"{version}: {series}/{kind} missing ({entry['key']})")
                    continue
                if sha256_hex(data) != entry["sha256"]:
                    problems.append(f"{version}: {series}/{kind} does not match its SHA-256")
    detail = "; ".join(problems) if problems else f"{len(versions)} versions, every file present and checked"
    return Check(name="artifacts intact", passed=not problems, detail=detail)


def promotions_sound(store: ObjectStore, before: list[str]) -> Check:
    """The promotions made since ``before`` (the records then) each name a complete version and
    none duplicates the promotion before it (see the module's docstring)."""
    records, earlier = promotion_records(store), set(before)
    problems: list[str] = []
    new = re_promotions = 0
    for index, key in enumerate(records):
        if key in earlier:
            continue
        new += 1
        try:
            version = str(json.loads(store.get(key))["version"])
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{key}: unreadable ({error!r})")
            continue
        named = recorded_version(key)
        if named is not None and named != version:
            problems.append(f"{key} records {version}, not the version its name gives")
        older = [recorded_version(record) or "" for record in records[:index]]
        if older and older[-1] == version:
            problems.append(
                f"{version} promoted twice in a row: {key.removeprefix(PROMOTIONS)} repeats "
                f"{records[index - 1].removeprefix(PROMOTIONS)} (a duplicate record)"
            )
        elif version in older:
            re_promotions += 1
        if read_manifest(store, version, missing_ok=True) is None:
            problems.append(f"{version} promoted without a manifest (partial version)")
    pointer = _pointer(store, problems)
    if pointer is not None and read_manifest(store, pointer["version"], missing_ok=True) is None:
        problems.append(f"production names {pointer['version']}, which has no manifest")
    again = f", {re_promotions} of an earlier version again" if re_promotions else ""
    detail = "; ".join(problems) if problems else f"{new} new promotion(s){again}, each of a complete version"
    return Check(name="no partial or duplicate promotion", passed=not problems, detail=detail)


def _pointer(store: ObjectStore, problems: list[str]) -> dict[str, Any] | None:
    try:
        return read_production(store)
    except RegistryError as error:
        problems.append(str(error))
        return None
