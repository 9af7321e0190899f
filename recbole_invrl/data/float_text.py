"""Numeric text of atomic files: ``float_seq`` columns parsed fast and exactly.

RecBole parses ``float_seq`` cells one Python float at a time. Here

* a file is read as bytes, about ``CHUNK_BYTES`` of whole lines at a time, into one reused
  buffer (``_line_chunks``); the runs of bytes between separators of a chunk ("gaps",
  ``_Gaps``) are all parsed as numbers at once, and each float_seq field takes the gaps in
  its span of each line, straight into one preallocated float32 matrix (``_DenseColumn``);
* numbers ``[+-]digits[.digits]`` of up to 16 bytes are read with SWAR arithmetic on
  uint64 words (``_parse_plain``), those with an exponent with byte-matrix passes
  (``_parse_scientific``): the digits as one integer below 2**53 times or over one exact
  power of ten, which is bit-identical to ``float(text)``;
* the rest falls back: nan, inf and 17+ digit numbers to numpy's C text parser
  (``_parse_slowly``); lines with quotes, multi-byte separators or an encoding that is not
  ASCII-compatible to pandas, which splits them (``_read_with_pandas_from``);
* whatever cannot be used (not a number, a row of another width, NaN/inf, extra fields)
  raises ``FeatureFileError`` naming the file, field and line.

``parse_float_seq`` parses in-memory cells the same way.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from recbole.utils import FeatureType

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
    number where ``_parse_plain`` could read one."""

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
        _parse_plain(padded, ends, lengths, values, ok)
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


# -- numbers: exact vectorised parsers, and numpy's text parser for the rest -------------
#
# All three give what ``float(text)`` gives. The vectorised ones read a number's digits as
# one integer below 2**53 and its decimal exponent within +-22; then one IEEE multiply or
# divide of two exact numbers is the correctly rounded value (Clinger's fast path).

_MAX_NUMBER_BYTES = 16
_POW10 = 10.0 ** np.arange(23)  # exactly representable powers of ten
_SIGN = np.ones(256)
_SIGN[ord("-")] = -1.0
# SWAR constants: one byte per lane of a little-endian uint64 (lane 0 = first character)
_U64 = np.uint64
_ONES = _U64(0x0101010101010101)
_LOW7 = _U64(0x7F7F7F7F7F7F7F7F)
_ZEROS = _U64(0x3030303030303030)  # b'00000000': xor turns digits into 0..9
_TEN_UP = _U64(0x7676767676767676)  # (lane & 0x7F) + 0x76 sets bit 7 where lane >= 10
_DOTS = _U64(0x1E1E1E1E1E1E1E1E)  # '.' ^ '0'
_RANK = _U64(0x0706050403020100)  # (flags * _RANK) >> 56 = 7 - lane of the one flagged lane
_DIGIT_PAIRS = ((_U64(10), _U64(8), _U64(0x00FF00FF00FF00FF)),
                (_U64(100), _U64(16), _U64(0x0000FFFF0000FFFF)),
                (_U64(10000), _U64(32), _U64(0xFFFFFFFF)))
_FULL = (1 << 64) - 1
# lanes to keep in each word of a right-aligned number that starts at column k
_KEEP_LO = np.array([(_FULL << 8 * k) & _FULL for k in range(17)], dtype=_U64)
_KEEP_HI = np.array([(_FULL << 8 * max(k - 8, 0)) & _FULL for k in range(17)], dtype=_U64)
_BATCH = 1 << 15  # numbers per pass: scratch arrays stay in cache and are reused
_SCRATCH = (("lo", _U64), ("hi", _U64), ("t0", _U64), ("t1", _U64), ("t2", _U64), ("dots", _U64),
            ("frac", _U64), ("others", _U64), ("index", np.intp), ("f1", np.float64),
            ("f2", np.float64), ("first", np.uint8), ("b0", bool), ("b1", bool))
_local = threading.local()


def _parse_rest(padded, end, length, lines, filepath, field) -> np.ndarray:
    """Values of the numbers ``_parse_plain`` left (exponents, then numpy's parser for nan,
    inf, 17+ digits); names the line of the first that is not a number."""
    values, ok = _parse_scientific(padded, end, length)
    if not ok.all():
        slow = np.flatnonzero(~ok)
        values[slow] = _parse_slowly(padded, end[slow], length[slow], lines[slow], filepath, field)
    return values


