"""Integrity of the model registry after an experiment: nothing lost, nothing partial, nothing twice.

Works on any ``ObjectStore`` (``registry.S3Store`` on the testbed, ``DirectoryStore`` in tests).
"""

from __future__ import annotations

import json
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


def promotion_records(store: ObjectStore) -> list[str]:
    return sorted(key for key in store.keys(PROMOTIONS) if key.endswith(".json"))


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
    """Promotions made since ``before`` (the records then) each name a complete version, once."""
    new = [key for key in promotion_records(store) if key not in set(before)]
    problems: list[str] = []
    seen: set[str] = set()
    for key in new:
        try:
            record = json.loads(store.get(key))
        except (KeyError, ValueError) as error:
            problems.append(f"{key}: unreadable ({error})")
            continue
        version = record.get("version", "?")
        if version in seen:
            problems.append(f"{version} promoted twice")
        seen.add(version)
        if read_manifest(store, version, missing_ok=True) is None:
            problems.append(f"{version} promoted without a manifest (partial version)")
    pointer = _pointer(store, problems)
    if pointer is not None and read_manifest(store, pointer["version"], missing_ok=True) is None:
        problems.append(f"production names {pointer['version']}, which has no manifest")
    detail = "; ".join(problems) if problems else f"{len(new)} new promotion(s), each of a complete version"
    return Check(name="no partial or duplicate promotion", passed=not problems, detail=detail)


def _pointer(store: ObjectStore, problems: list[str]) -> dict[str, Any] | None:
    try:
        return read_production(store)
    except RegistryError as error:
        problems.append(str(error))
        return None
