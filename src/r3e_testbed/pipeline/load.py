"""Read a raw ``IOT-temp.csv`` (the original or a generated one) in chunks, never all at once.

``iter_raw_chunks(source)`` takes a local path or an open file object (binary, such as an S3
object opened with fsspec/s3fs, or text) and yields DataFrames of at most ``chunk_rows`` rows
with exactly the columns ``RAW_COLUMNS``, every value a string (``dtype=str``,
``keep_default_na=False``: an empty field is ``""``, never NaN, and "NA" stays "NA"). The index
numbers the data rows from 0 across chunks. Only one chunk and pandas' parse buffer are in
memory at a time.

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
* a row with more fields than the header cannot be parsed into columns: pandas skips it, and
  the reader records it in the chunk's ``attrs["bad_lines"]`` as ``(line_number, message)``
  pairs (line numbers are 1-based physical lines, the header is line 1), which
  :func:`~r3e_testbed.pipeline.validate.validate_chunk` counts as quarantined rows.

Extra columns (not in ``RAW_COLUMNS``) are parsed, so that every row's field count is still
checked, but dropped from the chunks; the reader records a warning naming them in
:attr:`RawCsvReader.warnings` (and :func:`~r3e_testbed.pipeline.validate.validate_file` copies it
into its result), so a changed export layout is visible without failing the run. Columns may
come in any order; chunks always have ``RAW_COLUMNS`` in that order.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

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
_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")


class DataFileError(ValueError):
    """The file as a whole cannot be used; the message names the file and the problem."""


def _name_of(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "path", None) or getattr(source, "name", None)
    return str(name) if isinstance(name, str | os.PathLike) else f"<{type(source).__name__}>"


class _Utf8Text(io.TextIOBase):
    """A text view of a binary stream: strict incremental UTF-8 decoding that reports the byte
    offset and line of an invalid byte as a :class:`DataFileError`."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw = raw
        self._name = name
        self._block_size = BLOCK_SIZE
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._pending = ""  # decoded, not yet handed out
        self._offset = 0  # bytes consumed from raw
        self._lines = 1  # line number at self._offset
        self._eof = False
        self.last_char = ""  # of everything decoded: a complete file ends with "\n"

    def readable(self) -> bool:
        return True

    def decode(self, data: bytes, final: bool) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            bad = data[exc.start : exc.start + 4]
            where = self._offset + exc.start
            line = self._lines + data[: exc.start].count(b"\n")
            raise DataFileError(
                f"{self._name}: not valid UTF-8: byte {bad[:1].hex().upper()} at byte offset {where} "
                f"(line {line}) {exc.reason}. The file must be UTF-8 text; it may be latin-1/cp1252 "
                "(re-encode it as UTF-8)"
            ) from None
        self._offset += len(data)
        self._lines += data.count(b"\n")
        self.last_char = text[-1:] or self.last_char
        return text

    def read_block(self) -> str:
        """The next decoded block ('' at the end)."""
        while not self._eof:
            data = self._raw.read(self._block_size)
            if not data:
                self._eof = True
                return self.decode(b"", final=True)
            text = self.decode(data, final=False)
            if text:
                return text
        return ""

    def unread(self, text: str) -> None:
        self._pending = text + self._pending

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            parts = [self._pending]
            self._pending = ""
            while block := self.read_block():
                parts.append(block)
            return "".join(parts)
        while len(self._pending) < size and not self._eof:
            self._pending += self.read_block()
        text, self._pending = self._pending[:size], self._pending[size:]
        return text


class _PlainText(_Utf8Text):
    """The same interface over a stream that is already text."""

    def read_block(self) -> str:
        if self._eof:
            return ""
        text = self._raw.read(self._block_size)
        if not text:
            self._eof = True
        self.last_char = text[-1:] or self.last_char
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
        self._probe = True
        if isinstance(source, str | os.PathLike):
            self._owned = Path(source).open("rb")  # noqa: SIM115 (closed by close())
            handle: IO[Any] = self._owned
        else:
            handle = source
        try:
            self._text = self._open_text(handle)
            self.header = tuple(self._read_header())
        except BaseException:
            self.close()
            raise
        self.extra_columns = tuple(c for c in self.header if c not in RAW_COLUMNS)
        if self.extra_columns:
            self.warnings.append(
                f"{self.name}: ignored extra column(s) {', '.join(map(repr, self.extra_columns))}"
            )
        self._parser = pd.read_csv(
            self._text,
            header=None,
            names=list(self.header),  # no usecols: with it, pandas drops surplus fields silently
            dtype=str,
            keep_default_na=False,
            index_col=False,
            on_bad_lines="warn",
            chunksize=chunk_rows,
            engine="c",
        )

    def _open_text(self, handle: IO[Any]) -> _Utf8Text:
        first = handle.read(BLOCK_SIZE)
        if isinstance(first, str):
            text: _Utf8Text = _PlainText(handle, self.name)
            if not first.strip():
                raise DataFileError(f"{self.name}: the file is empty")
            text.unread(first.removeprefix("\ufeff"))
            return text
        _check_signature(first, self.name)
        text = _Utf8Text(handle, self.name)
        text.unread(text.decode(first, final=False).removeprefix("\ufeff"))
        return text

    def _read_header(self) -> list[str]:
        buffered = ""
        while "\n" not in buffered:
            block = self._text.read(BLOCK_SIZE)
            if not block:
                break
            buffered += block
            if len(buffered) > 4 * BLOCK_SIZE:
                raise DataFileError(f"{self.name}: no line break in the first 4 MiB: not a CSV file")
        line, _, rest = buffered.partition("\n")
        header = _parse_header(line.rstrip("\r"), self.name)
        # pandas takes the number of fields from the first data line when given names: a first
        # row with surplus fields would silently shift or truncate. A probe line of the header's
        # width goes first (and is dropped again), so surplus fields are reported for every row.
        self._text.unread("," * (len(header) - 1) + "\n" + rest)
        return header

    def __iter__(self) -> RawCsvReader:
        return self

    def __next__(self) -> pd.DataFrame:
        while True:
            chunk = self._next_chunk()
            if len(chunk) or chunk.attrs["bad_lines"]:  # pandas may yield an empty last chunk
                return chunk

    def _next_chunk(self) -> pd.DataFrame:
        if self._parser is None:
            raise StopIteration
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                if self._probe:  # the first chunk starts with the probe line
                    chunk = self._parser.get_chunk(self.chunk_rows + 1).iloc[1:]
                    self._probe = False
                else:
                    chunk = self._parser.get_chunk(self.chunk_rows)
        except StopIteration:
            self.close()
            self._check_complete()
            raise
        except DataFileError:
            self.close()
            raise
        except (pd.errors.ParserError, csv.Error) as exc:
            self.close()
            raise DataFileError(f"{self.name}: cannot parse as CSV: {exc}") from exc
        bad: list[tuple[int, str]] = []
        for item in caught:
            if not issubclass(item.category, pd.errors.ParserWarning):
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
                continue
            found = [(int(m[1]), m[2]) for m in _BAD_LINE.finditer(str(item.message))]
            if not found:  # e.g. "... leads to a loss of data": never accept that silently
                self.close()
                raise DataFileError(f"{self.name}: cannot parse as CSV: {item.message}")
            # pandas numbers the lines it sees from 1: the probe line stands in for the header.
            bad.extend(found)
        chunk = chunk[list(RAW_COLUMNS)]
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
        last = getattr(self, "_last_row", None)
        if last is None or self._text.last_char in ("\n", "\r"):
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
            parser.close()
            self._parser = None
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
