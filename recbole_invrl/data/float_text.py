"""Numeric text of atomic files: ``float_seq`` columns parsed fast and exactly.

RecBole parses ``float_seq`` cells one Python float at a time. Here

* a file is read as bytes, about ``CHUNK_BYTES`` of whole lines at a time, into one reused
  buffer (``_line_chunks``); the runs of bytes between separators of a chunk ("gaps",
  ``_Gaps``) are all parsed as numbers at once, and each float_seq field takes the gaps in
  its span of each line, straight into one preallocated float32 matrix (``_DenseColumn``);
* numbers ``[+-]digits[.digits]`` of up to 16 bytes are read with SWAR arithmetic on
  uint64 words, those with an exponent with byte-matrix passes (``number_text``): the
  digits as one integer below 2**53 times or over one exact power of ten, which is
  bit-identical to ``float(text)``;
* the rest falls back: nan, inf and 17+ digit numbers to numpy's C text parser
  (``_parse_slowly``); lines with quotes, multi-byte separators or an encoding that is not
  ASCII-compatible to pandas, which splits them (``_read_with_pandas_from``);
* whatever cannot be used (not a number, a row of another width, NaN/inf, extra fields)
  raises ``FeatureFileError`` naming the file, field and line.

``parse_float_seq`` parses in-memory cells the same way.

Why not numpy's or pandas' parsers: on a first load of a Kwai-shaped item file, pandas'
C reader with ``np.fromstring`` on its cells takes more than twice as long as this module
and holds about three times the memory while parsing (``bench/bench_feature_loading.py``
prints both, as its ``numpy`` variant; figures in docs/data.md).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import as_strided
from recbole.utils import FeatureType

from recbole_invrl.data.number_text import fromstring, is_float, parse_plain, parse_scientific

HEADER_LINES = 1  # atomic files: line 1 is the header, data starts on line 2
CHUNK_BYTES = 4 << 20  # bytes of text parsed per step
PANDAS_CHUNK_ROWS = 2048  # rows per step where pandas has to split the lines


class FeatureFileError(ValueError):
    """An atomic feature file that cannot be used as it is."""


# -- reading a file with float_seq columns in chunks of lines ----------------------------
#
# Offsets below are into ``padded``: _PAD zero bytes, then the chunk's text (whole lines).
# A chunk's "gaps" are the runs of bytes between separator bytes (numbers, words or
# nothing); all of them are parsed as numbers at once, then each float_seq field takes
# the gaps inside its span of each line.

_PAD = 16  # zero bytes before the text: a number's 16-byte window never starts before 0


@dataclass
class _Layout:
    """Where the loaded columns sit in each line, and how to split lines and values."""

    filepath: str
    n_columns: int
    positions: dict[str, int]  # loaded field -> column index in the file
    dense_fields: list[str]
    text_fields: list[str]
    field_separator: str
    seq_separator: str
    encoding: str

    @classmethod
    def from_config(cls, filepath, header, fields, config) -> _Layout:
        index = {name: i for i, (name, _) in enumerate(header)}
        return cls(
            filepath=str(filepath),
            n_columns=len(header),
            positions={name: index[name] for name, _ in fields},
            dense_fields=[n for n, t in fields if t == FeatureType.FLOAT_SEQ],
            text_fields=[n for n, t in fields if t != FeatureType.FLOAT_SEQ],
            field_separator=config["field_separator"],
            seq_separator=config["seq_separator"],
            encoding=config["encoding"] or "utf-8",  # as pandas reads it
        )

    def splits_as_bytes(self) -> bool:
        """Whether lines can be split on raw bytes: distinct one-byte ASCII separators and an
        ASCII-compatible encoding (otherwise pandas splits them)."""
        probe = "\t\n\r ,;|:.-+eE0123456789"
        try:
            compatible = probe.encode(self.encoding) == probe.encode("ascii")
        except LookupError:
            return False
        separators = (self.field_separator, self.seq_separator)
        single = all(len(s) == 1 and s.isascii() and s not in '\n\r"' for s in separators)
        return compatible and single and self.field_separator != self.seq_separator


class _Workspace:
    """Arrays reused from chunk to chunk (fresh memory costs a page fault per 4 KiB)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, n: int, dtype) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or len(array) < n:
            array = self._arrays[name] = np.empty(n + n // 4 + 1024, dtype)
        return array[:n]


@dataclass
class _Gaps:
    """The gaps of a chunk: where each ends (its separator), its length, its value as a
    number where ``parse_plain`` could read one."""

    padded: np.ndarray
    ends: np.ndarray
    lengths: np.ndarray
    values: np.ndarray
    ok: np.ndarray

    @classmethod
    def scan(cls, padded: np.ndarray, separators: Iterable[int], work: _Workspace) -> _Gaps:
        """Gaps between bytes <= 32 (blanks, tabs, newlines) or in ``separators``."""
        text = padded[_PAD:]
        mask = np.less_equal(text, 32, out=work("mask", len(text), bool))
        for byte in separators:
            if byte > 32:
                mask |= text == byte
        ends = np.flatnonzero(mask)
        ends += _PAD
        lengths = work("lengths", len(ends), np.int64)
        if len(ends):
            lengths[0] = ends[0] - _PAD
            np.subtract(ends[1:], ends[:-1], out=lengths[1:])
            lengths[1:] -= 1
        values, ok = work("values", len(ends), np.float64), work("ok", len(ends), bool)
        parse_plain(padded, ends, lengths, values, ok)
        return cls(padded, ends, lengths, values, ok)

    def spans(self, begin: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first gap, number of gaps) of each span; ``end`` is the separator closing it."""
        first = np.searchsorted(self.ends, begin)
        return first, np.searchsorted(self.ends, end) - first + 1


def _read_dense_file(
    filepath, layout: _Layout, columns: dict[str, _DenseColumn], cells: dict[str, list]
) -> None:
    """Fill ``columns`` (float_seq) and ``cells`` (other fields) from the file: split on
    bytes where possible; pandas takes over for the rest of the file at a quote character
    (quoting is pandas' business), or for the whole file if ``layout`` needs it."""
    if not layout.splits_as_bytes():
        _read_with_pandas_from(filepath, layout, columns, cells)
        return
    work = _Workspace()
    line = 1 + HEADER_LINES
    with open(filepath, "rb") as f:
        f.readline()
        for padded, buffer, offset in _line_chunks(f):
            if buffer.find(b'"', _PAD, len(padded)) >= 0:
                _read_with_pandas_from(filepath, layout, columns, cells, offset, line)
                return
            line = _read_byte_chunk(padded, buffer, layout, line, columns, cells, work)


def _line_chunks(f) -> Iterator[tuple[np.ndarray, bytearray, int]]:
    """(padded, the bytearray under it, file offset of its text): whole lines, about
    CHUNK_BYTES at a time, read into one reused buffer (valid until the next chunk)."""
    buffer = bytearray(_PAD + 2 * CHUNK_BYTES)
    offset, kept = f.tell(), 0  # kept: bytes of an unfinished line at buffer[_PAD:]
    while True:
        if _PAD + kept + CHUNK_BYTES + 1 > len(buffer):  # a very long line: a bigger buffer
            buffer = bytearray(buffer[: _PAD + kept]) + bytearray(kept + 2 * CHUNK_BYTES)
        start = _PAD + kept
        with memoryview(buffer) as view:
            read = f.readinto(view[start : start + CHUNK_BYTES])
        size = start + read
        if read == 0:
            if not kept:
                return
            buffer[size] = ord("\n")  # a last line without a newline
            size += 1
        cut = buffer.rfind(b"\n", _PAD, size) + 1
        if cut == 0:
            kept = size - _PAD
            continue
        yield np.frombuffer(buffer, dtype=np.uint8, count=cut), buffer, offset
        offset += cut - _PAD
        kept = size - cut
        buffer[_PAD : _PAD + kept] = buffer[cut:size]


def _read_byte_chunk(padded, buffer, layout: _Layout, line: int, columns, cells, work) -> int:
    """Parse one chunk of lines; returns the number of the line after it."""
    gaps = _Gaps.scan(padded, (ord(layout.field_separator), ord(layout.seq_separator)), work)
    kinds = padded[gaps.ends]
    newlines = gaps.ends[kinds == 10]
    starts = np.concatenate(([_PAD], newlines[:-1] + 1))
    ends = newlines - (padded[newlines - 1] == 13) * (newlines > starts)  # drop a '\r'
    filled = np.flatnonzero(ends > starts)  # pandas skips blank lines
    lines = filled + line
    field_seps = gaps.ends[kinds == ord(layout.field_separator)]
    spans = _field_spans(field_seps, starts[filled], ends[filled], lines, layout)
    for name in layout.text_fields:
        begin, end = (a.tolist() for a in spans[name])
        cells[name].extend(buffer[b:e].decode(layout.encoding) for b, e in zip(begin, end))
    for name in layout.dense_fields:
        columns[name].add(gaps, *spans[name], lines, len(padded) - _PAD)
    return line + len(newlines)


def _field_spans(
    field_seps, starts, ends, lines, layout: _Layout
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(begin, end) offsets of each loaded field in each line; missing trailing fields are
    empty (as pandas reads them), extra fields an error."""
    first = np.searchsorted(field_seps, starts)
    n_seps = np.searchsorted(field_seps, ends) - first
    extra = np.flatnonzero(n_seps >= layout.n_columns)
    if extra.size:
        row = int(extra[0])
        raise FeatureFileError(
            f"{layout.filepath}: line {lines[row]} has {n_seps[row] + 1} fields; the header "
            f"names {layout.n_columns}"
        )
    seps = np.concatenate((field_seps, [0]))
    spans = {}
    for name, pos in layout.positions.items():
        begin = starts if pos == 0 else np.where(n_seps >= pos, seps[first + pos - 1] + 1, ends)
        end = np.where(n_seps > pos, seps[np.minimum(first + pos, len(field_seps))], ends)
        spans[name] = (begin, end)
    return spans


def _ranges(first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(f, f + c)`` for each (f, c)."""
    if len(first) and (count == count[0]).all():
        return (first[:, None] + np.arange(count[0])).ravel()
    offsets = np.cumsum(count) - count
    return np.arange(int(count.sum())) - np.repeat(offsets - first, count)


def _regular_view(array: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray | None:
    """``array[f:f + c]`` of each span as the rows of a strided view, if all spans have the
    same length and start at evenly spaced gaps (e.g. one id, then the numbers, per line)."""
    if len(first) == 0 or (count != count[0]).any():
        return None
    step = int(first[1] - first[0]) if len(first) > 1 else int(count[0])
    if step < count[0] or (np.diff(first) != step).any():
        return None
    base = array[first[0] :]
    size = base.strides[0]
    return as_strided(base, shape=(len(first), int(count[0])), strides=(step * size, size))


class _DenseColumn:
    """One float_seq column, filled chunk by chunk into a float32 matrix; the width is that
    of the first non-empty row. The matrix is sized from the first chunk's rows per byte
    with room to spare (zeroed memory costs nothing until written) and grows if needed."""

    def __init__(self, filepath, field: str, file_bytes: int = 0) -> None:
        self.filepath, self.field, self.file_bytes = filepath, field, file_bytes
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.lengths: list[np.ndarray] = []
        self.rows = 0
        self.width: int | None = None
        self.width_line = 0
        self.bad_lines: list[np.ndarray] = []

    def add(self, gaps: _Gaps, begin, end, lines, nbytes: int = 0) -> None:
        """Parse and store the rows whose numbers lie in ``[begin, end)`` of each line."""
        first, count = gaps.spans(begin, end)
        expected = len(count) * self.file_bytes // max(nbytes, 1)
        values = _regular_view(gaps.values, first, count)
        if values is not None and _regular_view(gaps.ok, first, count).all():
            counts, bad_rows = count, np.zeros(0, np.int64)
            if not _regular_view(gaps.lengths, first, count).all():  # an empty gap: "1  2"
                values, counts, bad_rows = self._parse_rows(gaps, first, count, lines)
        else:
            values, counts, bad_rows = self._parse_rows(gaps, first, count, lines)
        self._store(values, counts, lines, expected)
        self.bad_lines.append(lines[bad_rows])

    def _parse_rows(
        self, gaps: _Gaps, first, count, lines
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The general case: gather the non-empty gaps of each span, read what the fast
        parser left; (values of all rows, values per row, rows holding NaN/inf)."""
        index = _ranges(first, count)
        filled = gaps.lengths[index] > 0
        counts = np.add.reduceat(filled, np.cumsum(count) - count) if len(count) else count
        index = index[filled]
        values = gaps.values[index]
        slow = np.flatnonzero(~gaps.ok[index])
        if not slow.size:
            return values, counts, np.zeros(0, np.int64)
        row = np.searchsorted(np.cumsum(counts), slow, side="right")
        end, length = gaps.ends[index[slow]], gaps.lengths[index[slow]]
        values[slow] = _parse_rest(gaps.padded, end, length, lines[row], self.filepath, self.field)
        finite = np.isfinite(values[slow].astype(np.float32))
        return values, counts, np.unique(row[~finite])

    def _store(self, values, counts: np.ndarray, lines: np.ndarray, expected: int) -> None:
        if self.width is None and (counts > 0).any():
            first = int(np.argmax(counts > 0))
            self.width, self.width_line = int(counts[first]), int(lines[first])
        width = self.width or 0
        ragged = np.flatnonzero((counts != width) & (counts != 0))
        if ragged.size:
            row = int(ragged[0])
            raise FeatureFileError(
                f"{self.filepath}: field '{self.field}' (float_seq) line {lines[row]} has "
                f"{counts[row]} values; expected {width} like the other rows "
                f"(line {self.width_line})"
            )
        self._reserve(self.rows + len(counts), width, expected)
        block = self.matrix[self.rows : self.rows + len(counts)]
        if width and (counts == width).all():
            block[:] = values.reshape(-1, width)
        elif width:
            block[counts == width] = values.reshape(-1, width)
        self.lengths.append(np.asarray(counts, dtype=np.int64))
        self.rows += len(counts)

    def _reserve(self, rows: int, width: int, expected: int) -> None:
        if rows <= len(self.matrix) and width == self.matrix.shape[1]:
            return
        capacity = max(rows, 2 * len(self.matrix), expected * 3 // 2 + 1024)
        grown = np.zeros((capacity, width), dtype=np.float32)
        if width == self.matrix.shape[1]:  # else all rows so far were empty
            grown[: self.rows] = self.matrix[: self.rows]
        self.matrix = grown

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(matrix, lengths); raises on NaN/inf, warns about empty rows."""
        bad = np.concatenate(self.bad_lines) if self.bad_lines else np.zeros(0, np.int64)
        if bad.size:
            raise FeatureFileError(
                f"{self.filepath}: field '{self.field}' (float_seq) line {bad[0]} holds "
                f"NaN or inf ({bad.size} such rows); features must be finite"
            )
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        matrix = self.matrix[: self.rows, : self.width or 0]
        empty = int((lengths == 0).sum())
        if empty and self.width:
            warnings.warn(
                f"{self.filepath}: field '{self.field}': {empty} empty rows are read as "
                "zero vectors"
            )
        return matrix, lengths


# -- pandas splits the lines: quoted fields, multi-byte separators, other encodings ------


def _read_with_pandas_from(
    filepath, layout: _Layout, columns, cells, offset: int = 0, line: int = 1 + HEADER_LINES
) -> None:
    """Like ``_read_dense_file``, with pandas splitting the lines from byte ``offset`` on
    (0: all lines after the header); each float_seq cell is then parsed as a line."""
    names = sorted(layout.positions, key=layout.positions.get)
    work = _Workspace()
    with open(filepath, "rb") as f:
        if offset:
            f.seek(offset)
        else:
            f.readline()
        reader = pd.read_csv(
            f,
            sep=layout.field_separator,
            header=None,
            names=list(range(layout.n_columns)),
            usecols=sorted(layout.positions.values()),
            dtype=str,
            keep_default_na=False,
            encoding=layout.encoding,
            engine="c" if len(layout.field_separator) == 1 else "python",
            chunksize=PANDAS_CHUNK_ROWS,
        )
        for frame in reader:
            frame.columns = names
            for name in layout.text_fields:
                cells[name].extend(c if isinstance(c, str) else "" for c in frame[name])
            lines = np.arange(len(frame)) + line
            for name in layout.dense_fields:
                dense = frame[name].to_numpy(dtype=object)
                columns[name].add(*_cells_as_lines(dense, layout.seq_separator, work), lines)
            line += len(frame)


def _cells_as_lines(
    cells: np.ndarray, separator: str, work: _Workspace
) -> tuple[_Gaps, np.ndarray, np.ndarray]:
    """In-memory float_seq cells laid out as lines of bytes: (gaps, begin, end) per cell."""
    cells = [c.replace("\n", " ").replace("\r", " ") if isinstance(c, str) else "" for c in cells]
    if len(separator.encode("utf-8")) != 1 or separator in "\n\r":
        cells = [c.replace(separator, " ") for c in cells]
        separator = " "
    padded = np.frombuffer(bytes(_PAD) + ("\n".join(cells) + "\n").encode("utf-8"), dtype=np.uint8)
    gaps = _Gaps.scan(padded, (ord(separator),), work)
    newlines = gaps.ends[padded[gaps.ends] == 10]
    return gaps, np.concatenate(([_PAD], newlines[:-1] + 1)), newlines


def parse_float_seq(
    cells: np.ndarray, separator: str, filepath, field: str
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of ``float_seq`` cells into a float32 matrix and per-row lengths.

    Every non-empty row must have the same number of values (one modality has one width);
    empty rows become zeros (length 0). Values must be finite.
    """
    cells = np.asarray(cells, dtype=object)
    gaps, begin, end = _cells_as_lines(cells, separator, _Workspace())
    column = _DenseColumn(filepath, field)
    column.add(gaps, begin, end, np.arange(len(cells)) + 1 + HEADER_LINES)
    return column.finish()


# -- numbers the vectorised parsers of ``number_text`` left --------------------------------


def _parse_rest(padded, end, length, lines, filepath, field) -> np.ndarray:
    """Values of the numbers ``parse_plain`` left (exponents, then numpy's parser for nan,
    inf, 17+ digits); names the line of the first that is not a number."""
    values, ok = parse_scientific(padded, end, length)
    if not ok.all():
        slow = np.flatnonzero(~ok)
        values[slow] = _parse_slowly(padded, end[slow], length[slow], lines[slow], filepath, field)
    return values


def _parse_slowly(padded, end, length, lines, filepath, field) -> np.ndarray:
    """numpy's text parser for the numbers the fast path left; names the first bad one."""
    starts = end - length
    text = padded[_ranges(starts, length + 1)]  # each number and the separator after it
    text[np.cumsum(length + 1) - 1] = 32
    values = fromstring(text.tobytes(), " ")
    if values is not None and len(values) == len(end):
        return values
    for start, stop, line in zip(starts.tolist(), end.tolist(), lines.tolist()):
        token = padded[start:stop].tobytes().decode("utf-8", "replace")
        if not is_float(token):
            raise FeatureFileError(
                f"{filepath}: field '{field}' (float_seq) line {line}: '{token}' is not a number"
            )
    raise FeatureFileError(f"{filepath}: field '{field}' (float_seq): unreadable numbers")
