"""Read a raw ``IOT-temp.csv`` (the original or a generated one) in chunks, never all at once.

``iter_raw_chunks(source)`` takes a local path or an open file object (binary, such as an S3
object opened with fsspec/s3fs, or text) and yields DataFrames of at most ``chunk_rows`` rows
with exactly the columns ``RAW_COLUMNS``, every value a string (pandas' ``str`` dtype, backed by
Arrow: no Python object per value; an empty field is ``""``, never NaN, and "NA" stays "NA"). The
index numbers the data rows from 0 across chunks. Only one chunk and one block of the file (plus
the parser's buffer) are in memory at a time.

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
  pairs (line numbers are 1-based physical lines, the header is line 1), which
  :func:`~r3e_testbed.pipeline.validate.validate_chunk` counts as quarantined rows.

Extra columns (not in ``RAW_COLUMNS``) are parsed, so that every row's field count is still
checked, but dropped from the chunks; the reader records a warning naming them in
:attr:`RawCsvReader.warnings` (and :func:`~r3e_testbed.pipeline.validate.validate_file` copies it
into its result), so a changed export layout is visible without failing the run. Columns may
come in any order; chunks always have ``RAW_COLUMNS`` in that order.

How it parses: pandas' C parser (``dtype=str``, ``keep_default_na=False``, ``on_bad_lines="warn"``)
defines the result; pyarrow's CSV parser, several times faster, gives the same result on
ordinary text and parses that. A binary source is read a block (``BLOCK_SIZE``) at a time, each
block's complete lines are parsed by pyarrow, and whatever pyarrow's parse would not read as
pandas does goes to pandas instead:

* a block with a row of the wrong number of fields (short or long) or a whitespace-only line:
  pyarrow refuses it, pandas parses that block (the same rows and ``bad_lines`` as pandas' parse
  of the whole file);
* a quote character, a NUL byte or a carriage return that does not end a line (a quoted value
  may hold a line break, so where a line ends is pandas' to decide): pandas parses the rest of
  the file, from the start of that block, a chunk at a time;
* a text source (``IO[str]``): pandas parses all of it.

``parser="pandas"`` has pandas parse every file (the reference the pyarrow path is tested against).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv

from r3e_testbed.pipeline.schema import RAW_COLUMNS

DEFAULT_CHUNK_ROWS = 50_000
#: Bytes read from the source per read call; also the most a header line may take.
BLOCK_SIZE = 1 << 20

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
_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")

#: Rows of one parse, with the lines that could not be split into the header's fields.
_Piece = tuple[pyarrow.Table, list[tuple[int, str]]]


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


class _Utf8Blocks:
    """The blocks of a binary stream, each checked to be UTF-8 (strictly, incrementally) as it is
    read: an invalid byte is a :class:`DataFileError` naming its byte offset and line."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw = raw
        self._name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.offset = 0  # bytes read from raw
        self.lines = 1  # the line number at self.offset
        self.last = b""  # the last byte read: a complete file ends with a line break
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
        self.last = data[-1:] or self.last
        return data

    def read(self) -> bytes:
        """The next block, checked (``b""`` at the end)."""
        if self.at_end:
            return b""
        data = self._raw.read(BLOCK_SIZE)
        if not data:
            self.at_end = True
            return self.check(b"", final=True)
        return self.check(data)

    @property
    def ended_with_line_break(self) -> bool:
        return self.last in (b"\n", b"\r")


class _TextBlocks:
    """The blocks of a text stream (already decoded by its owner)."""

    def __init__(self, raw: IO[str]) -> None:
        self._raw = raw
        self.last = ""

    def read(self) -> str:
        text = self._raw.read(BLOCK_SIZE)
        self.last = text[-1:] or self.last
        return text

    @property
    def ended_with_line_break(self) -> bool:
        return self.last in ("\n", "\r")


