"""The bad-input matrix: seeded corruptions of a generated ``IOT-temp.csv``, and a local ingest.

Every corruption takes the bytes of a clean generated file, the share of rows to corrupt and a
numpy ``Generator``, and returns the bad file's bytes; :func:`make_input` builds the clean file
from an :class:`~r3e_testbed.experiments.scenario.InputSpec` (its scale and seed) and applies
the corruption named there, so the same spec always gives the same bytes.

Row-level corruptions (:data:`FRACTION_CORRUPTIONS`) change exactly ``round(fraction * rows)``
data rows chosen at random; the others act on the file as a whole and ignore ``fraction``. The
clean file has no quoted fields, so rows are split on commas; everything streams line by line
and never holds more than the input and the output bytes (plus one byte per row).

:func:`ingest_locally` runs the pipeline's real ingest (:func:`~r3e_testbed.pipeline.ingest.ingest_object`)
on a local :class:`~r3e_testbed.pipeline.registry.DirectoryStore` and reads its verdict from the
``report.json`` it writes, so what is checked here is exactly what the DAG would decide.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from r3e_testbed.experiments.scenario import InputSpec
from r3e_testbed.pipeline.generate import GENERATED_TEMP_RANGE, write_csv
from r3e_testbed.pipeline.ingest import ingest_object, output_prefix
from r3e_testbed.pipeline.load import DataFileError
from r3e_testbed.pipeline.schema import RAW_DATE, RAW_TEMP
from r3e_testbed.storage import DirectoryStore

#: ``(clean file, fraction of rows, random generator) -> bad file``.
Corruption = Callable[[bytes, float, np.random.Generator], bytes]
#: ``(the row's fields by column name, random generator) -> the new line, without its line end``.
RowRewrite = Callable[[dict[str, str], np.random.Generator], str]

#: The raw object key the local ingest reads (refusal messages start with it).
LOCAL_KEY = "raw/input.csv"
#: The added column of ``extra_column``: a plausible new field of a changed export.
EXTRA_COLUMN = "humidity"
#: ``oversized`` is the clean file at this many times the spec's scale.
OVERSIZE_FACTOR = 10
#: Placeholder values of broken sensors and exports, all outside the plausible -30..70 °C.
IMPOSSIBLE_TEMPS = ("999", "-999", "-273", "-127", "85")
#: Temperatures that are not numbers; the decimal comma needs quotes to stay one field.
NON_NUMERIC_TEMPS = ("n/a", '"23,5°"', "NaN", "--", "29 C", "inf")
# Characters of garbage lines: printable ASCII without comma and quote (a lone quote would swallow
# the rest of the file into one field, which is a different fault) and without spaces.
_GARBAGE = np.frombuffer(bytes(c for c in range(33, 127) if chr(c) not in ',"'), dtype=np.uint8)


# --- helpers -------------------------------------------------------------------------------------


def _split_header(clean: bytes) -> tuple[list[str], bytes]:
    header, _, body = clean.partition(b"\n")
    return header.decode("utf-8").rstrip("\r").split(","), body


def _row_count(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _join(fields: Mapping[str, str]) -> str:
    return ",".join(fields.values())


def rewrite_rows(
    clean: bytes, fraction: float, rng: np.random.Generator, rewrites: Sequence[RowRewrite]
) -> bytes:
    """Rewrite exactly ``round(fraction * rows)`` random data rows of ``clean``.

    The chosen rows are shared out in equal parts (round-robin over a random order) among
    ``rewrites``; the header and every other row are copied unchanged.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0..1, got {fraction!r}")
    columns, body = _split_header(clean)
    rows = _row_count(body)
    chosen = rng.choice(rows, size=round(fraction * rows), replace=False)
    action = np.full(rows, -1, dtype=np.int16)  # which rewrite each row gets; -1: none
    for number in range(len(rewrites)):
        action[chosen[number :: len(rewrites)]] = number
    out = io.BytesIO()
    out.write(clean[: len(clean) - len(body)])
    for row, line in enumerate(io.BytesIO(body)):
        if action[row] < 0:
            out.write(line)
            continue
        values = line.decode("utf-8").rstrip("\r\n").split(",")
        fields = dict(zip(columns, values, strict=True))
        out.write(rewrites[action[row]](fields, rng).encode("utf-8") + b"\n")
    return out.getvalue()


def _rewrite_every_line(
    clean: bytes, header: Callable[[list[str]], str], row: RowRewrite, rng: np.random.Generator
) -> bytes:
    """Rewrite the header and every data row (for changes of the layout)."""
    columns, body = _split_header(clean)
    out = io.BytesIO()
    out.write(header(columns).encode("utf-8") + b"\n")
    for line in io.BytesIO(body):
        fields = dict(zip(columns, line.decode("utf-8").rstrip("\r\n").split(","), strict=True))
        out.write(row(fields, rng).encode("utf-8") + b"\n")
    return out.getvalue()


