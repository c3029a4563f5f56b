"""Chunked reading of raw CSV: the original layout, file-level errors, row-level damage, memory.

``data/IOT-temp-head.csv`` is laid out byte for byte like the Kaggle ``IOT-temp.csv`` (header,
``\\n`` line ends, no quoting); its first three rows are the original's first three rows, the
others are made up in the same format.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from r3e_testbed.pipeline import load
from r3e_testbed.pipeline.generate import write_csv
from r3e_testbed.pipeline.load import DataFileError, iter_raw_chunks, read_raw
from r3e_testbed.pipeline.schema import RAW_COLUMNS

HEAD = Path(__file__).parent / "data" / "IOT-temp-head.csv"
HEADER = b"id,room_id/id,noted_date,temp,out/in\n"
ROW = b"__export__.temp_log_196134_bd201015,Room Admin,08-12-2018 09:30,29,In\n"


def chunks_of(data: bytes, chunk_rows: int = 50_000) -> list[pd.DataFrame]:
    return list(iter_raw_chunks(io.BytesIO(data), chunk_rows))


def test_reads_the_original_layout() -> None:
    frame = read_raw(HEAD)
    assert tuple(frame.columns) == RAW_COLUMNS
    assert len(frame) == 10
    assert list(frame.index) == list(range(10))
    assert all(pd.api.types.is_string_dtype(frame[c]) for c in RAW_COLUMNS)
    assert frame.iloc[:3].values.tolist() == [
        ["__export__.temp_log_196134_bd201015", "Room Admin", "08-12-2018 09:30", "29", "In"],
        ["__export__.temp_log_196131_7bca51bc", "Room Admin", "08-12-2018 09:30", "29", "In"],
        ["__export__.temp_log_196127_522915e3", "Room Admin", "08-12-2018 09:29", "41", "Out"],
    ]
    assert frame.attrs == {"bad_lines": [], "warnings": []}


def test_path_binary_and_text_sources_agree() -> None:
    by_path = read_raw(str(HEAD))
    with HEAD.open("rb") as handle:
        by_binary = read_raw(handle)
        assert not handle.closed  # a caller's file object is left open
    by_text = read_raw(io.StringIO(HEAD.read_text(encoding="utf-8")))
    pd.testing.assert_frame_equal(by_path, by_binary)
    pd.testing.assert_frame_equal(by_path, by_text)


def test_chunks_have_at_most_chunk_rows_and_number_rows_on() -> None:
    chunks = list(iter_raw_chunks(HEAD, chunk_rows=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [c.index[0] for c in chunks] == [0, 3, 6, 9]
    pd.testing.assert_frame_equal(pd.concat(chunks), read_raw(HEAD))


def test_values_stay_text() -> None:
    data = HEADER + b"007,NA,08-12-2018 09:30,29.50,In\n,,08-12-2018 09:30,,Out\n"
    (chunk,) = chunks_of(data)
    assert chunk.values.tolist() == [
        ["007", "NA", "08-12-2018 09:30", "29.50", "In"],
        ["", "", "08-12-2018 09:30", "", "Out"],
    ]


def test_crlf_line_ends_and_utf8_bom() -> None:
    data = ("\ufeff" + (HEADER + ROW + ROW).decode()).replace("\n", "\r\n").encode("utf-8")
    (chunk,) = chunks_of(data)
    assert tuple(chunk.columns) == RAW_COLUMNS
    assert chunk["out/in"].tolist() == ["In", "In"]
    assert chunk["id"].iloc[0] == "__export__.temp_log_196134_bd201015"


def test_non_ascii_utf8_is_fine() -> None:
    (chunk,) = chunks_of(HEADER + "x,Salle de réunion,08-12-2018 09:30,29,In\n".encode())
    assert chunk["room_id/id"].iloc[0] == "Salle de réunion"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty (0 bytes)"),
        (b" \n\n  \r\n", "the file is empty (only whitespace)"),
        ((HEADER + ROW).decode().encode("utf-16"), "UTF-16 (little-endian byte-order mark FF FE)"),
        ((HEADER + ROW).decode().encode("utf-16-be"), "NUL bytes"),
        (gzip.compress(HEADER + ROW), "gzip-compressed"),
        (b"PAR1\x15\x04", "Parquet"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "NUL bytes"),
    ],
)
def test_unusable_files_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(DataFileError, match="<BytesIO>: ") as error:
        iter_raw_chunks(io.BytesIO(data))
    assert message in str(error.value)


def test_latin1_is_refused_naming_byte_and_line() -> None:
    data = HEADER + ROW + "x,Café,08-12-2018 09:30,29,In\n".encode("latin-1")
    with pytest.raises(DataFileError) as error:
        iter_raw_chunks(io.BytesIO(data))
    text = str(error.value)
    assert "not valid UTF-8: byte E9" in text
    assert f"at byte offset {len(HEADER + ROW) + 5} (line 3)" in text
    assert "latin-1" in text


def test_invalid_utf8_after_the_first_block_fails_when_reached(monkeypatch) -> None:
    monkeypatch.setattr(load, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", 4096)
    # Longer than pandas' own read buffer (256 KiB), so the first chunks parse before the byte.
    data = HEADER + ROW * 6000 + b"x,Caf\xe9,08-12-2018 09:30,29,In\n"
    reader = iter_raw_chunks(io.BytesIO(data), chunk_rows=50)
    first = next(reader)  # the start is fine
    assert len(first) == 50
    with pytest.raises(DataFileError, match=r"byte E9 at byte offset \d+ \(line 6002\)"):
        list(reader)
    assert reader._parser is None  # closed


def test_missing_columns_are_named() -> None:
    with pytest.raises(DataFileError) as error:
        iter_raw_chunks(io.BytesIO(b"id,room_id/id,noted_date\na,b,c\n"))
    text = str(error.value)
    assert "missing required column(s) 'temp', 'out/in';" in text
    assert "'id,room_id/id,noted_date'" in text


def test_wrong_delimiter_is_recognised() -> None:
    with pytest.raises(DataFileError, match="wrong delimiter"):
        iter_raw_chunks(io.BytesIO(HEADER.replace(b",", b";") + ROW.replace(b",", b";")))


def test_not_a_csv_at_all() -> None:
    with pytest.raises(DataFileError, match="missing required column"):
        iter_raw_chunks(io.BytesIO(b'{"id": 1, "temp": 29}\n'))


def test_duplicate_column_names_are_refused() -> None:
    with pytest.raises(DataFileError, match=r"duplicate column name.*'temp'"):
        iter_raw_chunks(io.BytesIO(b"id,room_id/id,noted_date,temp,out/in,temp\n"))


def test_extra_columns_are_dropped_with_a_warning() -> None:
    data = b"sensor,id,room_id/id,noted_date,temp,out/in,battery\nS1,a,R,08-12-2018 09:30,29,In,97\n"
    reader = iter_raw_chunks(io.BytesIO(data))
    (chunk,) = list(reader)
    assert tuple(chunk.columns) == RAW_COLUMNS
    assert chunk.values.tolist() == [["a", "R", "08-12-2018 09:30", "29", "In"]]
    assert reader.extra_columns == ("sensor", "battery")
    assert reader.warnings == ["<BytesIO>: ignored extra column(s) 'sensor', 'battery'"]


def test_columns_in_another_order_come_out_in_raw_order() -> None:
    data = b"out/in,temp,noted_date,room_id/id,id\nOut,41,08-12-2018 09:29,Room Admin,x1\n"
    (chunk,) = chunks_of(data)
    assert tuple(chunk.columns) == RAW_COLUMNS
    assert chunk.values.tolist() == [["x1", "Room Admin", "08-12-2018 09:29", "41", "Out"]]


def test_header_only_gives_no_rows() -> None:
    assert chunks_of(HEADER) == []
    frame = read_raw(io.BytesIO(HEADER))
    assert len(frame) == 0
    assert tuple(frame.columns) == RAW_COLUMNS
    # A header without a line end is a header too.
    assert chunks_of(HEADER.rstrip(b"\n")) == []


def test_a_short_row_inside_the_file_is_a_row_not_a_file_error() -> None:
    data = HEADER + ROW + b"__export__.temp_log_196131_7bca51bc,Room Admin,08-12-20\n" + ROW
    (chunk,) = chunks_of(data)
    assert len(chunk) == 3
    assert chunk.iloc[1].tolist() == ["__export__.temp_log_196131_7bca51bc", "Room Admin", "08-12-20", "", ""]


def test_rows_with_too_many_fields_are_reported_by_line() -> None:
    data = (
        HEADER + ROW + b"a,Room, Admin,08-12-2018 09:30,29,In\n" + ROW + b"b,R,08-12-2018 09:30,29,In,x,y\n"
    )
    reader = iter_raw_chunks(io.BytesIO(data), chunk_rows=10)
    (chunk,) = list(reader)
    assert len(chunk) == 2
    assert chunk.attrs["bad_lines"] == [(3, "expected 5 fields, saw 6"), (5, "expected 5 fields, saw 7")]
    assert reader.bad_lines == 2
    assert reader.rows == 2


def test_a_first_row_with_too_many_fields_is_not_shifted() -> None:
    # pandas would take the field count from the first data line and silently shift its fields.
    data = HEADER + b"a,Room, Admin,08-12-2018 09:30,29,In\n" + ROW
    reader = iter_raw_chunks(io.BytesIO(data), chunk_rows=1)
    chunks = list(reader)
    assert [len(c) for c in chunks] == [1]
    assert chunks[0].attrs["bad_lines"] == [(2, "expected 5 fields, saw 6")]
    assert chunks[0]["id"].tolist() == ["__export__.temp_log_196134_bd201015"]
    assert chunks[0].index.tolist() == [0]


def test_bad_chunk_rows() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        iter_raw_chunks(HEAD, chunk_rows=0)


def test_owned_file_is_closed_after_errors_and_at_the_end(tmp_path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(HEADER + ROW)
    reader = iter_raw_chunks(path)
    assert reader._owned is not None
    list(reader)
    assert reader._owned is None
    with iter_raw_chunks(path) as reader:
        pass
    assert reader._owned is None


class CountingReads(io.BytesIO):
    """A binary stream that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return super().read(size)