def _parse_plain(
    padded: np.ndarray, end: np.ndarray, length: np.ndarray, values: np.ndarray, ok: np.ndarray
) -> None:
    """Exact values of the numbers ``padded[end - length:end]`` of the form
    ``[+-]digits[.digits]``, up to 16 bytes, into ``values``, and ``ok`` where read (the
    rest is for ``_parse_rest``). SWAR arithmetic: each number's last 16 bytes as two
    uint64 words, a few dozen in-place word operations per batch of numbers."""
    # windows[i] = bytes i..i+15 (overlapping, unaligned)
    windows = np.ndarray((len(padded) - 15,), dtype="V16", buffer=padded, strides=(1,))
    for start in range(0, len(end), _BATCH):
        batch = slice(start, start + _BATCH)
        _plain_batch(windows, padded, end[batch], length[batch], values[batch], ok[batch])


def _scratch(n: int) -> list[np.ndarray]:
    arrays = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {name: np.empty(_BATCH, dtype) for name, dtype in _SCRATCH}
    return [arrays[name][:n] for name, _ in _SCRATCH]


def _plain_batch(windows, padded, end, length, value, ok) -> None:
    lo, hi, t0, t1, t2, dots, frac, others, index, f1, f2, first, b0, b1 = _scratch(len(end))
    # the 16 bytes ending each number (lo: columns 0-7, hi: 8-15); clear what precedes it
    np.subtract(end, 16, out=index)
    words = windows[index].view("<u8").reshape(-1, 2)
    lo[:], hi[:] = words[:, 0], words[:, 1]
    np.subtract(end, length, out=index)
    np.take(padded, index, out=first, mode="clip")
    np.subtract(16, length, out=index)
    np.clip(index, 0, 16, out=index)
    for word, keep in ((lo, _KEEP_LO), (hi, _KEEP_HI)):
        np.take(keep, index, out=t0, mode="clip")
        word ^= _ZEROS  # digits -> 0..9
        word &= t0
    # dots: how many, and how many columns follow one (the fraction's digits)
    _flag_lanes_equal(lo, _DOTS, t0, t2)
    _flag_lanes_equal(hi, _DOTS, t1, t2)
    _lane_sum(np.add(t0, t1, out=dots), dots)
    np.multiply(t1, _RANK, out=frac)
    frac >>= _U64(56)
    np.multiply(t0, _RANK, out=t2)
    t2 >>= _U64(56)
    frac += t2
    _lane_sum(t0, t2)
    t2 <<= _U64(3)
    frac += t2
    # non-digits (dot, sign, anything else): count them, then keep the digits only
    for word, flags in ((lo, t0), (hi, t1)):
        _flag_lanes_ten_up(word, flags)
    _lane_sum(np.add(t0, t1, out=others), others)
    for word, flags in ((lo, t0), (hi, t1)):
        flags *= _U64(255)
        word &= np.invert(flags, out=flags)
        _eight_digits(word, t2)
    np.multiply(lo, 1e8, out=value)
    value += hi
    # a number: at most one dot, a sign only first, one digit or more, < 2**53
    np.less(value, 2.0**53, out=ok)
    ok &= np.less_equal(dots, _U64(1), out=b0)
    ok &= np.less_equal(length, 16, out=b0)
    np.equal(first, ord("-"), out=b0)
    b0 |= np.equal(first, ord("+"), out=b1)
    ok &= np.equal(others, np.add(dots, b0, out=t0), out=b1)
    ok &= np.greater(length, others.view(np.int64), out=b1)
    # the dot read as a 0 digit: digits = high * 10**(frac + 1) + low -> high * 10**frac + low
    np.add(frac.view(np.int64), 1, out=index)
    np.take(_POW10, index, out=f1, mode="clip")
    np.floor(np.divide(value, f1, out=f1), out=f1)
    np.take(_POW10, frac.view(np.int64), out=f2, mode="clip")
    f1 *= 9.0
    f1 *= f2
    f1 *= dots
    value -= f1
    value /= f2
    np.copyto(index, first)
    value *= np.take(_SIGN, index, out=f1, mode="clip")


def _flag_lanes_equal(word, lanes, out, tmp) -> None:
    """0x01 in each lane of ``word`` equal to that of ``lanes``, else 0x00."""
    np.bitwise_xor(word, lanes, out=tmp)
    np.bitwise_and(tmp, _LOW7, out=out)
    out += _LOW7
    out |= tmp
    np.invert(out, out=out)
    out >>= _U64(7)
    out &= _ONES


def _flag_lanes_ten_up(word, out) -> None:
    """0x01 in each lane of ``word`` that is 10 or more (not a digit), else 0x00."""
    np.bitwise_and(word, _LOW7, out=out)
    out += _TEN_UP
    out |= word
    out >>= _U64(7)
    out &= _ONES


def _lane_sum(flags, out) -> None:
    np.multiply(flags, _ONES, out=out)
    out >>= _U64(56)


def _eight_digits(word, tmp) -> None:
    """Lanes holding digits 0..9 (first = most significant) -> their value, in place."""
    for factor, shift, mask in _DIGIT_PAIRS:
        np.multiply(word, factor, out=tmp)
        word >>= shift
        word += tmp
        word &= mask


