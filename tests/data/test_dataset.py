import numpy as np
import pytest
import torch

from recbole_invrl.data.dataset import FeatureFileError, parse_float_seq


def test_vectorised_parse_matches_row_by_row():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(50, 7)).astype(np.float32)
    cells = np.array([" ".join(f"{v:.7g}" for v in row) for row in matrix], dtype=object)
    parsed, lengths = parse_float_seq(cells, " ", "x.item", "v_feat")
    np.testing.assert_allclose(parsed, matrix, rtol=1e-6)
    assert (lengths == 7).all()


def test_empty_rows_become_zeros():
    cells = np.array(["1 2", "", "3 4"], dtype=object)
    with pytest.warns(UserWarning, match="1 empty rows"):
        parsed, lengths = parse_float_seq(cells, " ", "x.item", "v_feat")
    np.testing.assert_array_equal(parsed, [[1, 2], [0, 0], [3, 4]])
    assert list(lengths) == [2, 0, 2]


@pytest.mark.parametrize("cells, message", [
    (["1 2 3", "4 abc 6"], r"x.item: field 'v_feat' \(float_seq\) line 3: 'abc' is not a number"),
    (["1 2 3", "4 5"], r"x.item: field 'v_feat' \(float_seq\) line 3 has 2 values; expected 3"),
    (["1 nan 3", "4 5 6"], r"x.item: field 'v_feat' \(float_seq\) line 2 holds NaN or inf"),
    (["1 2 3", "4 inf 6"], r"line 3 holds NaN or inf"),
])
def test_bad_cells_name_file_field_and_line(cells, message):
    with pytest.raises(FeatureFileError, match=message):
        parse_float_seq(np.array(cells, dtype=object), " ", "x.item", "v_feat")


def _tiny(atomic_dataset, tmp_path, **kwargs):
    return atomic_dataset(tmp_path, "tiny", [(1, 1), (2, 2)], [(1, 2)], [(2, 3)], **kwargs)


def test_item_features_land_on_the_right_items(build, atomic_dataset, tmp_path):
    features = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    _tiny(atomic_dataset, tmp_path, dense={"v_feat": features}, item_ids=[3, 1, 2])
    _, data, *_ = build("UltraGCNMM", "tiny")
    item_feat = data.get_item_feature()
    for row, token in enumerate(["3", "1", "2"]):
        torch.testing.assert_close(item_feat["v_feat"][data.token2id("item_id", token)],
                                   torch.tensor(features[row], dtype=torch.float32))


def test_non_numeric_feature_in_an_item_file(build, atomic_dataset, tmp_path):
    folder = _tiny(atomic_dataset, tmp_path, dense={"v_feat": np.ones((3, 2))})
    item_file = folder / "tiny.item"
    item_file.write_text(item_file.read_text().replace("1\t1 1", "1\t1 x", 1))
    with pytest.raises(FeatureFileError, match=r"tiny.item: field 'v_feat' \(float_seq\) line 2: 'x'"):
        build("UltraGCNMM", "tiny")


def test_missing_feature_field_names_file_and_field(build, atomic_dataset, tmp_path):
    _tiny(atomic_dataset, tmp_path, dense={"v_feat": np.ones((3, 2))},
          config={"load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "a_feat"]}})
    with pytest.raises(FeatureFileError, match=r"tiny.item: load_col.item names field\(s\) \['a_feat'\]"):
        build("UltraGCNMM", "tiny")


def test_unknown_modality_column_is_a_config_error(build, atomic_dataset, tmp_path):
    from recbole_invrl.model.content import ContentConfigError
    from recbole_invrl.model.general_recommender import UltraGCNMM

    _tiny(atomic_dataset, tmp_path, dense={"v_feat": np.ones((3, 2))})
    config, _, train, *_ = build("UltraGCNMM", "tiny", content_fields=["v_feat", "image_feat"])
    with pytest.raises(ContentConfigError, match="content_fields: 'image_feat'"):
        UltraGCNMM(config, train._dataset)


def test_stack_rows_copies_shuffled_memory_mapped_rows_into_place(tmp_path, monkeypatch):
    """Rows in item order (not file order), empty rows as zeros, from the cache's memory map."""
    from recbole_invrl.data import dataset as dataset_module

    matrix = np.random.default_rng(0).random((50, 16), dtype=np.float32)
    np.save(tmp_path / "m.npy", matrix)
    mapped = list(np.asarray(np.load(tmp_path / "m.npy", mmap_mode="r")))
    order = np.random.default_rng(1).permutation(50)
    rows = np.empty(52, dtype=object)
    rows[0], rows[27] = np.zeros(0), np.zeros(0)
    rows[np.r_[1:27, 28:52]] = [mapped[i] for i in order]
    expected = np.zeros((52, 16), dtype=np.float32)
    expected[np.r_[1:27, 28:52]] = matrix[order]
    for block in (4096, 7):
        monkeypatch.setattr(dataset_module, "STACK_ROWS", block)
        np.testing.assert_array_equal(dataset_module._stack_rows(rows, 16).numpy(), expected)


def test_general_recommenders_get_batches_without_item_features(build, atomic_dataset, tmp_path):
    from recbole.utils import ModelType

    features = np.arange(12, dtype=float).reshape(4, 3)
    atomic_dataset(tmp_path, "feat", [(1, 1), (1, 2), (2, 3), (2, 4)], [(1, 3)], [(2, 1)],
                   dense={"v_feat": features})
    _, data, train, *_ = build("UltraGCNMM", "feat")
    batch = next(iter(train))
    assert "v_feat" not in batch and "item_id" in batch and "user_id" in batch
    data.config.final_config_dict["MODEL_TYPE"] = ModelType.CONTEXT  # a model that reads features
    joined = data[torch.tensor([0, 1])]
    items = data.id2token("item_id", joined["item_id"].numpy()).astype(int)
    np.testing.assert_allclose(joined["v_feat"].numpy(), features[items - 1])