# --- row rewrites ----------------------------------------------------------------------------------


def _with(fields: dict[str, str], column: str, value: str) -> str:
    return _join({**fields, column: value})


def impossible_temp(fields: dict[str, str], rng: np.random.Generator) -> str:
    return _with(fields, RAW_TEMP, str(rng.choice(IMPOSSIBLE_TEMPS)))


def non_numeric_temp(fields: dict[str, str], rng: np.random.Generator) -> str:
    return _with(fields, RAW_TEMP, str(rng.choice(NON_NUMERIC_TEMPS)))


def plausible_temp(fields: dict[str, str], rng: np.random.Generator) -> str:
    """Another whole °C within the range the data spans: wrong, but like any other reading."""
    low, high = GENERATED_TEMP_RANGE
    span = high - low + 1
    value = low + (int(fields[RAW_TEMP]) - low + int(rng.integers(1, span))) % span
    return _with(fields, RAW_TEMP, str(value))


def month_first_date(fields: dict[str, str], rng: np.random.Generator) -> str:
    """``DD-MM-YYYY HH:MM`` -> ``MM-DD-YYYY HH:MM``, as a US-locale tool re-saves it."""
    day, month, rest = fields[RAW_DATE].split("-", 2)
    return _with(fields, RAW_DATE, f"{month}-{day}-{rest}")


def malformed_row(fields: dict[str, str], rng: np.random.Generator) -> str:
    """Surplus fields, lost fields, or a line of garbage, one of the three at random."""
    values = list(fields.values())
    kind = int(rng.integers(3))
    if kind == 0:  # a stray separator, e.g. an unquoted comma in a field
        return ",".join([*values, "", str(rng.integers(100))])
    if kind == 1:  # a row cut short
        return ",".join(values[: int(rng.integers(1, len(values) - 1))])
    return bytes(rng.choice(_GARBAGE, size=int(rng.integers(5, 40)))).decode("ascii")


# --- corruptions ------------------------------------------------------------------------------------


