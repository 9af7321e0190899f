"""The shared pieces of the converters (``data/convert/atomic.py``) on hand-made inputs."""
import numpy as np
import pytest

from recbole_invrl.data.convert.atomic import ConversionError, as_int_ids, pair_keys


def test_ids_are_int64_and_floats_must_hold_whole_numbers():
    ints = np.array([3, 1], dtype=np.int32)
    assert as_int_ids(ints, "x", str).dtype == np.int64 and as_int_ids(ints, "x", str).tolist() == [3, 1]
    floats = as_int_ids(np.array([2.0, 0.0, 7.0]), "x", str)
    assert floats.dtype == np.int64 and floats.tolist() == [2, 0, 7]
    for values, first in ((np.array([1.0, 2.5, 3.5]), "1"), (np.array([1.0, np.inf]), "1"), (np.array([np.nan]), "0")):
        with pytest.raises(ConversionError, match=rf"^row {first} is not an integer \("):
            as_int_ids(values, "x", lambda i: f"row {i}")
    with pytest.raises(ConversionError, match=r"^x: ids must be integers, got dtype <U1$"):
        as_int_ids(np.array(["a"]), "x", str)


def test_pair_keys_are_unique_per_user_and_item():
    users, items = np.array([0, 0, 1, 2, 1]), np.array([0, 4, 0, 3, 4])
    keys = pair_keys(users, items, n_items=5)
    assert keys.tolist() == [0, 4, 5, 13, 9] and keys.dtype == np.int64  # user * 5 + item
    assert pair_keys(np.array([1]), np.array([0]), n_items=0).tolist() == [1]  # no items: a factor of 1


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_an_output_folder_is_put_in_place_and_an_old_one_replaced(tmp_path):
    from recbole_invrl.data.convert.atomic import _swap_into_place

    def staged(text):
        tmp = tmp_path / f".stage-{text}"
        tmp.mkdir()
        (tmp / "data.txt").write_text(text)
        return tmp

    dest = tmp_path / "toy"
    _swap_into_place(staged("first"), dest)
    assert (dest / "data.txt").read_text() == "first" and _listing(tmp_path) == ["toy"]
    (dest / "stale.txt").write_text("old")
    _swap_into_place(staged("second"), dest)  # the old folder goes, with all it held
    assert _listing(dest) == ["data.txt"] and (dest / "data.txt").read_text() == "second"
    assert _listing(tmp_path) == ["toy"]  # nothing moved aside is left behind


def test_a_failed_swap_restores_the_old_folder_and_a_link_is_replaced_not_followed(tmp_path):
    from recbole_invrl.data.convert.atomic import _swap_into_place

    dest = tmp_path / "toy"
    dest.mkdir()
    (dest / "data.txt").write_text("kept")
    with pytest.raises(FileNotFoundError):
        _swap_into_place(tmp_path / ".stage-missing", dest)  # the new folder cannot be moved in
    assert (dest / "data.txt").read_text() == "kept" and _listing(tmp_path) == ["toy"]

    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("untouched")
    link = tmp_path / "linked"
    link.symlink_to(target)
    stage = tmp_path / ".stage"
    stage.mkdir()
    (stage / "data.txt").write_text("new")
    _swap_into_place(stage, link)
    assert not link.is_symlink() and (link / "data.txt").read_text() == "new"
    assert (target / "keep.txt").read_text() == "untouched"
    assert _listing(tmp_path) == ["elsewhere", "linked", "toy"]


def test_dense_features_must_be_non_empty_numeric_matrices():
    from recbole_invrl.data.convert.atomic import check_dense_shape

    check_dense_shape(np.zeros((3, 2), dtype=np.float32), "v.npy")
    check_dense_shape(np.zeros((1, 1), dtype=np.int64), "v.npy")
    for bad, shape, dtype in ((np.zeros(3), (3,), "float64"), (np.zeros((0, 2)), (0, 2), "float64"),
                              (np.zeros((2, 0)), (2, 0), "float64"), (np.array([["a"]]), (1, 1), "<U1")):
        with pytest.raises(ConversionError, match=rf"^v\.npy: expected a 2-D float array with one row per item, "
                                                  rf"got shape \({', '.join(map(str, shape))},?\) and dtype {dtype}$"):
            check_dense_shape(bad, "v.npy")


def test_overlaps_are_reported_for_every_pair_of_splits():
    import warnings

    from recbole_invrl.data.convert.atomic import ConversionWarning, Split, warn_overlaps

    train = Split("train", "train.npy", np.array([0, 1]), np.array([0, 1]))
    valid = Split("valid", "val.npy", np.array([0]), np.array([2]))
    test = Split("test", "test.npy", np.array([1, 1]), np.array([1, 3]))  # (1, 1) is in train too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_overlaps([train, valid, test], n_items=4)
    assert [str(w.message) for w in caught if w.category is ConversionWarning] == [
        "train (train.npy) and test (test.npy) share 1 (user, item) interaction(s); kept in both"]


def test_write_dataset_copies_extra_files_in_and_reports_where_it_wrote(tmp_path):
    from recbole_invrl.data.convert.atomic import DenseFeature, Split, write_dataset

    (tmp_path / "truth.json").write_text('{"modalities": {}}')
    splits = [Split("train", "t", np.array([0, 1]), np.array([1, 0])), Split("valid", "v", np.array([0]), np.array([0])),
              Split("test", "s", np.array([1]), np.array([1]))]
    feature = DenseFeature("v_feat", "v.npy", np.array([[1.0, 0.5], [0.25, 2.0]]))
    summary = write_dataset(tmp_path / "out", "toy", 2, 2, splits, [feature], progress=False,
                            extra_files=[tmp_path / "truth.json"])
    folder = tmp_path / "out" / "toy"
    assert summary.path == folder and summary.split_sizes == {"train": 2, "valid": 1, "test": 1}
    assert (folder / "truth.json").read_text() == '{"modalities": {}}'
    assert sorted(p.name for p in folder.iterdir()) == ["toy.inter", "toy.item", "toy.test.inter", "toy.train.inter",
                                                        "toy.valid.inter", "toy.yaml", "truth.json"]
    assert (folder / "toy.train.inter").read_text() == "user_id:token\titem_id:token\n0\t1\n1\t0\n"
    assert (folder / "toy.item").read_text().splitlines()[1:] == ["0\t1 0.5", "1\t0.25 2"]