def test_streams_a_scale_2_file_in_bounded_chunks_and_reads() -> None:
    data = io.BytesIO()
    rows = write_csv(data, 2.0, seed=1)
    source = CountingReads(data.getvalue())
    lengths = [len(chunk) for chunk in iter_raw_chunks(source, chunk_rows=10_000)]
    assert max(lengths) == 10_000
    assert sum(lengths) == rows
    # Never the whole object at once: every read asks for at most one block.
    assert len(source.getvalue()) > 10 * load.BLOCK_SIZE
    assert all(size is not None and 0 < size <= load.BLOCK_SIZE for size in source.sizes)


class SlowReads(io.BytesIO):
    """A binary stream whose reads take a while, each recorded as (start, end) times."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[float, float]] = []

    def read(self, size: int | None = -1) -> bytes:
        started = time.monotonic()
        time.sleep(0.01)
        data = super().read(size)
        self.reads.append((started, time.monotonic()))
        return data


def test_the_source_is_not_read_after_close(monkeypatch) -> None:
    # pyarrow reads ahead on a thread of its own; after close() the caller has the source to itself
    monkeypatch.setattr(load, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", 4096)
    source = SlowReads(_generated(0.2))
    reader = iter_raw_chunks(source, chunk_rows=100)
    next(reader)
    time.sleep(0.05)  # the read-ahead is under way
    reader.close()
    closed = time.monotonic()
    time.sleep(0.1)
    assert all(end <= closed for _, end in source.reads)
    assert len(source.reads) < len(source.getvalue()) / 4096
    assert next(reader, None) is None


def _generated(rows_scale: float = 0.01) -> bytes:
    buffer = io.BytesIO()
    write_csv(buffer, rows_scale, seed=3)
    return buffer.getvalue()


def test_a_file_cut_inside_its_last_row_is_refused_as_truncated() -> None:
    data = _generated()
    cut = data[: data.rindex(b",", 0, len(data) - 2)]  # inside the last row, before its last field
    with pytest.raises(DataFileError, match=r"looks truncated: its last line \(row \d+\) has no line end"):
        list(iter_raw_chunks(io.BytesIO(cut), chunk_rows=50))


@pytest.mark.parametrize("chunk_rows", [7, 50_000])
def test_a_complete_last_row_without_a_line_end_is_fine(chunk_rows: int) -> None:
    data = _generated()
    whole = read_raw(io.BytesIO(data))
    unterminated = pd.concat(list(iter_raw_chunks(io.BytesIO(data.rstrip(b"\r\n")), chunk_rows=chunk_rows)))
    assert len(unterminated) == len(whole)


# --- pyarrow's parse against pandas' ----------------------------------------------------------------


def chunks_by(data: bytes, chunk_rows: int) -> tuple:
    """What the reader makes of ``data``: the rows, their numbers, each chunk's size and bad lines,
    the warnings; or the kind of refusal (NUL bytes, truncated) or the DataFileError's message."""
    try:
        reader = iter_raw_chunks(io.BytesIO(data), chunk_rows)
        chunks = list(reader)
    except DataFileError as error:
        kinds = [kind for kind in ("NUL bytes", "looks truncated") if kind in str(error)]
        return ("refused", kinds[0] if kinds else str(error))
    frame = pd.concat(chunks) if chunks else pd.DataFrame(columns=list(RAW_COLUMNS))
    assert all(pd.api.types.is_string_dtype(frame[c]) for c in RAW_COLUMNS)
    assert all(len(c) <= chunk_rows for c in chunks)
    sizes = [(len(c), c.attrs["bad_lines"]) for c in chunks]
    return (frame.values.tolist(), frame.index.tolist(), sizes, reader.bad_lines, reader.warnings)