def _unchanged(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    return clean


def _row_corruption(*rewrites: RowRewrite) -> Corruption:
    def corrupt(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
        return rewrite_rows(clean, fraction, rng, rewrites)

    return corrupt


def _missing_column(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    def drop(fields: Mapping[str, str]) -> dict[str, str]:
        return {column: value for column, value in fields.items() if column != RAW_TEMP}

    return _rewrite_every_line(
        clean,
        lambda columns: ",".join(c for c in columns if c != RAW_TEMP),
        lambda fields, _rng: _join(drop(fields)),
        rng,
    )


def _extra_column(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    # In the middle of the row, before temp: a reader that goes by position would misread it.
    at = _split_header(clean)[0].index(RAW_TEMP)

    def insert(values: Sequence[str], value: str) -> str:
        return ",".join([*values[:at], value, *values[at:]])

    return _rewrite_every_line(
        clean,
        lambda columns: insert(columns, EXTRA_COLUMN),
        lambda fields, rng: insert(list(fields.values()), str(rng.integers(20, 95))),
        rng,
    )


def _empty_file(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    return b""


def _header_only(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    return clean.partition(b"\n")[0] + b"\n"


def _truncated_file(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    """Cut inside a random data row (never the first), keeping part of that row and losing
    the rest of the file, as when an upload or copy is interrupted."""
    ends = np.flatnonzero(np.frombuffer(clean, dtype=np.uint8) == ord("\n"))
    if len(ends) < 3:
        raise ValueError("truncated_file needs a file with at least two data rows")
    row = int(rng.integers(2, len(ends)))  # the row between line ends row-1 and row
    start, end = int(ends[row - 1]) + 1, int(ends[row])
    return clean[: int(rng.integers(start + 1, end))]  # at least one character kept, one lost


def _wrong_encoding(clean: bytes, fraction: float, rng: np.random.Generator) -> bytes:
    # UTF-16 with a byte-order mark, as "Unicode text" exports write it. The data is ASCII, so a
    # latin-1 or cp1252 re-save would give the same bytes as UTF-8: not a wrong encoding at all.
    return "\ufeff".encode("utf-16-le") + clean.decode("utf-8").encode("utf-16-le")


#: Corruption name -> function building the bad file from the clean one.
CORRUPTIONS: dict[str, Corruption] = {
    "clean": _unchanged,  # the control case
    "malformed_rows": _row_corruption(malformed_row),
    "month_first": _row_corruption(month_first_date),
    "missing_column": _missing_column,  # no temp column
    "extra_column": _extra_column,
    "non_numeric_temp": _row_corruption(non_numeric_temp),
    "impossible_values": _row_corruption(impossible_temp),
    "empty_file": _empty_file,  # 0 bytes
    "header_only": _header_only,
    "truncated_file": _truncated_file,
    "duplicate_upload": _unchanged,  # the clean file; the harness uploads it twice
    "wrong_encoding": _wrong_encoding,
    "oversized": _unchanged,  # the clean file at OVERSIZE_FACTOR times the scale
    "plausible_noise": _row_corruption(plausible_temp),  # wrong but in range: undetectable
    # The robustness curve's mix: half caught by validation, half not.
    "mixed_temperatures": _row_corruption(impossible_temp, non_numeric_temp, plausible_temp, plausible_temp),
}

#: The corruptions that change ``fraction`` of the rows; the others ignore it.
FRACTION_CORRUPTIONS = frozenset(
    {
        "malformed_rows",
        "month_first",
        "non_numeric_temp",
        "impossible_values",
        "plausible_noise",
        "mixed_temperatures",
    }
)

#: Corruptions that need the clean file at a larger scale than the spec's.
SCALE_FACTORS: dict[str, int] = {"oversized": OVERSIZE_FACTOR}


def corruption(name: str) -> Corruption:
    """The corruption called ``name``; ``ValueError`` naming it and the known ones otherwise."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(sorted(CORRUPTIONS))}") from None


def clean_file(scale: float, seed: int) -> bytes:
    """The clean generated file (the layout of ``IOT-temp.csv``) at ``scale`` and ``seed``."""
    buffer = io.BytesIO()
    write_csv(buffer, scale, seed)
    return buffer.getvalue()


def corrupt(clean: bytes, name: str, fraction: float, seed: int) -> bytes:
    """Apply the corruption ``name`` to ``clean``, seeded by ``seed``."""
    return corruption(name)(clean, fraction, np.random.default_rng(seed))


def make_input(spec: InputSpec) -> bytes:
    """The bad file a spec describes: clean data at its scale and seed, then its corruption."""
    corruption(spec.corruption)  # an unknown name fails before any data is generated
    clean = clean_file(spec.scale * SCALE_FACTORS.get(spec.corruption, 1), spec.seed)
    return corrupt(clean, spec.corruption, spec.fraction, spec.seed)


# --- local ingest ----------------------------------------------------------------------------------


def ingest_report(data: bytes, workdir: str | os.PathLike[str]) -> tuple[DirectoryStore, dict[str, Any]]:
    """Run the pipeline's ingest on ``data`` in a local store at ``workdir``.

    Returns the store and the ``report.json`` the ingest wrote (``verdict`` accepted or refused,
    counts, ``reason_counts``, ``warnings``, ``error``, ``clean_parts``). A refusal is not raised.
    """
    store = DirectoryStore(Path(workdir))
    store.put(LOCAL_KEY, data)
    prefix = output_prefix(LOCAL_KEY, store.etag(LOCAL_KEY) or "")
    try:
        written = ingest_object(store, LOCAL_KEY, store, prefix)
        report_key = written["report"]
    except DataFileError:
        report_key = f"quarantine/{prefix}/report.json"  # written before the refusal is raised
    return store, json.loads(store.get(report_key))


def _reasons(report: Mapping[str, Any]) -> str:
    counts = report.get("reason_counts") or {}
    parts = [f"{code} ({count:,} row{'' if count == 1 else 's'})" for code, count in counts.items()]
    parts += [f"warning: {warning}" for warning in report.get("warnings") or []]
    return "; ".join(parts)


def ingest_locally(data: bytes, workdir: str | os.PathLike[str]) -> dict[str, Any]:
    """What the pipeline's ingest does with ``data``, as the ``InputResult`` fields it fills.

    ``verdict``: ``refused`` (the file as a whole), ``quarantined`` (accepted with rows set
    aside) or ``accepted``; ``rows``, ``clean_rows``, ``quarantined_rows``; ``reason``: the
    refusal message, else the quarantine reasons with their counts and any warnings.
    """
    _, report = ingest_report(data, workdir)
    if report["verdict"] == "refused":
        verdict, reason = "refused", str(report.get("error") or "")
    else:
        verdict = "quarantined" if report.get("quarantined_rows") else "accepted"
        reason = _reasons(report)
    return {
        "verdict": verdict,
        "rows": report.get("rows"),
        "clean_rows": report.get("clean_rows"),
        "quarantined_rows": report.get("quarantined_rows"),
        "reason": reason,
    }
