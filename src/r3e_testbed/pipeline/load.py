"""Read a raw ``IOT-temp.csv`` (the original or a generated one) in chunks, never all at once.

``iter_raw_chunks(source)`` takes a local path or an open file object (binary, such as an S3
object opened with fsspec/s3fs, or text) and yields DataFrames of at most ``chunk_rows`` rows
with exactly the columns ``RAW_COLUMNS``, every value a string (pandas' ``str`` dtype, backed by
Arrow: no Python object per value; an empty field is ``""``, never NaN, and "NA" stays "NA"). The
index numbers the data rows from 0 across chunks. Only one chunk and the blocks pyarrow reads
ahead (32 of ``PARSE_BLOCK_SIZE``: 4 MiB) are in memory at a time.

The file as a whole is checked when the reader is created, before any row is parsed, and a
:class:`DataFileError` names the problem:

* empty file (or only whitespace);
* not CSV text: gzip/zip/Parquet signatures, NUL bytes, UTF-16/UTF-32 byte-order marks;
* not UTF-8: the byte, its offset and line are named. Only UTF-8 is accepted (a UTF-8 BOM is
  allowed); the reader does not guess encodings, because a wrong guess corrupts text silently.
  Invalid UTF-8 further into the file raises the same error when it is reached;
* a header without the required columns: the missing ones are named (a header that is one
  field with ``;`` or tabs in it is reported as a wrong delimiter); duplicate column names.

Row-level damage is *not* fatal for the file; it is left to validation to quarantine:

* a short row comes through with the missing fields as ``""``; a short *last* row without a
  line end is a file cut off, and fatal (the rows after the cut are missing too);
* a row with more fields than the header cannot be parsed into columns: it is skipped, and
  the reader records it in the chunk's ``attrs["bad_lines"]`` as ``(line_number, message)``
  pairs (line numbers are 1-based physical lines, the header is line 1, a quoted line break
  not counted), which :func:`~r3e_testbed.pipeline.validate.validate_chunk` counts as
  quarantined rows; it goes with the chunk of the row after it;
* empty lines and lines of only spaces and tabs are skipped.

Extra columns (not in ``RAW_COLUMNS``) are parsed, so that every row's field count is still
checked, but dropped from the chunks; the reader records a warning naming them in
:attr:`RawCsvReader.warnings` (and :func:`~r3e_testbed.pipeline.validate.validate_file` copies it
into its result), so a changed export layout is visible without failing the run. Columns may
come in any order; chunks always have ``RAW_COLUMNS`` in that order.

How it parses: pyarrow's streaming CSV reader (``pyarrow.csv.open_csv``; quoted values may hold
line breaks) reads the file as pandas' C parser does (``dtype=str``, ``keep_default_na=False``,
the reference of the tests). It hands every row with the wrong number of fields, numbered, to
the reader's ``invalid_row_handler``: a short row is put back where it was, its missing fields
``""``, a long one recorded as a bad line. pyarrow skips empty lines without a word, which would
leave no trace of where the rows after them belong: the reader puts a space into each one before
pyarrow reads it, so that pyarrow reports it too (and it is skipped as blank). The one difference
to pandas this makes: an empty line *inside a quoted value* keeps that space. A row may take up
to ``PARSE_BLOCK_SIZE`` bytes (a longer one, or a quoted value left open, is a file error).
"""

from __future__ import annotations

import codecs
import collections
import csv
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv

from r3e_testbed.pipeline.schema import RAW_COLUMNS

