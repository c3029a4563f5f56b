"""The registry checks after an experiment, on a local store."""

from __future__ import annotations

import json

import pytest

from r3e_testbed.experiments.integrity import artifacts_intact, promotion_records, promotions_sound
from r3e_testbed.pipeline.registry import DirectoryStore, promote, register_version


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path)


def version(store, name="v-1"):
    manifest, _ = register_version(store, name, {"In": {"baseline": b"model-in"}}, {"series": {}})
    return manifest


def test_intact_versions_pass_and_a_changed_file_fails_naming_it(store):
    version(store, "v-1")
    version(store, "v-2")
    assert artifacts_intact(store)["passed"]
    store.put("iot/versions/v-2/In/baseline.json", b"tampered")
    check = artifacts_intact(store)
    assert not check["passed"]
    assert "v-2: In/baseline does not match its SHA-256" in check["detail"]


def test_a_missing_file_fails(store):
    version(store)
    (store.root / "iot/versions/v-1/In/baseline.json").unlink()
    assert "missing" in artifacts_intact(store)["detail"]


def test_one_new_promotion_of_a_complete_version_is_sound(store):
    before = promotion_records(store)
    promote(store, version(store), {"In": "baseline"}, {}, {"promote": True})
    assert promotions_sound(store, before)["passed"]


def test_the_same_version_promoted_twice_is_reported(store):
    manifest = version(store)
    promote(store, manifest, {"In": "baseline"}, {}, {})
    promote(store, manifest, {"In": "baseline"}, {}, {})
    check = promotions_sound(store, [])
    assert not check["passed"] and "v-1 promoted twice" in check["detail"]


def test_a_pointer_to_a_version_without_manifest_is_reported(store):
    version(store)
    store.put(
        "iot/production.json",
        json.dumps({"format": "r3e-production-pointer/1", "version": "v-9", "series": {}}).encode(),
    )
    check = promotions_sound(store, [])
    assert not check["passed"] and "v-9, which has no manifest" in check["detail"]
