"""GRCN/MMGCN/InvRL layout -> RecBole atomic files: round trips, bad input, atomic output, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from recbole_invrl.data.convert import ConversionError, ConversionWarning, convert_grcn

REPO = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS = 4, 7
TRAIN = [(0, 0), (0, 3), (1, 1), (1, 2), (2, 4), (3, 5), (3, 0)]
VALID = [[0, 1], [1], [2, 0, 6], [3, 2]]  # per user: [user, items...] (items not offset yet)
TEST = [[0, 2], [1, 4], [2], [3, 1]]
WORDS = [(0, 7), (0, 2), (2, 9), (5, 0), (5, 7), (5, 3), (6, 1)]  # (item, word); items 1, 3, 4 have none


# ----------------------------------------------------------------------------- helpers


def obj_array(lists) -> np.ndarray:
    arr = np.empty(len(lists), dtype=object)
    for i, x in enumerate(lists):
        arr[i] = x
    return arr


def offset_lists(lists, n_users=N_USERS):
    return [[row[0]] + [i + n_users for i in row[1:]] for row in lists]


def features(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "v": rng.standard_normal((N_ITEMS, 5)).astype(np.float32),
        "a": rng.standard_normal((N_ITEMS, 3)).astype(np.float32) * 1e3,
        "t": rng.standard_normal((N_ITEMS, 4)).astype(np.float32) * 1e-3,
    }


def make_grcn(src: Path, variant: str = "npy", train=TRAIN, valid=VALID, test=TEST,
              uid_dict: bool = True) -> dict:
    """Write a tiny release folder; return the features written, keyed by output field."""
    src.mkdir(parents=True, exist_ok=True)
    np.save(src / "train.npy", np.array([(u, i + N_USERS) for u, i in train], dtype=np.int64))
    np.save(src / "val_full.npy", obj_array(offset_lists(valid)))
    np.save(src / "test_full.npy", obj_array(offset_lists(test)))
    if uid_dict:
        d = {u: {i + N_USERS for uu, i in train if uu == u} for u in range(N_USERS)}
        np.save(src / "user_item_dict.npy", d)
    feats = features()
    written: dict = {}
    if variant == "npy":
        for m, arr in feats.items():
            np.save(src / f"{m}_feat.npy", arr)
            written[f"{m}_feat"] = arr
    elif variant == "kwai":
        np.save(src / "v_feat.npy", feats["v"].astype(np.float64))
        written["v_feat"] = feats["v"]
    elif variant in ("pt", "pt_dense_t"):
        for m in ("v", "a"):
            torch.save(torch.from_numpy(feats[m]), src / f"feat_{m}.pt")
            written[f"{m}_feat"] = feats[m]
        if variant == "pt":
            torch.save(torch.tensor(WORDS, dtype=torch.long).T.contiguous(), src / "feat_t.pt")
            written["t_words"] = WORDS
        else:
            torch.save(torch.from_numpy(feats["t"]), src / "feat_t.pt")
            written["t_feat"] = feats["t"]
    elif variant == "words_only":
        torch.save(torch.tensor(WORDS + [(8, 4)], dtype=torch.long).T.contiguous(), src / "feat_t.pt")
        written["t_words"] = WORDS + [(8, 4)]
    return written


def read_atomic(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return df


def read_pairs(path: Path) -> list[tuple[int, int]]:
    df = read_atomic(path)
    assert list(df.columns) == ["user_id:token", "item_id:token"]
    return list(zip(df["user_id:token"].astype(int), df["item_id:token"].astype(int)))


def flat(lists):
    return [(row[0], i) for row in lists for i in row[1:]]


def convert(src, out, **kw):
    return convert_grcn(src, "toy", out, progress=False, **kw)


def assert_no_output(out: Path) -> None:
    assert not (out / "toy").exists()
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def assert_fails(src: Path, out: Path, *fragments: str) -> str:
    with pytest.raises(ConversionError) as info:
        convert(src, out)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert "\n" not in msg
    assert_no_output(out)
    return msg


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("variant", ["npy", "kwai", "pt", "pt_dense_t", "words_only"])
def test_round_trip(tmp_path, variant):
    written = make_grcn(tmp_path / "src", variant)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)
        summary = convert(tmp_path / "src", out)
    folder = out / "toy"
    n_items = 9 if variant == "words_only" else N_ITEMS
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"toy.{x}" for x in ("inter", "train.inter", "valid.inter", "test.inter", "item", "yaml")
    )
    assert [p.name for p in out.iterdir()] == ["toy"]  # no temp folder left

    assert read_pairs(folder / "toy.train.inter") == TRAIN
    assert read_pairs(folder / "toy.valid.inter") == flat(VALID)
    assert read_pairs(folder / "toy.test.inter") == flat(TEST)
    assert read_pairs(folder / "toy.inter") == TRAIN + flat(VALID) + flat(TEST)

    item = read_atomic(folder / "toy.item")
    types = {"t_words": "token_seq"}
    assert list(item.columns) == ["item_id:token"] + [
        f"{f}:{types.get(f, 'float_seq')}" for f in written
    ]
    assert item["item_id:token"].tolist() == [str(i) for i in range(n_items)]
    for field, expected in written.items():
        cells = item[f"{field}:{types.get(field, 'float_seq')}"]
        if field == "t_words":
            bags = [[w for i, w in expected if i == item_id] for item_id in range(n_items)]
            assert [[int(w) for w in c.split()] for c in cells] == bags
            assert cells[1] == ""
        else:
            parsed = np.array([np.array(c.split(" "), dtype=np.float64) for c in cells])
            np.testing.assert_allclose(parsed, expected, rtol=1e-6, atol=0)

    config = yaml.safe_load((folder / "toy.yaml").read_text())
    fields = list(written)
    assert config == {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": None,
        "TIME_FIELD": None,
        "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id"] + fields},
        "content_fields": fields,
        "benchmark_filename": ["train", "valid", "test"],
        "normalize_all": False,
        "filter_inter_by_user_or_item": False,
        "metrics": ["Precision", "Recall", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
    }
    assert (summary.n_users, summary.n_items) == (N_USERS, n_items)
    assert summary.split_sizes == {"train": 7, "valid": 4, "test": 3}
    line = str(summary)
    assert line.startswith(f"toy: 4 users, {n_items} items; train 7 / valid 4 / test 3 interactions;")
    if "t_words" in written:
        assert "t_words (word ids, vocab 10)" in line


def test_yaml_text_is_exact(tmp_path):
    make_grcn(tmp_path / "src", "pt")
    convert(tmp_path / "src", tmp_path / "out")
    assert (tmp_path / "out" / "toy" / "toy.yaml").read_text() == (
        "USER_ID_FIELD: user_id\nITEM_ID_FIELD: item_id\nRATING_FIELD: ~\nTIME_FIELD: ~\n"
        "load_col:\n  inter: [user_id, item_id]\n  item: [item_id, v_feat, a_feat, t_words]\n"
        "content_fields: [v_feat, a_feat, t_words]\nbenchmark_filename: [train, valid, test]\n"
        "normalize_all: False\nfilter_inter_by_user_or_item: False\n"
        "metrics: [Precision, Recall, NDCG]\ntopk: [10, 20]\nvalid_metric: NDCG@10\n"
        "eval_args:\n  group_by: user\n  order: RO\n  mode: full\n"
    )


def test_many_item_chunks(tmp_path, monkeypatch):
    """Rows must stay aligned across chunk boundaries of the item writer."""
    from recbole_invrl.data.convert import atomic

    monkeypatch.setattr(atomic, "ITEM_CHUNK_ROWS", 2)
    written = make_grcn(tmp_path / "src", "pt")
    convert(tmp_path / "src", tmp_path / "out")
    item = read_atomic(tmp_path / "out" / "toy" / "toy.item")
    v = np.array([np.array(c.split(), dtype=float) for c in item["v_feat:float_seq"]])
    np.testing.assert_allclose(v, written["v_feat"], rtol=1e-6)
    assert item["t_words:token_seq"].tolist() == ["7 2", "", "9", "", "", "0 7 3", "1"]


def test_replaces_existing_output_atomically(tmp_path):
    out = tmp_path / "out"
    make_grcn(tmp_path / "a", "npy")
    convert(tmp_path / "a", out)
    before = (out / "toy" / "toy.item").read_bytes()

    make_grcn(tmp_path / "bad", "npy")
    v = np.load(tmp_path / "bad" / "v_feat.npy")
    v[3, 1] = np.nan
    np.save(tmp_path / "bad" / "v_feat.npy", v)
    with pytest.raises(ConversionError, match="v_feat.npy"):
        convert(tmp_path / "bad", out)
    assert [p.name for p in out.iterdir()] == ["toy"]
    assert (out / "toy" / "toy.item").read_bytes() == before

    make_grcn(tmp_path / "b", "kwai")
    convert(tmp_path / "b", out)
    assert [p.name for p in out.iterdir()] == ["toy"]
    assert "a_feat" not in (out / "toy" / "toy.item").read_text().splitlines()[0]


# ----------------------------------------------------------------------------- warnings


def test_duplicates_dropped_with_warning(tmp_path):
    make_grcn(tmp_path / "src", "npy", train=TRAIN + [(1, 2), (0, 3), (1, 2)],
              valid=[[0, 1, 1], [1], [2, 0, 6], [3, 2]], uid_dict=False)
    with pytest.warns(ConversionWarning) as record:
        convert(tmp_path / "src", tmp_path / "out")
    messages = " | ".join(str(w.message) for w in record)
    assert "train.npy: dropped 3 duplicate" in messages
    assert "val_full.npy: dropped 1 duplicate" in messages
    folder = tmp_path / "out" / "toy"
    assert read_pairs(folder / "toy.train.inter") == TRAIN
    assert read_pairs(folder / "toy.valid.inter") == flat(VALID)


def test_split_overlap_warned_and_kept(tmp_path):
    test = [[0, 2, 3], [1, 4, 1], [2], [3, 1]]  # (0, 3) and (1, 1) are also in train
    make_grcn(tmp_path / "src", "npy", test=test)
    with pytest.warns(ConversionWarning, match=r"train \(train.npy\) and test \(test_full.npy\) share 2"):
        convert(tmp_path / "src", tmp_path / "out")
    assert read_pairs(tmp_path / "out" / "toy" / "toy.test.inter") == flat(test)


def test_user_item_dict_disagreement_warns(tmp_path):
    make_grcn(tmp_path / "src", "npy")
    np.save(tmp_path / "src" / "user_item_dict.npy", {0: [0 + N_USERS], 1: [1 + N_USERS, 6 + N_USERS]})
    with pytest.warns(ConversionWarning, match=r"user_item_dict.npy disagrees with train.npy: 1 .* 5 only"):
        convert(tmp_path / "src", tmp_path / "out")
    assert read_pairs(tmp_path / "out" / "toy" / "toy.train.inter") == TRAIN


# ----------------------------------------------------------------------------- bad input


def test_missing_files(tmp_path):
    src = tmp_path / "src"
    make_grcn(src, "npy")
    (src / "train.npy").unlink()
    msg = assert_fails(src, tmp_path / "out", "missing train.npy", "val_full.npy", "feat_v.pt")
    for f in ("v_feat.npy", "a_feat.npy", "t_feat.npy"):
        (src / f).unlink()
    make_grcn(tmp_path / "src2", "npy")
    for f in ("v_feat.npy", "a_feat.npy", "t_feat.npy"):
        (tmp_path / "src2" / f).unlink()
    assert_fails(tmp_path / "src2", tmp_path / "out", "missing v_feat.npy or feat_v.pt or a_feat.npy")
    assert_fails(tmp_path / "nowhere", tmp_path / "out", "does not exist")
    assert "test_full.npy" in msg


def _edit_npy(path: Path, fn) -> None:
    arr = np.load(path)
    fn(arr)
    np.save(path, arr)


def _edit_lists(path: Path, fn) -> None:
    lists = [list(x) for x in np.load(path, allow_pickle=True)]  # test's own trusted file
    fn(lists)
    np.save(path, obj_array(lists))


BAD_CASES = {
    "feature rows < items": (
        lambda s: np.save(s / "v_feat.npy", features()["v"][:6]),
        ["a_feat.npy has 7 rows but v_feat.npy has 6"],
    ),
    "item beyond feature rows": (
        lambda s: [np.save(s / f"{m}_feat.npy", a[:6]) for m, a in features().items()],
        ["val_full.npy row 2 (position 2)", "item id 6", "v_feat.npy has 6 rows", "at least 7"],
    ),
    "negative user in train": (
        lambda s: _edit_npy(s / "train.npy", lambda a: a.__setitem__((3, 0), -1)),
        ["train.npy row 3", "negative user id -1"],
    ),
    "negative user in test": (
        lambda s: _edit_lists(s / "test_full.npy", lambda l: l[1].__setitem__(0, -2)),
        ["test_full.npy row 1", "negative user id -2"],
    ),
    "item below offset": (
        lambda s: _edit_npy(s / "train.npy", lambda a: a.__setitem__((2, 1), 2)),
        ["train.npy row 2", "item id 2 is below the item offset n_users=4"],
    ),
    "item far out of range in test": (
        lambda s: _edit_lists(s / "test_full.npy", lambda l: l[3].append(50)),
        ["test_full.npy row 3 (position 2)", "item id 46", "7 rows"],
    ),
    "nan feature": (
        lambda s: _edit_npy(s / "a_feat.npy", lambda a: a.__setitem__((4, 2), np.nan)),
        ["a_feat.npy", "row 4", "NaN or inf"],
    ),
    "inf feature": (
        lambda s: _edit_npy(s / "t_feat.npy", lambda a: a.__setitem__((0, 0), -np.inf)),
        ["t_feat.npy", "row 0", "NaN or inf"],
    ),
    "empty validation list": (
        lambda s: _edit_lists(s / "val_full.npy", lambda l: l.__setitem__(2, [])),
        ["val_full.npy row 2", "empty list, holds no user"],
    ),
    "string in a list": (
        lambda s: _edit_lists(s / "val_full.npy", lambda l: l[0].append("5")),
        ["val_full.npy", "str"],
    ),
    "float in a list": (
        lambda s: _edit_lists(s / "test_full.npy", lambda l: l[0].append(5.0)),
        ["test_full.npy", "float"],
    ),
    "train wrong shape": (
        lambda s: np.save(s / "train.npy", np.zeros((3, 3), dtype=np.int64)),
        ["train.npy", "shape (N, 2)", "(3, 3)"],
    ),
    "train non-integer": (
        lambda s: np.save(s / "train.npy", np.array([[0, 4.5]])),
        ["train.npy row 0", "not an integer"],
    ),
    "train pickled": (
        lambda s: np.save(s / "train.npy", obj_array([[0, 4]])),
        ["train.npy", "pickled Python objects"],
    ),
    "truncated train.npy": (
        lambda s: (s / "train.npy").write_bytes((s / "train.npy").read_bytes()[:-20]),
        ["train.npy", "truncated or corrupt"],
    ),
    "truncated feature": (
        lambda s: (s / "v_feat.npy").write_bytes((s / "v_feat.npy").read_bytes()[:-8]),
        ["v_feat.npy", "truncated or corrupt"],
    ),
    "truncated pickle": (
        lambda s: (s / "val_full.npy").write_bytes((s / "val_full.npy").read_bytes()[:-5]),
        ["val_full.npy", "truncated or corrupt"],
    ),
    "not an npy file": (
        lambda s: (s / "test_full.npy").write_bytes(b"hello world"),
        ["test_full.npy", "truncated or corrupt"],
    ),
    "duplicate feature files": (
        lambda s: torch.save(torch.zeros(7, 5), s / "feat_v.pt"),
        ["both v_feat.npy and feat_v.pt"],
    ),
}


PT_CASES = {
    "corrupt pt": (
        lambda s: (s / "feat_v.pt").write_bytes((s / "feat_v.pt").read_bytes()[:200]),
        ["feat_v.pt", "truncated or corrupt"],
    ),
    "pt holds a dict": (
        lambda s: torch.save({"x": torch.zeros(7, 5)}, s / "feat_a.pt"),
        ["feat_a.pt: expected a tensor, got dict"],
    ),
    "nan in pt": (
        lambda s: torch.save(torch.tensor(features()["v"]).index_fill_(0, torch.tensor([5]), float("nan")),
                             s / "feat_v.pt"),
        ["feat_v.pt", "row 5", "NaN or inf"],
    ),
    "negative word": (
        lambda s: torch.save(torch.tensor([[0, 1, 2], [3, -1, 4]]), s / "feat_t.pt"),
        ["feat_t.pt column 1", "negative word id -1"],
    ),
    "word item out of range": (
        lambda s: torch.save(torch.tensor([[0, 1, 7], [3, 1, 4]]), s / "feat_t.pt"),
        ["feat_t.pt column 2", "item id 7 out of range", "feat_v.pt has 7 rows"],
    ),
    "dense rows differ": (
        lambda s: torch.save(torch.zeros(8, 3), s / "feat_a.pt"),
        ["feat_a.pt has 8 rows but feat_v.pt has 7"],
    ),
}


@pytest.mark.parametrize(
    "layout, case",
    [("npy", c) for c in BAD_CASES] + [("pt", c) for c in PT_CASES],
)
def test_bad_input(tmp_path, layout, case):
    src = tmp_path / "src"
    make_grcn(src, layout)
    edit, fragments = (BAD_CASES if layout == "npy" else PT_CASES)[case]
    edit(src)
    assert_fails(src, tmp_path / "out", *fragments)


def test_invalid_name(tmp_path):
    make_grcn(tmp_path / "src", "npy")
    with pytest.raises(ConversionError, match="invalid dataset name"):
        convert_grcn(tmp_path / "src", "../evil", tmp_path / "out", progress=False)


# ----------------------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path):
    src = tmp_path / "src"
    make_grcn(src, "pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "recbole_invrl.data.convert", "grcn", "--src", str(src), "--name", "toy"]
    ok = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "toy: 4 users, 7 items; train 7 / valid 4 / test 3 interactions; v_feat 5, a_feat 3, " \
           "t_words (word ids, vocab 10)" in ok.stdout
    assert (tmp_path / "atomic_data" / "toy" / "toy.item").is_file()  # default --out

    (src / "val_full.npy").unlink()
    bad = subprocess.run(cmd + ["--out", "elsewhere"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing val_full.npy"), bad.stderr
    assert_no_output(tmp_path / "elsewhere")


def test_a_user_seen_only_in_validation_and_test_still_sets_the_item_offset(tmp_path):
    """Five users (0-4); user 4, the largest id, has no training row. Items are stored as
    item + 5: counting users from the train split alone (4) would shift every item by one
    and attach it to the next item's features."""
    src, n_users = tmp_path / "src", 5
    src.mkdir()
    train = [(0, 0), (1, 3), (2, 1), (3, 2), (0, 4)]
    valid = [[0, 2], [1], [2, 3], [3], [4, 0]]
    test = [[0, 1], [1, 2], [2], [3, 4], [4, 3]]
    np.save(src / "train.npy", np.array([(u, i + n_users) for u, i in train], dtype=np.int64))
    np.save(src / "val_full.npy", obj_array(offset_lists(valid, n_users)))
    np.save(src / "test_full.npy", obj_array(offset_lists(test, n_users)))
    v = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)  # item k's row is 3k, 3k + 1, 3k + 2
    np.save(src / "v_feat.npy", v)
    folder = tmp_path / "out" / "toy"
    convert(src, tmp_path / "out")
    assert read_pairs(folder / "toy.train.inter") == train
    assert read_pairs(folder / "toy.valid.inter") == flat(valid)
    assert read_pairs(folder / "toy.test.inter") == flat(test)
    items = read_atomic(folder / "toy.item")
    rows = {int(i): [float(x) for x in row.split()] for i, row in zip(items["item_id:token"], items["v_feat:float_seq"])}
    assert rows == {k: [3.0 * k, 3.0 * k + 1, 3.0 * k + 2] for k in range(5)}


