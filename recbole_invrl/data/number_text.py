"""Decimal numbers in a byte buffer, parsed exactly and vectorised.

All parsers give what ``float(text)`` gives. A number is addressed by where it ends in
``padded`` (a uint8 buffer with at least 16 zero bytes before the first number) and its
length in bytes.

* ``parse_plain``: ``[+-]digits[.digits]`` of up to 16 bytes, with SWAR arithmetic on the
  number's last 16 bytes as two little-endian uint64 words;
* ``parse_scientific``: the same with an exponent, with byte-matrix passes;
* ``fromstring``: numpy's C text parser, for what is left (nan, inf, 17+ digits).

The vectorised ones read a number's digits as one integer below 2**53 and its decimal
exponent within +-22; then one IEEE multiply or divide of two exact numbers is the
correctly rounded value (Clinger's fast path).
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


def parse_plain(
    padded: np.ndarray, end: np.ndarray, length: np.ndarray, values: np.ndarray, ok: np.ndarray
) -> None:
    """Exact values of the numbers ``padded[end - length:end]`` of the form
    ``[+-]digits[.digits]``, up to 16 bytes, into ``values``, and ``ok`` where read (the
    rest is for ``parse_scientific``, then ``fromstring``). SWAR arithmetic: each number's last 16 bytes as two
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


# per byte, for parse_scientific: a class code summed per number (dots, e's, signs and
# other characters in 5-bit fields)
_CLASS = np.full(256, 32768.0)
_CLASS[0] = 0.0  # left of the number (cleared)
_CLASS[ord("0") : ord("9") + 1] = 0.0
_CLASS[ord(".")] = 1.0
_CLASS[[ord("e"), ord("E")]] = 32.0
_CLASS[[ord("+"), ord("-")]] = 1024.0


def parse_scientific(
    padded: np.ndarray, end: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Like ``parse_plain`` but also reads exponents: ``[+-]digits[.digits][(e|E)[+-]digits]``
    (decimal exponent within +-22). Slower (byte-matrix passes and BLAS products), so it
    only sees the numbers ``parse_plain`` left."""
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

def fromstring(text: bytes | str, separator: str) -> np.ndarray | None:
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


def is_float(token: str) -> bool:
    values = fromstring(token.encode("utf-8", "replace"), " ")
    return values is not None and len(values) == 1
