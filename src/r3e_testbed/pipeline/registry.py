"""The model registry in the object store: versions, the production pointer, promotions.

Layout (inside the models bucket)::

    iot/versions/<version>/<series>/<kind>.json   a fitted model (``train.model_to_bytes``)
    iot/versions/<version>/manifest.json          written last: the version exists once it does
    iot/forecasts/<version>/<series>.csv          the 30-day forecast published at promotion
    iot/promotions/<time>-<version>.json          one record per promotion (history)
    iot/production.json                           the production pointer

Writes are versioned or atomic: a version's files are written under its own prefix and its
manifest last, with the SHA-256 of every file, so a reader never trusts a half-written version;
a version that already has a manifest is never written again. The production pointer is one
small object replaced by a single PUT, which S3 stores atomically: a reader sees the old pointer
or the new one, never a mix.

The version id is derived from the data fingerprint and the code version, so re-running a
training on the same data with the same code finds its version already registered.

Storage goes through :class:`r3e_testbed.storage.ObjectStore` (s3fs on the testbed, a local
folder in tests).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from r3e_testbed.pipeline.schema import LOCATIONS
from r3e_testbed.pipeline.train import MODEL_KINDS, model_from_bytes
from r3e_testbed.storage import ObjectStore

ROOT = "iot"
PRODUCTION_KEY = f"{ROOT}/production.json"
MANIFEST_FORMAT = "r3e-model-version/1"
POINTER_FORMAT = "r3e-production-pointer/1"


class RegistryError(RuntimeError):
    """The registry's content is missing, inconsistent or corrupt."""


# --- names ---------------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_version() -> str:
    """The package version plus a hash of the pipeline's source files: changes with the code."""
    from r3e_testbed import __version__

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:10]}"


def version_id(data_sha256: str, code: str) -> str:
    """The version a training on this data with this code registers: ``v-<data>-<code>``."""
    if len(data_sha256) < 12 or any(c not in "0123456789abcdef" for c in data_sha256):
        raise ValueError(f"data fingerprint must be a hex SHA-256, got {data_sha256!r}")
    return f"v-{data_sha256[:16]}-{hashlib.sha256(code.encode()).hexdigest()[:8]}"


def version_prefix(version: str) -> str:
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"bad version id {version!r}")
    return f"{ROOT}/versions/{version}/"


def manifest_key(version: str) -> str:
    return version_prefix(version) + "manifest.json"


def model_key(version: str, series: str, kind: str) -> str:
    if series not in LOCATIONS:
        raise ValueError(f"unknown series {series!r}; expected one of {list(LOCATIONS)}")
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(MODEL_KINDS)}")
    return version_prefix(version) + f"{series}/{kind}.json"


