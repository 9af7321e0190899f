"""The vectorised number parsers give what float() gives, and leave what they cannot read."""
import numpy as np

from recbole_invrl.data.number_text import fromstring, is_float, parse_plain, parse_scientific

PAD = 16  # the parsers read a 16-byte window that ends at each number


def buffer(tokens: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(padded bytes, end offset, length) of space-separated ``tokens``."""
    text = " ".join(tokens).encode()
    padded = np.frombuffer(bytes(PAD) + text + bytes(PAD), dtype=np.uint8).copy()
    lengths = np.array([len(t) for t in tokens])
    ends = PAD + np.cumsum(lengths + 1) - 1
    return padded, ends, lengths


def test_plain_numbers_equal_float_and_the_rest_is_left():
    tokens = ["0", "-0", "+7", "3.25", "-0.0001", ".5", "7.", "123456789012345", "-1.234567",
              "1e3", "nan", "12345678901234567"]
    padded, ends, lengths = buffer(tokens)
    values, ok = np.zeros(len(tokens)), np.zeros(len(tokens), dtype=bool)
    parse_plain(padded, ends, lengths, values, ok)
    plain = [t not in ("1e3", "nan", "12345678901234567") for t in tokens]
    np.testing.assert_array_equal(ok, plain)
    np.testing.assert_array_equal(values[ok], [float(t) for t, p in zip(tokens, plain) if p])
    assert np.signbit(values[1])


def test_scientific_numbers_equal_float_within_the_exact_range():
    """Digits times or over 10^k with |k| <= 22 are read; a farther exponent is left."""
    rng = np.random.default_rng(3)
    tokens = ["%.6e" % v for v in rng.normal(size=200) * 10.0 ** rng.integers(-15, 15, size=200)]
    tokens += ["1E3", "-2.5e-2", "+4e+0", "7e22", "1.5e-30"]
    padded, ends, lengths = buffer(tokens)
    values, ok = parse_scientific(padded, ends, lengths)
    assert ok[:-1].all() and not ok[-1]
    np.testing.assert_array_equal(values[:-1], [float(t) for t in tokens[:-1]])


def test_numpy_fallback_reports_what_it_cannot_read():
    np.testing.assert_array_equal(fromstring(b"1.5 nan 2", " ")[[0, 2]], [1.5, 2.0])
    assert fromstring(b"1.5 oops 2", " ") is None
    assert is_float("-inf") and is_float("1.25") and not is_float("1.2.3") and not is_float("x")