DEFAULT_CHUNK_ROWS = 50_000
#: Bytes read from the source per read call; a header line may take at most 4 of them.
BLOCK_SIZE = 1 << 17
#: Bytes pyarrow parses at a time (a batch of rows), about the most a row may take. pyarrow's
#: reader reads 32 blocks ahead: 4 MiB.
PARSE_BLOCK_SIZE = 1 << 17

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian byte-order mark)"),
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian byte-order mark)"),
    (b"\xfe\xff", "UTF-16 (big-endian byte-order mark FE FF)"),
    (b"\xff\xfe", "UTF-16 (little-endian byte-order mark FF FE)"),
    (b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
    (b"PK\x03\x04", "a zip archive (extract the CSV first)"),
    (b"PAR1", "a Parquet file, not CSV"),
)
_UTF8_BOM = codecs.BOM_UTF8
#: Where an empty line starts: after a line end, at a line end ("\r\n" is one line end).
_EMPTY_LINE = re.compile(rb"(?<=\n)(?=[\r\n])|(?<=\r)(?=\r)")
#: A row put after the last one: pyarrow reports it as a row only if no quoted value is left
#: open at the end of the file, which would otherwise take the rest of the file in silently.
_END_ROW = b"\x00end of file\x00"
_END_ROW_TEXT = _END_ROW.decode()
_RAW_SCHEMA = pyarrow.schema([(column, pyarrow.large_string()) for column in RAW_COLUMNS])


class DataFileError(ValueError):
    """The file as a whole cannot be used; the message names the file and the problem."""


def _name_of(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "path", None) or getattr(source, "name", None)
    return str(name) if isinstance(name, str | os.PathLike) else f"<{type(source).__name__}>"


def _line_breaks(data: bytes) -> int:
    """The number of ``\\n`` in ``data`` (numpy counts them several times faster than bytes.count)."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")))


def _may_hold_empty_lines(data: bytes) -> bool:
    """Whether ``data`` has a line end right after a line end (quoted values may give false alarms)."""
    if b"\r" not in data:  # (the export: one numpy pass instead of a slow two-byte search)
        breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
        return bool((np.diff(breaks) == 1).any())
    return b"\n\n" in data or b"\n\r" in data or b"\r\r" in data


class _EncodedText:
    """A text stream read as UTF-8 bytes."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def read(self, size: int = -1) -> bytes:
        return self._text.read(size).encode("utf-8")


