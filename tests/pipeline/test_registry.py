"""Model versions, the production pointer and promotions (r3e_testbed.pipeline.registry)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline import registry
from r3e_testbed.pipeline.registry import RegistryError
from r3e_testbed.pipeline.train import model_to_bytes, predict_model, train_baseline
from r3e_testbed.storage import DirectoryStore

SHA = "ab" * 32


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "models")


def baseline_bytes(level: float) -> bytes:
    ds = pd.date_range("2018-07-28", periods=40, freq="D")
    return model_to_bytes(
        "baseline", train_baseline(pd.DataFrame({"ds": ds, "y": level + 0.01 * np.arange(40)}))
    )


def register(store, version="v-1", level=30.0) -> dict:
    manifest, created = registry.register_version(
        store,
        version,
        {"In": {"baseline": baseline_bytes(level)}, "Out": {"baseline": baseline_bytes(level + 5)}},
        {"series": {"In": {"selected": "baseline"}, "Out": {"selected": "baseline"}}},
    )
    assert created
    return manifest


# --- the directory store -------------------------------------------------------------------------


def test_directory_store_round_trip_and_missing_keys(store):
    store.put("a/b.txt", b"one")
    assert store.get("a/b.txt") == b"one"
    assert store.exists("a/b.txt") and not store.exists("a/c.txt")
    assert store.keys("a/") == ["a/b.txt"]
    etag = store.etag("a/b.txt")
    store.put("a/b.txt", b"two")
    assert store.etag("a/b.txt") != etag
    assert store.etag("nope") is None
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError), store.open("nope"):
        pass
    with store.open("a/b.txt") as handle:
        assert handle.read(2) == b"tw"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b"])
def test_directory_store_refuses_keys_outside_its_folder(store, key):
    with pytest.raises(ValueError, match="bad object key"):
        store.put(key, b"x")


# --- names ---------------------------------------------------------------------------------------


def test_version_id_depends_on_data_and_code():
    first = registry.version_id(SHA, "0.1.0+abc")
    assert first.startswith("v-abababababababab-")
    assert first == registry.version_id(SHA, "0.1.0+abc")
    assert first != registry.version_id(SHA, "0.1.0+abd")
    assert first != registry.version_id("cd" * 32, "0.1.0+abc")


@pytest.mark.parametrize("fingerprint", ["", "xyz" * 10, "ABCDEF0123456789"])
def test_version_id_refuses_a_non_hex_fingerprint(fingerprint):
    with pytest.raises(ValueError, match="hex SHA-256"):
        registry.version_id(fingerprint, "code")


def test_code_version_names_the_package_version():
    from r3e_testbed import __version__

    assert registry.code_version().startswith(f"{__version__}+")


def test_keys_refuse_unknown_series_kinds_and_bad_versions():
    assert registry.model_key("v-1", "In", "prophet") == "iot/versions/v-1/In/prophet.json"
    with pytest.raises(ValueError, match="unknown series"):
        registry.model_key("v-1", "Inside", "prophet")
    with pytest.raises(ValueError, match="unknown model kind"):
        registry.model_key("v-1", "In", "lstm")
    with pytest.raises(ValueError, match="bad version"):
        registry.manifest_key("../x")


# --- versions ------------------------------------------------------------------------------------


def test_register_writes_models_then_manifest_with_checksums(store):
    manifest = register(store)
    entry = manifest["files"]["In"]["baseline"]
    assert entry["key"] == "iot/versions/v-1/In/baseline.json"
    assert entry["sha256"] == registry.sha256_hex(store.get(entry["key"]))
    assert registry.read_manifest(store, "v-1") == manifest


def test_registering_a_version_again_writes_nothing(store):
    first = register(store)
    before = {k: store.get(k) for k in store.keys("iot/")}
    again, created = registry.register_version(store, "v-1", {"In": {"baseline": baseline_bytes(99)}}, {})
    assert created is False
    assert again == first
    assert {k: store.get(k) for k in store.keys("iot/")} == before


def test_register_refuses_empty_models_before_writing(store):
    with pytest.raises(ValueError, match="empty"):
        registry.register_version(store, "v-2", {"In": {"baseline": b""}}, {})
    assert registry.read_manifest(store, "v-2", missing_ok=True) is None


def test_read_manifest_names_what_is_wrong(store):
    with pytest.raises(RegistryError, match="not registered"):
        registry.read_manifest(store, "v-9")
    store.put(registry.manifest_key("v-9"), b"{not json")
    with pytest.raises(RegistryError, match="not JSON"):
        registry.read_manifest(store, "v-9")
    store.put(registry.manifest_key("v-9"), b"{}")
    with pytest.raises(RegistryError, match="format tag"):
        registry.read_manifest(store, "v-9")


def test_load_model_checks_the_checksum(store):
    manifest = register(store)
    entry = manifest["files"]["In"]["baseline"]
    model = registry.load_model(store, entry["key"], "baseline", entry["sha256"])
    assert len(predict_model("baseline", model, ["2018-09-10"])) == 1
    store.put(entry["key"], baseline_bytes(10.0))
    with pytest.raises(RegistryError, match="does not match its recorded SHA-256"):
        registry.load_model(store, entry["key"], "baseline", entry["sha256"])
    with pytest.raises(RegistryError, match="missing"):
        registry.load_model(store, "iot/versions/v-1/Out/prophet.json", "prophet", SHA)


def test_version_models_refuses_a_kind_the_version_lacks(store):
    manifest = register(store)
    assert set(registry.version_models(store, manifest, {"In": "baseline"})) == {"In"}
    with pytest.raises(RegistryError, match="no prophet model for In"):
        registry.version_models(store, manifest, {"In": "prophet"})


# --- production ----------------------------------------------------------------------------------


def test_no_production_before_the_first_promotion(store):
    assert registry.read_production(store) is None


def test_promote_writes_a_record_then_the_pointer(store):
    manifest = register(store)
    store.put(registry.forecast_key("v-1", "In"), b"ds,yhat\n")
    pointer = registry.promote(
        store, manifest, {"In": "baseline", "Out": "baseline"}, {"In": registry.forecast_key("v-1", "In")}, {}
    )
    assert registry.read_production(store) == pointer
    assert pointer["version"] == "v-1"
    assert pointer["series"]["Out"]["sha256"] == manifest["files"]["Out"]["baseline"]["sha256"]
    records = store.keys("iot/promotions/")
    assert len(records) == 1 and json.loads(store.get(records[0])) == pointer
    models = registry.production_models(store, pointer)
    assert {s: kind for s, (kind, _) in models.items()} == {"In": "baseline", "Out": "baseline"}


def test_a_failed_promotion_leaves_production_as_it_was(store):
    first = register(store, "v-1")
    registry.promote(store, first, {"In": "baseline"}, {}, {})
    before = store.get(registry.PRODUCTION_KEY)
    second = register(store, "v-2", level=40.0)
    with pytest.raises(RegistryError, match=r"forecast \S+ is missing"):
        registry.promote(store, second, {"In": "baseline"}, {"In": "iot/forecasts/v-2/In.csv"}, {})
    with pytest.raises(RegistryError, match="no prophet model"):
        registry.promote(store, second, {"In": "prophet"}, {}, {})
    assert store.get(registry.PRODUCTION_KEY) == before
    assert len(store.keys("iot/promotions/")) == 1


def test_a_corrupt_pointer_is_reported(store):
    store.put(registry.PRODUCTION_KEY, b"[]")
    with pytest.raises(RegistryError, match="format tag"):
        registry.read_production(store)


def test_forecast_csv_has_iso_dates():
    frame = pd.DataFrame({"ds": pd.to_datetime(["2018-12-09"]), "yhat": [31.123456]})
    assert registry.forecast_csv(frame) == b"ds,yhat\n2018-12-09,31.1235\n"


def test_a_pointer_without_usable_series_is_reported(store):
    with pytest.raises(RegistryError, match="names no series"):
        registry.production_models(store, {"version": "v-1", "series": {}})
    with pytest.raises(RegistryError, match="entry for 'In' is malformed"):
        registry.production_models(store, {"version": "v-1", "series": {"In": {"kind": "baseline"}}})


def test_promote_needs_a_series(store):
    with pytest.raises(RegistryError, match="no series selected"):
        registry.promote(store, register(store), {}, {}, {})
    assert registry.read_production(store) is None


def test_a_retried_promotion_that_died_before_the_pointer_is_recorded_once(store, monkeypatch):
    first, second = register(store), register(store, version="v-second")
    registry.promote(store, first, {"In": "baseline"}, {}, {})
    real_put = store.put

    def dies_at_the_pointer(key, data):
        if key == registry.PRODUCTION_KEY:
            raise OSError("the store went away")
        real_put(key, data)

    monkeypatch.setattr(store, "put", dies_at_the_pointer)
    with pytest.raises(OSError):
        registry.promote(store, second, {"In": "baseline"}, {}, {})
    monkeypatch.setattr(store, "put", real_put)
    registry.promote(store, second, {"In": "baseline"}, {}, {})  # the task's retry
    records = store.keys("iot/promotions/")
    assert len(records) == 2, "one record per promotion: v-1's, and v-second's written once"
    assert records[0].endswith("-v-1.json") and records[1].endswith("-v-second.json")
    assert registry.read_production(store)["version"] == "v-second"


def test_promoting_twice_keeps_both_records(store):
    manifest = register(store)
    registry.promote(store, manifest, {"In": "baseline"}, {}, {})
    registry.promote(store, manifest, {"In": "baseline"}, {}, {})
    assert len(store.keys("iot/promotions/")) == 2
