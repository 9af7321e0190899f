"""MMRec layout (NAME.inter with x_label + image/text features) -> RecBole atomic files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recbole_invrl.data.convert import ConversionError, ConversionWarning, convert_mmrec

N_ITEMS = 6
# userID, itemID, rating, timestamp, x_label: interleaved on purpose (file order within a split kept)
ROWS = [
    (0, 1, 5, 1000, 0), (0, 2, 4, 1001, 0), (1, 0, 3, 1002, 0), (0, 3, 5, 1003, 1),
    (2, 5, 1, 1004, 0), (1, 4, 2, 1005, 2), (2, 1, 4, 1006, 1), (0, 0, 5, 1007, 2),
    (3, 3, 3, 1008, 0), (2, 2, 5, 1009, 2),
]


def make_mmrec(src: Path, rows=ROWS, header="userID\titemID\trating\ttimestamp\tx_label") -> dict:
    src.mkdir(parents=True, exist_ok=True)
    lines = [header] + ["\t".join(map(str, r)) for r in rows]
    (src / "baby.inter").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(1)
    feats = {
        "image_feat": rng.standard_normal((N_ITEMS, 8)).astype(np.float32),
        "text_feat": rng.random((N_ITEMS, 3)).astype(np.float32),
    }
    for name, arr in feats.items():
        np.save(src / f"{name}.npy", arr)
    return feats


def read_pairs(path: Path) -> list[tuple[int, int]]:
    df = pd.read_csv(path, sep="\t", dtype=str)
    assert list(df.columns) == ["user_id:token", "item_id:token"]
    return list(zip(df["user_id:token"].astype(int), df["item_id:token"].astype(int)))


def split_pairs(label: int, rows=ROWS) -> list[tuple[int, int]]:
    return [(u, i) for u, i, _, _, x in rows if x == label]


def convert(src, out):
    return convert_mmrec(src, "baby", out, progress=False)


def test_round_trip(tmp_path):
    feats = make_mmrec(tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)
        summary = convert(tmp_path / "src", tmp_path / "out")
    folder = tmp_path / "out" / "baby"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["baby"]
    assert read_pairs(folder / "baby.train.inter") == split_pairs(0)
    assert read_pairs(folder / "baby.valid.inter") == split_pairs(1)
    assert read_pairs(folder / "baby.test.inter") == split_pairs(2)
    assert read_pairs(folder / "baby.inter") == split_pairs(0) + split_pairs(1) + split_pairs(2)

    item = pd.read_csv(folder / "baby.item", sep="\t", dtype=str)
    assert list(item.columns) == ["item_id:token", "image_feat:float_seq", "text_feat:float_seq"]
    assert item["item_id:token"].tolist() == [str(i) for i in range(N_ITEMS)]
    for name, arr in feats.items():
        parsed = np.array([np.array(c.split(" "), dtype=float) for c in item[f"{name}:float_seq"]])
        np.testing.assert_allclose(parsed, arr, rtol=1e-6, atol=0)

    config = yaml.safe_load((folder / "baby.yaml").read_text())
    assert config["load_col"] == {"inter": ["user_id", "item_id"],
                                  "item": ["item_id", "image_feat", "text_feat"]}
    assert config["content_fields"] == ["image_feat", "text_feat"]
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert str(summary) == (
        "baby: 4 users, 6 items; train 5 / valid 2 / test 3 interactions; image_feat 8, text_feat 3"
    )


def test_image_only_and_duplicates(tmp_path):
    rows = ROWS + [(0, 1, 1, 2000, 0)]
    make_mmrec(tmp_path / "src", rows)
    (tmp_path / "src" / "text_feat.npy").unlink()
    with pytest.warns(ConversionWarning, match=r"baby.inter: dropped 1 duplicate"):
        summary = convert(tmp_path / "src", tmp_path / "out")
    assert summary.features == ["image_feat 8"]
    assert read_pairs(tmp_path / "out" / "baby" / "baby.train.inter") == split_pairs(0)


def _set_cell(row: int, col: int, value):
    def edit(src):
        rows = [list(r) for r in ROWS]
        rows[row][col] = value
        lines = ["userID\titemID\trating\ttimestamp\tx_label"] + ["\t".join(map(str, r)) for r in rows]
        (src / "baby.inter").write_text("\n".join(lines) + "\n")
    return edit


BAD = {
    "missing inter": (lambda s: (s / "baby.inter").unlink(),
                      ["missing baby.inter", "image_feat.npy", "text_feat.npy"]),
    "missing features": (lambda s: [(s / f).unlink() for f in ("image_feat.npy", "text_feat.npy")],
                         ["missing image_feat.npy or text_feat.npy"]),
    "missing column": (lambda s: (s / "baby.inter").write_text("userID\titemID\n0\t1\n"),
                       ["baby.inter: missing column(s) x_label"]),
    "bad x_label": (_set_cell(4, 4, 3), ["baby.inter row 4: x_label 3 is not 0, 1 or 2"]),
    "non-integer user": (_set_cell(6, 0, "u7"), ["baby.inter row 6: userID 'u7' is not an integer"]),
    "fractional item": (_set_cell(2, 1, 1.5), ["baby.inter row 2: itemID", "not an integer"]),
    "negative item": (_set_cell(3, 1, -1), ["baby.inter row 3: negative itemID -1"]),
    "item beyond features": (_set_cell(8, 1, 6),
                             ["baby.inter row 8: item id 6", "image_feat.npy has 6 rows", "at least 7"]),
    "feature rows differ": (lambda s: np.save(s / "text_feat.npy", np.zeros((5, 3))),
                            ["text_feat.npy has 5 rows but image_feat.npy has 6"]),
    "nan feature": (lambda s: np.save(s / "text_feat.npy", np.where(np.eye(6, 3, -2) > 0, np.nan, 1.0)),
                    ["text_feat.npy", "row 2", "NaN or inf"]),
    "truncated feature": (lambda s: (s / "image_feat.npy").write_bytes((s / "image_feat.npy").read_bytes()[:-4]),
                          ["image_feat.npy", "truncated or corrupt"]),
    "pickled feature": (lambda s: np.save(s / "image_feat.npy", np.array([[1.0], None], dtype=object)),
                        ["image_feat.npy", "pickled Python objects"]),
    "ragged inter": (lambda s: (s / "baby.inter").write_text(
        "userID\titemID\trating\ttimestamp\tx_label\n0\t1\t5\t1\t0\n1\t2\t3\t4\t0\t9\t9\n"),
        ["baby.inter: cannot parse as tab-separated text (Error tokenizing data. C error: Expected 5 fields in "
         "line 3, saw 7)"]),
    "negative user": (_set_cell(5, 0, -2), ["baby.inter row 5: negative userID -2"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(tmp_path, case):
    src, out = tmp_path / "src", tmp_path / "out"
    make_mmrec(src)
    edit, fragments = BAD[case]
    edit(src)
    with pytest.raises(ConversionError) as info:
        convert(src, out)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg
    assert not (out / "baby").exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_integer_columns_come_back_as_int64_and_a_bad_value_names_its_line():
    from recbole_invrl.data.convert.mmrec import _int_column

    for column in (pd.Series([1, 2, 3]), pd.Series(["1", "2", "3"]), pd.Series([1.0, 2.0, 3.0])):
        values = _int_column(column, "userID", "x.inter")
        assert values.dtype == np.int64 and values.tolist() == [1, 2, 3]
    # row 1 of the data is line 3 of the file (the header is line 1)
    with pytest.raises(ConversionError, match=r"^x\.inter row 1: itemID '2\.5' is not an integer \(line 3\)$"):
        _int_column(pd.Series(["1", "2.5", "3"]), "itemID", "x.inter")
    with pytest.raises(ConversionError, match=r"^x\.inter row 2: itemID 'b' is not an integer \(line 4\)$"):
        _int_column(pd.Series(["1", "2", "b"]), "itemID", "x.inter")
