"""float_seq text parsed into a float32 matrix, with errors that name file, field and line."""
import numpy as np
import pytest

from recbole_invrl.data import float_text
from recbole_invrl.data.dataset import FeatureFileError, parse_float_seq


@pytest.mark.parametrize("fmt", ["%.7g", "%.6e", "%.3f", "%.17g", "%d"])
def test_fast_parse_equals_float(fmt):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 25)) * 10.0 ** rng.integers(-30, 30, size=(40, 25))
    values = np.round(values) if fmt == "%d" else values
    cells = np.array([" ".join(fmt % v for v in row) for row in values], dtype=object)
    expected = np.array([[float(t) for t in c.split()] for c in cells], dtype=np.float32)
    parsed, lengths = parse_float_seq(cells, " ", "x.item", "v_feat")
    np.testing.assert_array_equal(parsed, expected)
    assert (lengths == 25).all()


def test_separators_and_odd_numbers():
    cells = np.array(["+1,-0.5,.25", "1e3, 2.5E-2 ,10", "", "7.,-0,0012"], dtype=object)
    with pytest.warns(UserWarning, match="1 empty rows"):
        parsed, lengths = parse_float_seq(cells, ",", "x.item", "v_feat")
    expected = np.array([[1, -0.5, 0.25], [1000, 0.025, 10], [0, 0, 0], [7, -0.0, 12]], np.float32)
    np.testing.assert_array_equal(parsed, expected)
    assert np.signbit(parsed[3, 1])
    assert list(lengths) == [3, 3, 0, 3]


def test_error_on_a_later_chunk_names_its_line(monkeypatch, tmp_path):
    monkeypatch.setattr(float_text, "CHUNK_BYTES", 64)
    rows = [f"{i}\t{i}.5 {i}.25" for i in range(40)]
    rows[31] = "31\t1.5 oops"
    item = tmp_path / "x.item"
    item.write_text("item_id:token\tv_feat:float_seq\n" + "\n".join(rows) + "\n")
    layout = float_text._Layout(
        "x.item", 2, {"item_id": 0, "v_feat": 1}, ["v_feat"], ["item_id"], "\t", " ", "utf-8"
    )
    column = float_text._DenseColumn("x.item", "v_feat")
    message = r"x.item: field 'v_feat' \(float_seq\) line 33: 'oops' is not a number"
    with pytest.raises(FeatureFileError, match=message):
        float_text._read_dense_file(item, layout, {"v_feat": column}, {"item_id": []})