def test_rows_ids_and_item_counts_of_the_release_lists():
    from recbole_invrl.data.convert.atomic import DenseFeature, WordFeature
    from recbole_invrl.data.convert.grcn import _Raw, _count_items, _flatten_ints, _is_row, _to_split

    assert _is_row([1, 2]) and _is_row((1,)) and _is_row(np.array([1, 2], dtype=np.uint8))
    assert not _is_row(np.array([[1, 2]])) and not _is_row(np.array([1.0])) and not _is_row(np.int64(3))
    assert _flatten_ints([[1, 2], np.array([3])], 3, "x.npy").tolist() == [1, 2, 3]
    with pytest.raises(ConversionError, match=r"^x\.npy row 1 \(position 1\): expected an integer id, got NoneType$"):
        _flatten_ints([[1, 2], [3, None]], 4, "x.npy")
    with pytest.raises(ConversionError, match=r"^x\.npy: ids do not fit in 64-bit integers$"):
        _flatten_ints([[2 ** 70]], 1, "x.npy")
    raw = _Raw("train", "train.npy", np.array([0, 1]), np.array([3, 7]), np.array([0, 1]))
    words = WordFeature("t_words", "feat_t.pt", np.array([0, 9]), np.array([1, 1]))
    assert _count_items([raw], [], n_users=3) == (5, "")  # items 0 and 4 stored as 3 and 7
    assert _count_items([raw], [words], n_users=3) == (10, "")  # a word list names item 9
    empty = _Raw("train", "train.npy", np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]))
    assert _count_items([empty], [], n_users=3) == (0, "")
    dense = DenseFeature("v_feat", "v_feat.npy", np.zeros((6, 2)))
    assert _count_items([raw], [dense], n_users=3) == (6, "v_feat.npy")
    split = _to_split(raw, n_users=3, n_items=5, items_from="v_feat.npy")  # item 0 is a real item
    assert split.items.tolist() == [0, 4]
    low = _Raw("valid", "val_full.npy", np.array([0]), np.array([2]), np.array([4]), np.array([1]))
    with pytest.raises(ConversionError, match=r"^val_full\.npy row 4 \(position 1\): item id 2 is below the item "
                                              r"offset n_users=3 \(items are stored as item \+ n_users; the largest "
                                              r"user id is 2\)$"):
        _to_split(low, n_users=3, n_items=5, items_from="v_feat.npy")
