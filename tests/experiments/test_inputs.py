"""The bad-input matrix: each corruption does what it says, and each scenario file gets the
verdict it expects from the pipeline's real ingest (experiments.inputs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.experiments.inputs import (
    CORRUPTIONS,
    EXTRA_COLUMN,
    FRACTION_CORRUPTIONS,
    OVERSIZE_FACTOR,
    clean_file,
    corrupt,
    ingest_locally,
    make_input,
)
from r3e_testbed.experiments.scenario import InputSpec, load_scenario
from r3e_testbed.pipeline.generate import GENERATED_TEMP_RANGE
from r3e_testbed.pipeline.schema import (
    DATE_FORMAT,
    MONTH_FIRST_FORMAT,
    RAW_COLUMNS,
    RAW_DATE,
    RAW_TEMP,
    TEMP_MAX,
    TEMP_MIN,
)

SCALE = 0.05
INPUTS = Path(__file__).resolve().parents[2] / "experiments" / "inputs"
SCENARIO_FILES = sorted(INPUTS.glob("*.yml"))
#: The oversized scenario is run at this scale here (times OVERSIZE_FACTOR), to stay fast.
TEST_SCALE_CAP = 0.1


@pytest.fixture(scope="module")
def clean() -> bytes:
    return clean_file(SCALE, 0)


def frame(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def data_lines(data: bytes) -> list[str]:
    return data.decode("utf-8").splitlines()[1:]


def spec(corruption: str, fraction: float = 1.0, seed: int = 0, scale: float = SCALE) -> InputSpec:
    return InputSpec(corruption=corruption, fraction=fraction, seed=seed, scale=scale)


# --- the corruptions -------------------------------------------------------------------------------


def test_make_input_is_the_corruption_of_the_clean_file(clean):
    assert make_input(spec("clean")) == clean
    assert make_input(spec("impossible_values", 0.1, seed=0)) == corrupt(clean, "impossible_values", 0.1, 0)


def test_an_unknown_corruption_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown corruption 'gremlins'; known: .*month_first"):
        make_input(spec("gremlins"))


@pytest.mark.parametrize("name", sorted(FRACTION_CORRUPTIONS - {"month_first"}))
@pytest.mark.parametrize("fraction", [0.0, 0.03, 0.5])
def test_row_corruptions_change_exactly_the_fraction_of_rows(clean, name, fraction):
    before, after = data_lines(clean), data_lines(corrupt(clean, name, fraction, 7))
    assert len(after) == len(before)
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert changed == round(fraction * len(before))


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_the_same_seed_gives_the_same_bytes(clean, name):
    assert corrupt(clean, name, 0.1, 5) == corrupt(clean, name, 0.1, 5)


@pytest.mark.parametrize("name", sorted(FRACTION_CORRUPTIONS | {"extra_column", "truncated_file"}))
def test_another_seed_gives_other_bytes(clean, name):
    assert corrupt(clean, name, 0.1, 5) != corrupt(clean, name, 0.1, 6)


def test_month_first_swaps_day_and_month_of_every_date(clean):
    before, after = frame(clean), frame(corrupt(clean, "month_first", 1.0, 0))
    read_day_first = pd.to_datetime(before[RAW_DATE], format=DATE_FORMAT)
    read_month_first = pd.to_datetime(after[RAW_DATE], format=MONTH_FIRST_FORMAT)
    pd.testing.assert_series_equal(read_month_first, read_day_first)
    assert (after[RAW_DATE] != before[RAW_DATE]).mean() > 0.9  # all but days equal to their month
    others = [c for c in RAW_COLUMNS if c != RAW_DATE]
    pd.testing.assert_frame_equal(after[others], before[others])


def test_month_first_on_a_fraction_changes_only_that_many_dates(clean):
    before, after = frame(clean), frame(corrupt(clean, "month_first", 0.2, 0))
    changed = after[RAW_DATE] != before[RAW_DATE]
    same_day_and_month = before[RAW_DATE].str[:2] == before[RAW_DATE].str[3:5]
    assert round(0.2 * len(before)) - same_day_and_month.sum() <= changed.sum() <= round(0.2 * len(before))
    swapped = pd.to_datetime(after.loc[changed, RAW_DATE], format=MONTH_FIRST_FORMAT)
    pd.testing.assert_series_equal(swapped, pd.to_datetime(before.loc[changed, RAW_DATE], format=DATE_FORMAT))


def changed_temps(clean: bytes, name: str) -> tuple[pd.Series, pd.Series]:
    before, after = frame(clean), frame(corrupt(clean, name, 0.2, 1))
    others = [c for c in RAW_COLUMNS if c != RAW_TEMP]
    pd.testing.assert_frame_equal(after[others], before[others])
    changed = after[RAW_TEMP] != before[RAW_TEMP]
    return before.loc[changed, RAW_TEMP], after.loc[changed, RAW_TEMP]


def test_non_numeric_temps_are_no_numbers(clean):
    _, temps = changed_temps(clean, "non_numeric_temp")
    assert len(temps) and not np.isfinite(pd.to_numeric(temps, errors="coerce")).any()
    assert temps.str.contains(",").any()  # the decimal comma, quoted: still one field


def test_impossible_values_are_outside_the_plausible_range(clean):
    _, temps = changed_temps(clean, "impossible_values")
    numbers = pd.to_numeric(temps)
    assert len(numbers) and ((numbers < TEMP_MIN) | (numbers > TEMP_MAX)).all()


def test_plausible_noise_is_wrong_but_within_the_data_range(clean):
    original, temps = changed_temps(clean, "plausible_noise")
    numbers = pd.to_numeric(temps)
    assert len(numbers) and numbers.between(*GENERATED_TEMP_RANGE).all()
    assert (numbers != pd.to_numeric(original)).all()


def test_malformed_rows_have_the_wrong_number_of_fields_or_are_garbage(clean):
    after = data_lines(corrupt(clean, "malformed_rows", 0.1, 2))
    broken = [line for line, old in zip(after, data_lines(clean), strict=True) if line != old]
    widths = {line.count(",") + 1 for line in broken}
    assert widths and len(RAW_COLUMNS) not in widths
    assert max(widths) > len(RAW_COLUMNS) and min(widths) == 1  # surplus fields and garbage lines
    assert not any('"' in line for line in broken)  # a lone quote would swallow the rest of the file


def test_missing_column_drops_temp_and_keeps_the_rest(clean):
    before, after = frame(clean), frame(corrupt(clean, "missing_column", 1.0, 0))
    assert list(after.columns) == [c for c in RAW_COLUMNS if c != RAW_TEMP]
    pd.testing.assert_frame_equal(after, before.drop(columns=RAW_TEMP))


def test_extra_column_is_inserted_before_temp_and_changes_nothing_else(clean):
    before, after = frame(clean), frame(corrupt(clean, "extra_column", 1.0, 0))
    at = list(RAW_COLUMNS).index(RAW_TEMP)
    assert list(after.columns) == [*RAW_COLUMNS[:at], EXTRA_COLUMN, *RAW_COLUMNS[at:]]
    pd.testing.assert_frame_equal(after.drop(columns=EXTRA_COLUMN), before)
    assert pd.to_numeric(after[EXTRA_COLUMN]).nunique() > 1


def test_empty_and_header_only(clean):
    assert corrupt(clean, "empty_file", 1.0, 0) == b""
    header = corrupt(clean, "header_only", 1.0, 0)
    assert header == clean.splitlines(keepends=True)[0] and header.rstrip().decode().split(",") == list(
        RAW_COLUMNS
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_truncated_file_is_cut_inside_a_row(clean, seed):
    cut = corrupt(clean, "truncated_file", 1.0, seed)
    assert clean.startswith(cut) and len(cut) < len(clean)
    *complete, last = cut.decode().split("\n")
    original = clean.decode().split("\n")[len(complete)]
    assert len(complete) >= 2  # the header and at least one whole row
    assert last and original.startswith(last) and last != original


def test_wrong_encoding_is_the_same_text_in_utf16(clean):
    data = corrupt(clean, "wrong_encoding", 1.0, 0)
    assert data.decode("utf-16") == clean.decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_duplicate_upload_is_the_clean_file(clean):
    assert make_input(spec("duplicate_upload")) == clean


def test_oversized_is_a_clean_file_at_a_larger_scale(clean):
    small = 0.01
    data = make_input(spec("oversized", scale=small))
    assert data == clean_file(small * OVERSIZE_FACTOR, 0)
    assert len(data) > 0.9 * OVERSIZE_FACTOR * len(clean_file(small, 0))


def test_the_curve_mix_is_half_caught_half_not(clean, tmp_path):
    fraction = 0.2
    result = ingest_locally(corrupt(clean, "mixed_temperatures", fraction, 0), tmp_path)
    corrupted = round(fraction * len(data_lines(clean)))
    # Rows are dealt out to impossible, non-numeric, plausible, plausible in turn.
    detectable = len(range(0, corrupted, 4)) + len(range(1, corrupted, 4))
    assert result["verdict"] == "quarantined"
    assert result["quarantined_rows"] == detectable
    assert "not a number" in result["reason"] and "outside" in result["reason"]


def test_ingest_locally_counts_and_reasons(clean, tmp_path):
    result = ingest_locally(clean, tmp_path / "clean")
    assert result["verdict"] == "accepted" and result["quarantined_rows"] == 0 and result["reason"] == ""
    assert result["rows"] == len(data_lines(clean)) >= result["clean_rows"] > 0
    refused = ingest_locally(b"", tmp_path / "empty")
    assert refused["verdict"] == "refused" and "empty" in refused["reason"] and refused["rows"] == 0


# --- the scenario files ----------------------------------------------------------------------------


def test_every_corruption_the_harness_must_cover_has_a_scenario():
    used = {load_scenario(path).input.corruption for path in SCENARIO_FILES}
    assert set(CORRUPTIONS) - used <= {"plausible_noise", "mixed_temperatures"}


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_the_scenario_gets_its_expected_verdict_from_the_ingest(path, tmp_path):
    scenario = load_scenario(path)
    assert scenario.kind == "input" and scenario.description
    input_spec = scenario.input
    if input_spec.corruption == "oversized":
        input_spec = input_spec.model_copy(update={"scale": min(input_spec.scale, TEST_SCALE_CAP)})
    data = make_input(input_spec)
    result = ingest_locally(data, tmp_path)
    if scenario.expected == "duplicate":
        # Detecting the second upload is the harness's part; the file itself must be clean.
        assert data == clean_file(input_spec.scale, input_spec.seed)
        assert result["verdict"] == "accepted"
        return
    assert result["verdict"] == scenario.expected, result["reason"]
    assert scenario.reason_contains.lower() in result["reason"].lower()
    if scenario.expected == "quarantined":
        assert 0 < result["quarantined_rows"] < result["rows"]