def forecast_key(version: str, series: str) -> str:
    version_prefix(version)
    return f"{ROOT}/forecasts/{version}/{series}.csv"


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dump(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8")


# --- versions ------------------------------------------------------------------------------------


def register_version(
    store: ObjectStore,
    version: str,
    models: Mapping[str, Mapping[str, bytes]],
    manifest: Mapping[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Write a model version: every model, then the manifest. Returns ``(manifest, created)``.

    ``models`` maps series -> kind -> model bytes; ``manifest`` is the caller's description
    (data fingerprint, metrics, ...), to which the model keys and checksums are added. If the
    version already has a manifest nothing is written and the stored manifest is returned with
    ``created=False``: a re-run never overwrites a registered version.
    """
    existing = read_manifest(store, version, missing_ok=True)
    if existing is not None:
        return existing, False
    if not models:
        raise ValueError("a model version needs at least one series")
    files: dict[str, dict[str, Any]] = {}
    for series, by_kind in sorted(models.items()):
        for kind, data in sorted(by_kind.items()):
            if not isinstance(data, bytes | bytearray) or not data:
                raise ValueError(f"model {series}/{kind} is empty or not bytes")
            key = model_key(version, series, kind)
            store.put(key, bytes(data))
            files.setdefault(series, {})[kind] = {"key": key, "sha256": sha256_hex(bytes(data))}
    document = {
        **dict(manifest),
        "format": MANIFEST_FORMAT,
        "version": version,
        "registered_at": _utc_now(),
        "files": files,
    }
    store.put(manifest_key(version), _dump(document))
    return document, True


def read_manifest(store: ObjectStore, version: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
    """The manifest of ``version``; ``RegistryError`` if missing (unless ``missing_ok``) or corrupt."""
    try:
        data = store.get(manifest_key(version))
    except KeyError:
        if missing_ok:
            return None
        raise RegistryError(f"model version {version!r} is not registered (no manifest)") from None
    return _tagged_document(data, MANIFEST_FORMAT, f"manifest of {version!r}")


def _tagged_document(data: bytes, format_tag: str, what: str) -> dict[str, Any]:
    """A registry JSON document carrying ``format_tag``; ``RegistryError`` naming ``what`` if not."""
    try:
        document = json.loads(data)
    except json.JSONDecodeError as error:
        raise RegistryError(f"{what} is not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != format_tag:
        raise RegistryError(f"{what} has no {format_tag!r} format tag")
    return document


def load_model(store: ObjectStore, key: str, kind: str, sha256: str) -> Any:
    """The model at ``key``, after checking its bytes against the recorded SHA-256."""
    try:
        data = store.get(key)
    except KeyError:
        raise RegistryError(f"model file {key} is missing") from None
    if sha256_hex(data) != sha256:
        raise RegistryError(f"model file {key} does not match its recorded SHA-256 (corrupt or replaced)")
    try:
        return model_from_bytes(kind, data)
    except ValueError as error:
        raise RegistryError(f"model file {key} cannot be loaded as {kind}: {error}") from error


def version_models(store: ObjectStore, manifest: Mapping[str, Any], kind_of: Mapping[str, str]) -> dict:
    """``{series: (kind, model)}`` of a version, one chosen kind per series (checked)."""
    loaded = {}
    for series, kind in kind_of.items():
        entry = manifest.get("files", {}).get(series, {}).get(kind)
        if entry is None:
            raise RegistryError(f"version {manifest.get('version')!r} has no {kind} model for {series}")
        loaded[series] = (kind, load_model(store, entry["key"], kind, entry["sha256"]))
    return loaded


# --- production ------------------------------------------------------------------------------------


def read_production(store: ObjectStore) -> dict[str, Any] | None:
    """The production pointer, or ``None`` before the first promotion."""
    try:
        data = store.get(PRODUCTION_KEY)
    except KeyError:
        return None
    return _tagged_document(data, POINTER_FORMAT, PRODUCTION_KEY)


def production_models(store: ObjectStore, pointer: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """``{series: (kind, model)}`` of the production pointer, every file checked."""
    entries = pointer.get("series")
    if not isinstance(entries, Mapping) or not entries:
        raise RegistryError(f"the production pointer names no series (version {pointer.get('version')!r})")
    loaded = {}
    for series, entry in entries.items():
        try:
            kind, key, sha256 = entry["kind"], entry["key"], entry["sha256"]
        except (KeyError, TypeError) as error:
            raise RegistryError(
                f"the production pointer's entry for {series!r} is malformed: {error!r}"
            ) from None
        loaded[series] = (kind, load_model(store, key, kind, sha256))
    return loaded


def forecast_csv(frame: pd.DataFrame) -> bytes:
    """A forecast frame (``ds``, ``yhat``, ...) as CSV with ISO dates."""
    out = frame.copy()
    out["ds"] = pd.to_datetime(out["ds"]).dt.strftime("%Y-%m-%d")
    buffer = io.StringIO()
    out.to_csv(buffer, index=False, float_format="%.4f")
    return buffer.getvalue().encode("utf-8")


def promote(
    store: ObjectStore,
    manifest: Mapping[str, Any],
    selected: Mapping[str, str],
    forecasts: Mapping[str, str],
    decision: Mapping[str, Any],
) -> dict[str, Any]:
    """Point production at ``manifest``'s version (one model kind per series); returns the pointer.

    The promotion record is written first, the pointer last, by one PUT. Every model and forecast
    named must exist already, so the pointer never names something missing. Retrying a promotion
    that failed between the two writes rewrites its record instead of adding a second one.
    """
    version = manifest["version"]
    if not selected:
        raise RegistryError(f"no series selected to promote from {version!r}")
    series_entries = {}
    for series, kind in sorted(selected.items()):
        entry = manifest.get("files", {}).get(series, {}).get(kind)
        if entry is None:
            raise RegistryError(f"version {version!r} has no {kind} model for {series}")
        if not store.exists(entry["key"]):
            raise RegistryError(f"model file {entry['key']} is missing")
        series_entries[series] = {
            "kind": kind,
            "key": entry["key"],
            "sha256": entry["sha256"],
            "metrics": manifest.get("series", {}).get(series, {}).get("metrics", {}).get(kind, {}),
        }
    for key in forecasts.values():
        if not store.exists(key):
            raise RegistryError(f"forecast {key} is missing")
    now = _utc_now()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")  # the record's name: never reused
    pointer = {
        "format": POINTER_FORMAT,
        "version": version,
        "promoted_at": now,
        "code_version": manifest.get("code_version"),
        "data": manifest.get("data", {}),
        "series": series_entries,
        "forecasts": dict(forecasts),
        "decision": dict(decision),
    }
    store.put(_promotion_record_key(store, version, stamp), _dump(pointer))
    store.put(PRODUCTION_KEY, _dump(pointer))
    return pointer


def _promotion_record_key(store: ObjectStore, version: str, stamp: str) -> str:
    """Where this promotion's record goes: a new name, unless the newest record names this version
    while production does not, i.e. an earlier try wrote the record and died before the pointer.
    That try is finished, not recorded twice."""
    records = store.keys(f"{ROOT}/promotions/")
    if records and records[-1].endswith(f"-{version}.json"):
        current = read_production(store)
        if current is None or current.get("version") != version:
            return records[-1]
    return f"{ROOT}/promotions/{stamp}-{version}.json"