class _TextView(io.TextIOBase):
    """What pandas reads: ``head``, then the text ``next_text`` returns, block by block, until it
    returns None."""

    def __init__(self, head: str, next_text: Callable[[], str | None]) -> None:
        self._pending = head
        self._next_text = next_text
        self._at_end = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        whole = size is None or size < 0
        while (whole or len(self._pending) < size) and not self._at_end:  # type: ignore[operator]
            text = self._next_text()
            if text is None:
                self._at_end = True
            else:
                self._pending += text
        if whole:
            size = len(self._pending)
        text, self._pending = self._pending[:size], self._pending[size:]
        return text


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


def _needs_pandas(data: bytes, end: int) -> bool:
    """Whether ``data[:end]`` holds bytes that pyarrow's parse of the block alone might not read as
    pandas' parse of the file does: a quote (a quoted value may hold a line break, also one where
    the blocks were cut), a NUL byte, or a carriage return that does not end a line."""
    if data.find(b'"', 0, end) >= 0 or data.find(b"\x00", 0, end) >= 0:
        return True
    if data.find(b"\r", 0, end) < 0:  # (the usual block: no need to count them)
        return False
    return data.count(b"\r", 0, end) != data.count(b"\r\n", 0, end)


_RAW_SCHEMA = pyarrow.schema([(column, pyarrow.large_string()) for column in RAW_COLUMNS])


def _table_of(frame: pd.DataFrame) -> pyarrow.Table:
    """The ``RAW_COLUMNS`` of a frame pandas parsed, as the Arrow table pyarrow's parse gives."""
    columns = [pyarrow.array(frame[column], type=pyarrow.large_string()) for column in RAW_COLUMNS]
    return pyarrow.Table.from_arrays(columns, schema=_RAW_SCHEMA)


def _rows_before(lines: list[bytes], skipped: list[int], rows: int) -> list[int] | None:
    """For each skipped line (an index into ``lines``, ascending) the number of rows that the lines
    before it gave, counted as pandas parses lines without quotes: each line gives a row but the
    skipped ones and those of nothing but spaces and tabs (blank). None unless that makes
    ``rows`` rows in all."""
    counts: list[int] = []
    counted = position = 0
    for index in [*skipped, len(lines)]:
        if not position <= index <= len(lines):
            return None
        counted += sum(1 for line in lines[position:index] if line.strip(b" \t\r"))
        counts.append(counted)
        position = index + 1
    return counts[:-1] if counted == rows else None


@dataclass(frozen=True)
class _Lines:
    """Whole lines, ``data[:end]``, the first of them physical line ``line``, for pandas to parse:
    the block's lines, or with ``end=None`` everything from there to the end of the file."""

    data: bytes
    end: int | None
    line: int


def _parse_blocks(
    blocks: _Utf8Blocks, header: tuple[str, ...], rest: bytes, line: int
) -> Iterator[pyarrow.Table | _Lines]:
    """Read the blocks after the header (``rest``: the part of the last one read, at physical line
    ``line``) and parse each one's complete lines with pyarrow: a ``pyarrow.Table`` per block, or
    the block's :class:`_Lines` for pandas where pyarrow's parse would part from pandas' (see the
    module docstring); after lines to the end of the file for pandas, no more blocks are read."""
    read_options = pyarrow.csv.ReadOptions(column_names=list(header), use_threads=False)
    convert_options = pyarrow.csv.ConvertOptions(
        column_types=dict.fromkeys(RAW_COLUMNS, pyarrow.large_string()),
        include_columns=list(RAW_COLUMNS),
        check_utf8=False,  # checked as it was read
    )
    while True:
        block = blocks.read()
        data = rest + block if rest else block
        end = data.rfind(b"\n") + 1 if block else len(data)  # at the end, the last line counts too
        if not end:
            if not block:
                return
            rest = data  # no line end yet: a line longer than a block
            continue
        if _needs_pandas(data, end):
            yield _Lines(data, None, line)
            return
        try:
            table = pyarrow.csv.read_csv(
                pyarrow.py_buffer(data).slice(0, end),
                read_options=read_options,
                convert_options=convert_options,
            )
        except pyarrow.ArrowInvalid:  # a row with the wrong number of fields
            yield _Lines(data, end, line)
        else:
            yield table
        if not block:
            return
        # the rest after the last line break holds none: it starts at the line read up to
        rest, line = data[end:], blocks.lines