# per byte, for _parse_scientific: a class code summed per number (dots, e's, signs and
# other characters in 5-bit fields)
_CLASS = np.full(256, 32768.0)
_CLASS[0] = 0.0  # left of the number (cleared)
_CLASS[ord("0") : ord("9") + 1] = 0.0
_CLASS[ord(".")] = 1.0
_CLASS[[ord("e"), ord("E")]] = 32.0
_CLASS[[ord("+"), ord("-")]] = 1024.0


def _parse_scientific(
    padded: np.ndarray, end: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Like ``_parse_plain`` but also reads exponents: ``[+-]digits[.digits][(e|E)[+-]digits]``
    (decimal exponent within +-22). Slower (byte-matrix passes and BLAS products), so it
    only sees the numbers ``_parse_plain`` left."""
    n = len(end)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    width = int(min(length.max(), _MAX_NUMBER_BYTES))
    window = sliding_window_view(padded, width)[end - width]
    lead = width - np.minimum(length, width)  # column of each number's first byte
    for col in range(width - int(length.min())):  # clear what precedes the shorter numbers
        window[:, col] *= lead <= col
    digit = window - np.uint8(48)
    digit *= digit < 10
    cols = np.arange(width)
    number = digit @ _POW10[width - 1 - cols]  # all digits as one integer
    classes = np.take(_CLASS, window) @ np.stack((np.ones(width), cols), axis=1)
    counts, where = classes.astype(np.int64).T
    n_dot, n_e, n_sign, n_other = counts & 31, (counts >> 5) & 31, (counts >> 10) & 31, counts >> 15
    has_e = n_e == 1
    e_col = np.where(has_e, (where & 1023) >> 5, width)
    dot_col = where & 31
    rows = np.arange(n)
    first = window[rows, lead]
    e_sign = window[rows, np.minimum(e_col + 1, width - 1)]
    exp_signed = has_e & ((e_sign == 45) | (e_sign == 43))
    exp_digits = np.where(has_e, width - 1 - e_col - exp_signed, 0)
    n_digits = np.minimum(length, width) - n_dot - n_e - n_sign
    ok = (
        (n_other == 0) & (n_dot <= 1) & (n_e <= 1) & (length <= width)
        & (n_sign == ((first == 45) | (first == 43)).astype(np.int64) + exp_signed)
        & (n_digits - exp_digits >= 1) & (exp_digits >= has_e)
        & ((n_dot == 0) | (dot_col < e_col)) & (number < 2.0**53)
    )
    scale = _POW10[width - e_col]  # the exponent's digits (and the e) sit right of e_col
    mantissa = np.floor(number / scale)
    exponent = number - mantissa * scale
    has_dot = n_dot == 1
    frac = np.where(has_dot, e_col - 1 - dot_col, 0)
    # the dot was read as a 0 digit: high * 10**(frac + 1) + low -> high * 10**frac + low
    mantissa -= 9 * np.floor(mantissa / _POW10[frac + 1]) * _POW10[frac] * has_dot
    exponent = np.where(has_e & (e_sign == 45), -exponent, exponent) - frac
    ok &= np.abs(exponent) <= 22
    power = np.clip(exponent, -22, 22).astype(np.intp)
    values = mantissa / _POW10[np.maximum(-power, 0)]
    values *= _POW10[np.maximum(power, 0)]
    np.negative(values, out=values, where=first == 45)
    return values, ok


def _parse_slowly(padded, end, length, lines, filepath, field) -> np.ndarray:
    """numpy's text parser for the numbers the fast path left; names the first bad one."""
    starts = end - length
    text = padded[_ranges(starts, length + 1)]  # each number and the separator after it
    text[np.cumsum(length + 1) - 1] = 32
    values = _fromstring(text.tobytes(), " ")
    if values is not None and len(values) == len(end):
        return values
    for start, stop, line in zip(starts.tolist(), end.tolist(), lines.tolist()):
        token = padded[start:stop].tobytes().decode("utf-8", "replace")
        if not _is_float(token):
            raise FeatureFileError(
                f"{filepath}: field '{field}' (float_seq) line {line}: '{token}' is not a number"
            )
    raise FeatureFileError(f"{filepath}: field '{field}' (float_seq): unreadable numbers")


def _fromstring(text: bytes | str, separator: str) -> np.ndarray | None:
    """numpy's C text parser; ``None`` if it stopped early (a value it could not read)."""
    if not text:
        return np.zeros(0, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            sep = " " if separator.isspace() else separator
            return np.fromstring(text, dtype=np.float64, sep=sep)
        except (DeprecationWarning, ValueError):
            return None


def _is_float(token: str) -> bool:
    values = _fromstring(token.encode("utf-8", "replace"), " ")
    return values is not None and len(values) == 1