def pandas_chunks(data: bytes, chunk_rows: int) -> tuple:
    """The reference: what pandas' C parser makes of ``data`` (``dtype=str``,
    ``keep_default_na=False``) read ``chunk_rows`` rows at a time, in the form of :func:`chunks_by`.
    A skipped line is in the chunk pandas reads it with; the file checks are the reader's."""
    if b"\x00" in data[: load.BLOCK_SIZE]:
        return ("refused", "NUL bytes")
    header_line, _, body = data.decode("utf-8").removeprefix("\ufeff").partition("\n")
    header = [field.strip() for field in header_line.rstrip("\r").split(",")]
    # pandas takes the number of fields from the first line: a line of the header's width goes
    # first, and stands in for the header in pandas' line numbers.
    probe = "," * (len(header) - 1) + "\n"
    options = {"header": None, "names": header, "dtype": str, "keep_default_na": False, "index_col": False}
    frames, sizes = [], []
    with pd.read_csv(
        io.StringIO(probe + body), chunksize=chunk_rows, on_bad_lines="warn", **options
    ) as parser:
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    frame = parser.get_chunk(chunk_rows + (not frames))  # (the first with the probe)
                except StopIteration:
                    frame = None
            bad = [
                (int(n), m)
                for w in caught
                for n, m in re.findall(r"Skipping line (\d+): (.*)", str(w.message))
            ]
            if frame is None:
                sizes += [(0, bad)] if bad else []
                break
            frame = frame.iloc[1:] if not frames else frame
            frames.append(frame[list(RAW_COLUMNS)])
            sizes.append((len(frame), bad))
    frame = pd.concat(frames) if frames else pd.DataFrame(columns=list(RAW_COLUMNS))
    if len(frame) and not data.endswith((b"\n", b"\r")) and not all(frame.iloc[-1].str.strip()):
        return ("refused", "looks truncated")
    extra = [c for c in header if c not in RAW_COLUMNS]
    warned = [f"<BytesIO>: ignored extra column(s) {', '.join(map(repr, extra))}"] if extra else []
    bad_lines = sum(len(bad) for _, bad in sizes)
    return (frame.values.tolist(), list(range(len(frame))), sizes, bad_lines, warned)