class RawCsvReader(Iterator[pd.DataFrame]):
    """Iterator over the chunks of one raw CSV; see the module docstring.

    Creating it reads the first block and checks the file (raising :class:`DataFileError`);
    iterating parses. ``header`` is the file's header, ``extra_columns`` the ignored ones,
    ``warnings`` what the caller should know, ``rows`` the data rows yielded so far and
    ``bad_lines`` the count of unparseable rows. ``parser="pandas"`` parses with pandas only.
    Closes the file at the end only if it opened it; usable as a context manager.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | IO[bytes] | IO[str],
        chunk_rows: int,
        *,
        parser: Literal["pyarrow", "pandas"] = "pyarrow",
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
        if parser not in ("pyarrow", "pandas"):
            raise ValueError(f"parser must be 'pyarrow' or 'pandas', got {parser!r}")
        self.name = _name_of(source)
        self.chunk_rows = chunk_rows
        self.warnings: list[str] = []
        self.rows = 0
        self.bad_lines = 0
        self._owned: IO[bytes] | None = None
        self._parser: Iterator[_Piece] | None = None  # the parsed pieces, in file order
        self._carry: pyarrow.Table | None = None  # rows of the last piece not in a chunk yet
        self._last_row: pd.Series | None = None
        if isinstance(source, str | os.PathLike):
            self._owned = Path(source).open("rb")  # noqa: SIM115 (closed by close())
            handle: IO[Any] = self._owned
        else:
            handle = source
        try:
            rest = self._open(handle)
        except BaseException:
            self.close()
            raise
        self.extra_columns = tuple(c for c in self.header if c not in RAW_COLUMNS)
        if self.extra_columns:
            self.warnings.append(
                f"{self.name}: ignored extra column(s) {', '.join(map(repr, self.extra_columns))}"
            )
        # pandas takes the number of fields from the first data line when given names: a first
        # row with surplus fields would silently shift or truncate. A probe line of the header's
        # width goes first (and is dropped again), so surplus fields are reported for every row.
        self._probe_line = "," * (len(self.header) - 1) + "\n"
        if isinstance(rest, str):
            self._parser = self._pandas_pieces(_TextView(self._probe_line + rest, self._next_text), 2)
        elif parser == "pandas":
            self._parser = self._pandas_pieces(self._decoded(rest), 2)
        else:
            self._parser = self._arrow_pieces(rest, 2)

    def _open(self, handle: IO[Any]) -> bytes | str:
        """Check the start of the file and read its header; what follows the header line."""
        first = handle.read(BLOCK_SIZE)
        self._blocks: _Utf8Blocks | _TextBlocks
        if isinstance(first, str):
            if not first.strip():
                raise DataFileError(f"{self.name}: the file is empty")
            self._blocks = _TextBlocks(handle)
            self._blocks.last = first[-1:]
            buffered: bytes | str = first.removeprefix("\ufeff")
            newline: bytes | str = "\n"
        else:
            _check_signature(first, self.name)
            self._blocks = _Utf8Blocks(handle, self.name)
            buffered, newline = self._blocks.check(first).removeprefix(_UTF8_BOM), b"\n"
        while newline not in buffered:
            block = self._blocks.read()
            if not block:
                break
            buffered += block  # type: ignore[operator]
            if len(buffered) > 4 * BLOCK_SIZE:
                raise DataFileError(f"{self.name}: no line break in the first 4 MiB: not a CSV file")
        line, _, rest = buffered.partition(newline)  # type: ignore[arg-type]
        text = line if isinstance(line, str) else line.decode("utf-8")
        self.header = tuple(_parse_header(text.rstrip("\r"), self.name))
        return rest

    def _next_text(self) -> str | None:
        return self._blocks.read() or None  # type: ignore[return-value]

    def _decoded(self, head: bytes) -> _TextView:
        """The probe line, ``head`` and the rest of the binary stream, as text."""
        decoder = codecs.getincrementaldecoder("utf-8")("strict")  # all checked as it is read

        def next_text() -> str | None:
            data = self._blocks.read()
            return decoder.decode(data) if data else None

        return _TextView(self._probe_line + decoder.decode(head), next_text)

    def _arrow_pieces(self, rest: bytes, line: int) -> Iterator[_Piece]:
        """The pieces of the blocks as :func:`_parse_blocks` parsed them; what pyarrow left to
        pandas is parsed by pandas here."""
        rows = 0
        for item in _parse_blocks(self._blocks, self.header, rest, line):
            if isinstance(item, pyarrow.Table):
                rows += item.num_rows
                yield item, []
            elif item.end is not None:
                for piece in self._parse_with_pandas(item):
                    rows += piece[0].num_rows
                    yield piece
            else:  # pandas parses the rest of the file
                yield from self._pandas_pieces(self._decoded(item.data), item.line, rows)

    def _parse_with_pandas(self, lines: _Lines) -> Iterator[_Piece]:
        """The rows of lines that pyarrow refused (a row with the wrong number of fields). They
        come in pieces cut where pandas skipped a line, each skipped line with the rows after it:
        in the chunk of the next row, where pandas' parse of the whole file reports it."""
        assert lines.end is not None
        text = io.StringIO(self._probe_line + lines.data[: lines.end].decode("utf-8"))
        frame, bad = self._pandas_read(lambda: pd.read_csv(text, **self._pandas_options()), lines.line)
        assert frame is not None  # (read_csv without chunksize does not raise StopIteration)
        table = _table_of(frame.iloc[1:])
        split = lines.data[: lines.end].split(b"\n")
        cuts = _rows_before(split, [number - lines.line for number, _ in bad], table.num_rows)
        if not bad or cuts is None:  # (None: pandas counted otherwise; all with the first row)
            yield table, bad
            return
        if cuts[0]:
            yield table.slice(0, cuts[0]), []
        for skipped, start, stop in zip(bad, cuts, [*cuts[1:], table.num_rows], strict=True):
            yield table.slice(start, stop - start), [skipped]

    def _pandas_options(self) -> dict[str, Any]:
        return {
            "header": None,
            "names": list(self.header),  # no usecols: with it, pandas drops surplus fields silently
            "dtype": str,
            "keep_default_na": False,
            "index_col": False,
            "on_bad_lines": "warn",
            "engine": "c",
        }

    def _pandas_pieces(self, text: _TextView, line: int, rows_before: int = 0) -> Iterator[_Piece]:
        """pandas parses ``text`` (the probe line, then the file from physical line ``line`` on, after
        ``rows_before`` rows), a chunk at a time: pieces that end where chunks end, so that the
        lines pandas skips while reading a chunk's rows are in that chunk, as when it reads all."""
        parser = pd.read_csv(text, chunksize=self.chunk_rows, **self._pandas_options())
        try:
            first = True
            while True:
                size = self.chunk_rows - rows_before % self.chunk_rows + 1 if first else self.chunk_rows
                frame, bad = self._pandas_read(lambda size=size: parser.get_chunk(size), line)
                if frame is None:  # the end; the last read may still have skipped lines
                    if bad:
                        yield _RAW_SCHEMA.empty_table(), bad
                    return
                if first:  # with the probe row
                    frame, first = frame.iloc[1:], False
                yield _table_of(frame), bad
        finally:
            parser.close()

    def _pandas_read(
        self, read: Callable[[], pd.DataFrame], line: int
    ) -> tuple[pd.DataFrame | None, list[tuple[int, str]]]:
        """``read()`` (None if it raised StopIteration) and the lines pandas skipped meanwhile, by
        their physical line numbers; pandas reads from physical line ``line`` on."""
        frame: pd.DataFrame | None = None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                with contextlib.suppress(StopIteration):  # the end: frame stays None
                    frame = read()
        except (pd.errors.ParserError, csv.Error) as exc:
            where = f" (pandas counts the rows from line {line} on)" if line > 2 else ""
            raise DataFileError(f"{self.name}: cannot parse as CSV: {exc}{where}") from exc
        bad: list[tuple[int, str]] = []
        for item in caught:
            if not issubclass(item.category, pd.errors.ParserWarning):
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
                continue
            found = [(int(m[1]), m[2]) for m in _BAD_LINE.finditer(str(item.message))]
            if not found:  # e.g. "... leads to a loss of data": never accept that silently
                raise DataFileError(f"{self.name}: cannot parse as CSV: {item.message}")
            bad.extend(found)
        # pandas numbers the lines it sees from 1: the probe line stands in for line - 1.
        return frame, [(number + line - 2, message) for number, message in bad]

    def __iter__(self) -> RawCsvReader:
        return self

    def __next__(self) -> pd.DataFrame:
        if self._parser is None:
            raise StopIteration
        tables: list[pyarrow.Table] = []
        bad: list[tuple[int, str]] = []
        rows = 0
        try:
            while rows < self.chunk_rows:
                if self._carry is None:
                    piece = next(self._parser, None)
                    if piece is None:
                        break
                    self._carry, piece_bad = piece
                    bad.extend(piece_bad)  # in the chunk that the piece's first row goes to
                carry = self._carry
                take = min(self.chunk_rows - rows, carry.num_rows)
                if take:
                    tables.append(carry.slice(0, take))
                    rows += take
                self._carry = carry.slice(take) if take < carry.num_rows else None
            if not rows and not bad:
                self.close()
                self._check_complete()
                raise StopIteration
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

    def _check_complete(self) -> None:
        """A last line without a line end that lacks fields is a file cut off, not one bad row:
        the rows after the cut are missing too, and nothing else would tell."""
        last = self._last_row
        if last is None or self._blocks.ended_with_line_break:
            return
        empty = [column for column in RAW_COLUMNS if not str(last[column]).strip()]
        if empty:
            raise DataFileError(
                f"{self.name}: the file looks truncated: its last line (row {self.rows}) has no line end "
                f"and no {', '.join(empty)}; send the complete file again"
            )

    def close(self) -> None:
        parser = getattr(self, "_parser", None)
        if parser is not None:
            self._parser = None
            parser.close()  # type: ignore[attr-defined]
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> RawCsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_raw_chunks(
    source: str | os.PathLike[str] | IO[bytes] | IO[str],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    parser: Literal["pyarrow", "pandas"] = "pyarrow",
) -> RawCsvReader:
    """Chunks of at most ``chunk_rows`` raw rows (all strings, columns ``RAW_COLUMNS``).

    The file is checked now (:class:`DataFileError` for an unusable file); rows are parsed as
    the result is iterated. See the module docstring for what is fatal and what is not, and for
    ``parser``.
    """
    return RawCsvReader(source, chunk_rows, parser=parser)


def read_raw(
    source: str | os.PathLike[str] | IO[bytes] | IO[str], *, parser: Literal["pyarrow", "pandas"] = "pyarrow"
) -> pd.DataFrame:
    """The whole file as one raw DataFrame (for small files and tests). Unparseable lines are
    collected in ``attrs["bad_lines"]``, ignored columns in ``attrs["warnings"]``."""
    with iter_raw_chunks(source, parser=parser) as reader:
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
