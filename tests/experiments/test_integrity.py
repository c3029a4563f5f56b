"""The registry checks after an experiment, on a local store."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from r3e_testbed.experiments.integrity import (
    artifacts_intact,
    promotion_records,
    promotions_sound,
    recorded_version,
)
from r3e_testbed.pipeline.registry import promote, register_version
from r3e_testbed.storage import DirectoryStore


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
    (store.folder / "iot/versions/v-1/In/baseline.json").unlink()
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


def promote_in_turn(store, *names):
    """Promote each named version in this order (registering it first if needed)."""
    for name in names:
        manifest = version(store, name)
        promote(store, manifest, {"In": "baseline"}, {}, {"promote": True})


@pytest.fixture
def re_promoted(store):
    """A long-lived registry: A, then B (newer data), then A again (the older data came back)."""
    promote_in_turn(store, "v-a", "v-b", "v-a")
    return store


def test_a_registry_with_a_re_promotion_in_its_past_passes_a_scenario_that_promotes_nothing(re_promoted):
    before = promotion_records(re_promoted)
    assert [recorded_version(key) for key in before] == ["v-a", "v-b", "v-a"]
    check = promotions_sound(re_promoted, before)
    assert check["passed"], check["detail"]
    assert check["detail"].startswith("0 new promotion(s)")


def test_a_re_promotion_is_no_duplicate_even_when_judging_the_whole_history(re_promoted):
    check = promotions_sound(re_promoted, [])
    assert check["passed"], check["detail"]
    assert "3 new promotion(s), 1 of an earlier version again" in check["detail"]


def test_a_re_promotion_during_the_scenario_passes(store):
    promote_in_turn(store, "v-a", "v-b")
    before = promotion_records(store)
    promote_in_turn(store, "v-a")
    check = promotions_sound(store, before)
    assert check["passed"], check["detail"]
    assert "1 new promotion(s), 1 of an earlier version again" in check["detail"]


def test_a_second_record_of_the_promotion_in_production_is_a_duplicate(re_promoted):
    before = promotion_records(re_promoted)
    promote_in_turn(re_promoted, "v-a")  # v-a already is production: nothing was promoted
    check = promotions_sound(re_promoted, before)
    assert not check["passed"]
    assert "v-a promoted twice in a row" in check["detail"] and "duplicate record" in check["detail"]
    assert before[-1].removeprefix("iot/promotions/") in check["detail"], "names the record it repeats"


def a_moment_later(record: str) -> str:
    """The name ``registry.promote`` gives the same promotion written again a second later."""
    stamp, version_name = record.removeprefix("iot/promotions/").split("-", 1)
    then = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ") + dt.timedelta(seconds=1)
    return f"iot/promotions/{then:%Y%m%dT%H%M%S.%fZ}-{version_name}"


def test_one_promotion_written_twice_during_the_scenario_is_a_duplicate(store):
    promote_in_turn(store, "v-a")
    before = promotion_records(store)
    promote_in_turn(store, "v-b")
    (first,) = set(promotion_records(store)) - set(before)
    again = a_moment_later(first)  # the same switch written twice, as a retried task would
    store.put(again, store.get(first))
    assert promotion_records(store)[-2:] == [first, again]
    check = promotions_sound(store, before)
    assert not check["passed"] and "v-b promoted twice in a row" in check["detail"]


def test_an_old_duplicate_is_not_the_fault_of_a_later_scenario(store):
    promote_in_turn(store, "v-a", "v-a", "v-b")
    assert not promotions_sound(store, [])["passed"], "the history holds a duplicate"
    before = promotion_records(store)
    promote_in_turn(store, "v-a")
    check = promotions_sound(store, before)
    assert check["passed"], check["detail"]


def test_a_record_that_names_another_version_than_its_name_is_reported(store):
    promote_in_turn(store, "v-a")
    before = promotion_records(store)
    promote_in_turn(store, "v-b")
    (record,) = set(promotion_records(store)) - set(before)
    document = json.loads(store.get(record))
    store.put(record, json.dumps({**document, "version": "v-a"}).encode())
    check = promotions_sound(store, before)
    assert not check["passed"] and "not the version its name gives" in check["detail"]


def test_a_pointer_to_a_version_without_manifest_is_reported(store):
    version(store)
    store.put(
        "iot/production.json",
        json.dumps({"format": "r3e-production-pointer/1", "version": "v-9", "series": {}}).encode(),
    )
    check = promotions_sound(store, [])
    assert not check["passed"] and "v-9, which has no manifest" in check["detail"]