DAMAGED_LINES = [
    b"a,b,c",  # short
    b"a,b,c,d,e,f",  # long
    b"a,b,c,d,e,f,g,h",
    b"",  # blank
    b"   ",  # whitespace only
    b",,,,",
    b"x,Caf\xc3\xa9 \xe2\x80\x83,1,2,In",  # non-ASCII (an em space too)
    b"a,,b,,",
    b"\t",
    b" ,a,b,c,d",
    b"NA,nan,None,NULL,",
]
#: Quoted values (a line break in one too), a carriage return within a line, a NUL byte.
QUOTING_LINES = [
    b'a,"q,uoted",c,d,e',
    b'a,"two\nlines",c,d,e',
    b"a,b\rc,d,e",
    b"a\x00b,c,d,e,f",
    b'a,"x,y"',
    b'a,"b"x,c,d,e',
    b'a"b,c,d,e,f',
    b'a,b,"c\r\nd",e',
]


HEADERS = [HEADER, b"out/in,temp,noted_date,room_id/id,id\n", HEADER.rstrip(b"\n") + b",extra\n"]


def damaged_file(rng: random.Random, lines: list[bytes]) -> bytes:
    header = rng.choice(HEADERS)
    rows = [rng.choice(lines) if rng.random() < 0.2 else ROW[:-1] for _ in range(rng.randint(0, 120))]
    line_end = rng.choice([b"\n", b"\r\n"])
    return header.replace(b"\n", line_end) + line_end.join(rows) + rng.choice([line_end, b""])