class _CheckedBytes:
    """What pyarrow reads: the source's bytes after the header line, each block checked to be
    UTF-8 (strictly, incrementally) as it is read (an invalid byte is a :class:`DataFileError`
    naming its byte offset and line), with a space put into every empty line."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw = raw
        self._name = name
        self._lock = threading.Lock()  # pyarrow reads on its own thread
        self.closed = False
        self._end_sent = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._pending = b""  # read and checked, not yet handed to pyarrow
        self._last = b"\n"  # the last byte handed to pyarrow (the header's line end at first)
        self.offset = 0  # bytes read from raw
        self.lines = 1  # the line number at self.offset
        self.ended_with_line_break = False
        self.at_end = False

    def check(self, data: bytes, final: bool = False) -> bytes:
        """``data``, the next bytes of the stream, once they are known to be UTF-8."""
        held = self._decoder.getstate()[0]  # the start of a character the last block ended in
        # ASCII (all of the export) is UTF-8 as it is: no decoding unless a character is pending.
        if final or held or not data.isascii():
            try:
                self._decoder.decode(data, final)
            except UnicodeDecodeError as exc:
                scanned = held + data  # what exc.start counts in
                bad = scanned[exc.start : exc.start + 4]
                where = self.offset - len(held) + exc.start
                line = self.lines - held.count(b"\n") + scanned[: exc.start].count(b"\n")
                raise DataFileError(
                    f"{self._name}: not valid UTF-8: byte {bad[:1].hex().upper()} at byte offset {where} "
                    f"(line {line}) {exc.reason}. The file must be UTF-8 text; it may be latin-1/cp1252 "
                    "(re-encode it as UTF-8)"
                ) from None
        self.offset += len(data)
        self.lines += _line_breaks(data)
        if data:
            self.ended_with_line_break = data[-1:] in (b"\n", b"\r")
        return data

    def read_header(self, first: bytes) -> bytes:
        """The header line, from ``first`` (the first block) on; what follows it is read next."""
        buffered = self.check(first).removeprefix(_UTF8_BOM)
        while b"\n" not in buffered and not self.at_end:
            buffered += self.read_block()
            if len(buffered) > 4 * BLOCK_SIZE:
                raise DataFileError(
                    f"{self._name}: no line break in the first {4 * BLOCK_SIZE:,} bytes: not a CSV file"
                )
        line, _, self._pending = buffered.partition(b"\n")
        self._pending = self._pending or self.read_block()
        return line

    @property
    def has_rows(self) -> bool:
        """Whether anything follows the header."""
        return bool(self._pending)

    def read_block(self) -> bytes:
        """The next block of the source, checked (``b""`` at the end)."""
        if self.at_end:
            return b""
        data = self._raw.read(BLOCK_SIZE)
        if not data:
            self.at_end = True
        return self.check(data, final=not data)

    def read(self, size: int = -1) -> bytes:
        """The next block for pyarrow, which reads ahead on a thread of its own: at most ``size``
        bytes, with a line end in it (a row may not span more than two blocks) unless at the end."""
        with self._lock:
            if self.closed:
                return b""
            data, self._pending = self._pending or self.read_block(), b""
            # (a "\r" at the very end is held back below: it may be half of a "\r\n")
            while not self.at_end and data.find(b"\n") < 0 and not -1 < data.find(b"\r") < len(data) - 1:
                data += self.read_block()
            if self.at_end and not self._end_sent:
                data += _END_ROW if self.ended_with_line_break else b"\n" + _END_ROW
                self._end_sent = True
            if 0 <= size < len(data):
                data, self._pending = data[:size], data[size:]
            if len(data) > 1 and data.endswith(b"\r"):
                # pyarrow drops the "\n" of a quoted "\r\n" cut between two blocks
                data, self._pending = data[:-1], b"\r" + self._pending
            if _may_hold_empty_lines(data) or self._last + data[:1] in (b"\n\n", b"\n\r", b"\r\r"):
                data = _EMPTY_LINE.sub(b" ", self._last + data)[len(self._last) :]
            self._last = data[-1:] or self._last
            return data

    def close(self) -> None:
        """No more reads from the source, also none under way when this returns."""
        with self._lock:
            self.closed = True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _check_signature(first: bytes, name: str) -> None:
    if not first.strip():
        raise DataFileError(f"{name}: the file is empty" + (" (only whitespace)" if first else " (0 bytes)"))
    for magic, what in _SIGNATURES:
        if first.startswith(magic):
            raise DataFileError(f"{name}: not UTF-8 CSV text: the file is {what}")
    if b"\x00" in first:
        raise DataFileError(
            f"{name}: not UTF-8 CSV text: it contains NUL bytes (binary data, or UTF-16/UTF-32 "
            "without a byte-order mark)"
        )


def _parse_header(line: str, name: str) -> list[str]:
    fields = [f.strip() for f in next(csv.reader([line]))] if line.strip() else []
    missing = [c for c in RAW_COLUMNS if c not in fields]
    if missing:
        hint = ""
        if len(fields) == 1:
            for sep, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
                if sep in fields[0]:
                    hint = f" The header has no commas but {label}: wrong delimiter, expected ','."
                    break
        raise DataFileError(
            f"{name}: missing required column(s) {', '.join(repr(c) for c in missing)}; "
            f"the header is {line.strip()[:200]!r}, expected {','.join(RAW_COLUMNS)!r}.{hint}"
        )
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    if dupes:
        raise DataFileError(f"{name}: duplicate column name(s) {', '.join(map(repr, dupes))} in the header")
    return fields


class RawCsvReader(Iterator[pd.DataFrame]):
    """Iterator over the chunks of one raw CSV; see the module docstring.

    Creating it reads the first block and checks the file (raising :class:`DataFileError`);
    iterating parses. ``header`` is the file's header, ``extra_columns`` the ignored ones,
    ``warnings`` what the caller should know, ``rows`` the data rows yielded so far and
    ``bad_lines`` the count of unparseable rows. Closes the file at the end only if it opened
    it; usable as a context manager.
    """

    def __init__(self, source: str | os.PathLike[str] | IO[bytes] | IO[str], chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
        self.name = _name_of(source)
        self.chunk_rows = chunk_rows
        self.warnings: list[str] = []
        self.rows = 0
        self.bad_lines = 0
        self._owned: IO[bytes] | None = None
        self._parser: pyarrow.csv.CSVStreamingReader | None = None
        # What pyarrow handed back: how many rows it dropped (blank or long); the short rows to put
        # back and the bad lines, each with the number of data rows before it; _END_ROW seen.
        self._dropped = 0
        self._ended = False
        self._short: collections.deque[tuple[int, pyarrow.Table]] = collections.deque()
        self._bad: collections.deque[tuple[int, tuple[int, str]]] = collections.deque()
        self._carry: pyarrow.Table | None = None  # rows parsed, not in a chunk yet
        self._pieces: Iterator[pyarrow.Table] | None = None
        self._last_row: pd.Series | None = None
        if isinstance(source, str | os.PathLike):
            self._owned = Path(source).open("rb")  # noqa: SIM115 (closed by close())
            source = self._owned
        try:
            self._bytes = self._open(source)
            self._parser = self._open_parser() if self._bytes.has_rows else None
        except pyarrow.ArrowInvalid as exc:
            self.close()
            raise self._parse_error(exc) from exc
        except BaseException:
            self.close()
            raise
        self._pieces = self._rows_in_order()
        self.extra_columns = tuple(c for c in self.header if c not in RAW_COLUMNS)
        if self.extra_columns:
            self.warnings.append(
                f"{self.name}: ignored extra column(s) {', '.join(map(repr, self.extra_columns))}"
            )

    def _open(self, handle: IO[Any]) -> _CheckedBytes:
        """Check the start of the file and read its header; the bytes after the header line."""
        first = handle.read(BLOCK_SIZE)
        if isinstance(first, str):
            handle, first = _EncodedText(handle), first.encode("utf-8")
        _check_signature(first, self.name)
        checked = _CheckedBytes(handle, self.name)
        line = checked.read_header(first)
        self.header = tuple(_parse_header(line.decode("utf-8").rstrip("\r"), self.name))
        return checked

    def _open_parser(self) -> pyarrow.csv.CSVStreamingReader:
        return pyarrow.csv.open_csv(
            self._bytes,
            read_options=pyarrow.csv.ReadOptions(
                column_names=list(self.header), use_threads=False, block_size=PARSE_BLOCK_SIZE
            ),
            parse_options=pyarrow.csv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=self._invalid_row
            ),
            convert_options=pyarrow.csv.ConvertOptions(
                column_types=dict.fromkeys(RAW_COLUMNS, pyarrow.large_string()),
                include_columns=list(RAW_COLUMNS),
                check_utf8=False,  # checked as it was read
            ),
        )

    def _invalid_row(self, row: pyarrow.csv.InvalidRow) -> str:
        """pyarrow's report of a row with the wrong number of fields (``row.number`` counts the
        rows after the header from 1, as pandas does, also the blank ones)."""
        before = row.number - 1 - self._dropped  # the data rows before it
        if row.text == _END_ROW_TEXT:
            self._ended = True
        elif not row.text.strip(" \t"):  # blank: pandas skips these too
            self._dropped += 1
        elif row.actual_columns < row.expected_columns:
            values = dict(zip(self.header, next(csv.reader([row.text])), strict=False))
            fields = {column: [values.get(column, "")] for column in RAW_COLUMNS}
            self._short.append((before, pyarrow.table(fields, schema=_RAW_SCHEMA)))
        else:
            message = f"expected {row.expected_columns} fields, saw {row.actual_columns}"
            self._bad.append((before, (row.number + 1, message)))
            self._dropped += 1
        return "skip"

    def _rows_in_order(self) -> Iterator[pyarrow.Table]:
        """The data rows as pyarrow parsed them, with the short rows put back in their places."""
        position = 0  # data rows yielded
        for batch in self._parser or ():
            table, start = pyarrow.Table.from_batches([batch]), 0
            while self._short and self._short[0][0] - position <= table.num_rows - start:
                before, row = self._short.popleft()
                if before > position:
                    yield table.slice(start, before - position)
                    start, position = start + before - position, before
                yield row
                position += 1
            if start < table.num_rows:
                yield table.slice(start)
                position += table.num_rows - start
        for _, row in self._short:  # after the last row pyarrow kept
            yield row
        if self._parser is not None and not self._ended:
            raise DataFileError(
                f"{self.name}: cannot parse as CSV: a quoted value runs to the end of the file"
            )

    def __iter__(self) -> RawCsvReader:
        return self

    def __next__(self) -> pd.DataFrame:
        if self._pieces is None:
            raise StopIteration
        tables: list[pyarrow.Table] = []
        rows = 0
        try:
            while rows < self.chunk_rows:
                carry = self._carry if self._carry is not None else next(self._pieces, None)
                if carry is None:
                    break
                take = min(self.chunk_rows - rows, carry.num_rows)
                tables.append(carry.slice(0, take))
                rows += take
                self._carry = carry.slice(take) if take < carry.num_rows else None
            # A bad line goes with the chunk of the row after it; those after the last row, last.
            end, bad = self.rows + rows, []
            while self._bad and (self._bad[0][0] < end or rows < self.chunk_rows):
                bad.append(self._bad.popleft()[1])
            if not rows and not bad:
                self.close()
                self._check_complete()
                raise StopIteration
        except pyarrow.ArrowInvalid as exc:
            self.close()
            raise self._parse_error(exc) from exc
        except BaseException:
            self.close()
            raise
        table = pyarrow.concat_tables(tables) if tables else _RAW_SCHEMA.empty_table()
        chunk = table.combine_chunks().to_pandas()
        chunk.index = pd.RangeIndex(self.rows, self.rows + len(chunk))
        chunk.attrs["bad_lines"] = bad
        if len(chunk):
            self._last_row = chunk.iloc[-1]
        self.rows += len(chunk)
        self.bad_lines += len(bad)
        return chunk

    def _parse_error(self, exc: pyarrow.ArrowInvalid) -> DataFileError:
        what = str(exc)
        if "straddl" in what:  # a row that two of pyarrow's blocks do not hold
            what = f"a row longer than {PARSE_BLOCK_SIZE:,} bytes, or a quoted value left open"
        return DataFileError(f"{self.name}: cannot parse as CSV: {what}")

    def _check_complete(self) -> None:
        """A last line without a line end that lacks fields is a file cut off, not one bad row:
        the rows after the cut are missing too, and nothing else would tell."""
        last = self._last_row
        if last is None or self._bytes.ended_with_line_break:
            return
        empty = [column for column in RAW_COLUMNS if not str(last[column]).strip()]
        if empty:
            raise DataFileError(
                f"{self.name}: the file looks truncated: its last line (row {self.rows}) has no line end "
                f"and no {', '.join(empty)}; send the complete file again"
            )

    def close(self) -> None:
        self._pieces = None
        if hasattr(self, "_bytes"):
            self._bytes.close()  # before the caller reads on from the source
        parser, self._parser = self._parser, None
        if parser is not None:
            parser.close()
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> RawCsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_raw_chunks(
    source: str | os.PathLike[str] | IO[bytes] | IO[str], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> RawCsvReader:
    """Chunks of at most ``chunk_rows`` raw rows (all strings, columns ``RAW_COLUMNS``).

    The file is checked now (:class:`DataFileError` for an unusable file); rows are parsed as
    the result is iterated. See the module docstring for what is fatal and what is not.
    """
    return RawCsvReader(source, chunk_rows)


def read_raw(source: str | os.PathLike[str] | IO[bytes] | IO[str]) -> pd.DataFrame:
    """The whole file as one raw DataFrame (for small files and tests). Unparseable lines are
    collected in ``attrs["bad_lines"]``, ignored columns in ``attrs["warnings"]``."""
    with iter_raw_chunks(source) as reader:
        chunks = list(reader)
        if chunks:
            frame = pd.concat(chunks) if len(chunks) > 1 else chunks[0]
        else:
            frame = pd.DataFrame({c: pd.Series(dtype="str") for c in RAW_COLUMNS})
        frame.attrs = {
            "bad_lines": [b for c in chunks for b in c.attrs.get("bad_lines", [])],
            "warnings": list(reader.warnings),
        }
    return frame