@pytest.mark.parametrize("seed", range(4))
def test_damaged_files_are_read_as_pandas_reads_them(seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    for lines in (DAMAGED_LINES, DAMAGED_LINES + QUOTING_LINES):
        for _ in range(8):
            data = damaged_file(rng, lines)
            monkeypatch.setattr(load, "BLOCK_SIZE", rng.choice([64, 200, 4096]))
            monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", rng.choice([200, 1000, 1 << 20]))  # batches
            chunk_rows = rng.choice([1, 7, 1000])
            assert chunks_by(data, chunk_rows) == pandas_chunks(data, chunk_rows), data


def test_the_export_is_parsed_by_pyarrow_alone(monkeypatch) -> None:
    data = _generated(0.2)
    expected = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)

    handed_back: list[str] = []
    invalid_row = load.RawCsvReader._invalid_row
    monkeypatch.setattr(
        load.RawCsvReader,
        "_invalid_row",
        lambda self, row: handed_back.append(row.text) or invalid_row(self, row),
    )
    monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", 4096)  # many batches
    for line_end in (b"\n", b"\r\n"):
        frame = read_raw(io.BytesIO(data.replace(b"\n", line_end)))
        pd.testing.assert_frame_equal(frame, expected, check_dtype=False, check_index_type=False)
        assert all(pd.api.types.is_string_dtype(frame[c]) for c in RAW_COLUMNS)
        assert frame.attrs == {"bad_lines": [], "warnings": []}
    # no row of it came back from pyarrow's fast path, only the one the reader puts after the last
    assert handed_back == [load._END_ROW.decode()] * 2


def test_quoted_values_are_read_as_pandas_reads_them(monkeypatch) -> None:
    monkeypatch.setattr(load, "BLOCK_SIZE", 256)
    monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", 256)
    quoted = b'q1,"Room, Admin",08-12-2018 09:30,29,"In"\nq2,"Room\nAdmin",08-12-2018 09:30,29,In\n'
    data = HEADER + ROW * 10 + quoted + ROW * 10 + b"a,b,c,d,e,f\n" + ROW
    reader = iter_raw_chunks(io.BytesIO(data), chunk_rows=4)
    frame = pd.concat(list(reader))
    assert len(frame) == 23
    assert frame.index.tolist() == list(range(23))
    assert frame.iloc[10].tolist() == ["q1", "Room, Admin", "08-12-2018 09:30", "29", "In"]
    assert frame.iloc[11].tolist() == ["q2", "Room\nAdmin", "08-12-2018 09:30", "29", "In"]
    assert reader.bad_lines == 1
    # numbered as pandas numbers the lines of the whole file (it counts a quoted line break not)
    assert chunks_by(data, 4) == pandas_chunks(data, 4)


def test_a_quoted_value_open_at_the_end_of_the_file_is_refused() -> None:
    # pandas refuses it ("EOF inside string"); taken as a value, it would swallow the rows after it.
    for cut in (b'a,"Room\n', b'a,Room,08-12-2018 09:30,29,"In\n'):
        with pytest.raises(DataFileError, match="a quoted value runs to the end of the file"):
            read_raw(io.BytesIO(HEADER + ROW + cut + ROW * 3))


def test_a_quoted_line_end_cut_by_a_block_boundary_stays_as_it_was(monkeypatch) -> None:
    # pyarrow alone drops the "\n" of a quoted "\r\n" that its blocks cut in two
    monkeypatch.setattr(load, "BLOCK_SIZE", 16)
    monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", 64)
    for pad in range(40):  # (the rows fit in a block)
        rows = b"x" * pad + b",R,d,1,In\n" + b'a,"R\r\nS",d,1,In\n' + b'b,"R\r\nS"\n' + b"c,R,d,1,In\n"
        frame = read_raw(io.BytesIO(HEADER + rows))
        assert frame["room_id/id"].tolist()[1:3] == ["R\r\nS"] * 2, pad


@pytest.mark.parametrize("parse_block_size", [128, 1 << 20])
def test_short_rows_and_empty_lines_keep_their_places_across_batches(monkeypatch, parse_block_size) -> None:
    # pyarrow skips empty lines without a word and hands short rows back: they go back where they were
    monkeypatch.setattr(load, "PARSE_BLOCK_SIZE", parse_block_size)
    rows = [f"r{i},R,08-12-2018 09:30,29,In" for i in range(40)]
    rows[3], rows[17], rows[30] = "s3,R", "s17", "\n\ns30,R,08-12-2018 09:30"  # (two empty lines first)
    rows[10], rows[25] = "", "a,b,c,d,e,f\n\r\n"
    data = HEADER + "\n".join(rows).encode() + b"\n"
    frame = read_raw(io.BytesIO(data))
    expected = pandas_chunks(data, 1000)
    assert frame.values.tolist() == expected[0]
    assert frame["id"].tolist()[:4] == ["r0", "r1", "r2", "s3"]
    assert "s30" in frame["id"].tolist()
    assert frame.attrs["bad_lines"] == [(27, "expected 5 fields, saw 6")] == expected[2][0][1]


def test_a_last_row_with_too_many_fields_is_reported_too() -> None:
    # pandas reports it while reading the chunk after the last: that chunk's bad lines count too.
    data = HEADER + ROW * 3 + b"a,b,c,d,e,f"
    chunks = list(iter_raw_chunks(io.BytesIO(data), chunk_rows=3))
    assert [b for c in chunks for b in c.attrs["bad_lines"]] == [(5, "expected 5 fields, saw 6")]
    assert sum(map(len, chunks)) == 3
    assert chunks_by(data, 3) == pandas_chunks(data, 3)


def test_a_line_longer_than_a_block_is_read(monkeypatch) -> None:
    monkeypatch.setattr(load, "BLOCK_SIZE", 64)
    long_room = "R" * 1000
    data = HEADER + ROW + f"x,{long_room},08-12-2018 09:30,29,In\n".encode() + ROW
    frame = read_raw(io.BytesIO(data))
    assert frame["room_id/id"].tolist() == ["Room Admin", long_room, "Room Admin"]


def test_a_character_cut_by_a_block_boundary_is_fine_and_a_bad_one_is_named(monkeypatch) -> None:
    monkeypatch.setattr(load, "BLOCK_SIZE", 64)
    row = "x,Salle de réunion,08-12-2018 09:30,29,In\n".encode()
    head = HEADER + ROW
    filler_length = 64 * 3 - 1 - len(head) - row.index("é".encode())  # "é" starts a block's last byte
    data = head + b"y," + b"R" * (filler_length - 3) + b"\n" + row
    assert data[64 * 3 - 1 : 64 * 3 + 1] == "é".encode()
    assert read_raw(io.BytesIO(data))["room_id/id"].iloc[-1] == "Salle de réunion"
    broken = data[: 64 * 3] + b"x" + data[64 * 3 + 1 :]  # "é" without its second byte
    with pytest.raises(DataFileError, match=rf"byte C3 at byte offset {64 * 3 - 1} \(line 4\)"):
        read_raw(io.BytesIO(broken))


def test_a_short_last_row_with_a_line_end_in_a_text_source_is_a_row() -> None:
    # (the whole text fits in the first read: its line end must count all the same)
    frame = read_raw(io.StringIO((HEADER + ROW).decode() + "a,b,c\n"))
    assert frame.iloc[-1].tolist() == ["a", "b", "c", "", ""]
    with pytest.raises(DataFileError, match="looks truncated"):
        read_raw(io.StringIO((HEADER + ROW).decode() + "a,b,c"))
