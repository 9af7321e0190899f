import numpy as np
import pytest
import torch

from recbole_invrl.model.content import ContentConfigError, ContentEncoder


def _dataset(build, atomic_dataset, tmp_path, **config):
    dense = {"v_feat": np.arange(1, 13, dtype=float).reshape(4, 3), "a_feat": np.ones((4, 2))}
    words = {"t_words": [[5, 6], [6], [], [7, 5, 5]]}
    atomic_dataset(tmp_path, "tiny", [(1, 1), (2, 2), (1, 3)], [(1, 2)], [(2, 3)],
                   dense=dense, words=words)
    return build("UltraGCNMM", "tiny", **config)


def test_layout_normalisation_and_word_bags(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["v_feat", "t_words", "a_feat"], word_embedding_size=5)
    assert encoder.layout == [("v_feat", 3), ("t_words", 5), ("a_feat", 2)]
    item = torch.tensor([data.token2id("item_id", "4")])
    c = encoder(item)[0].detach()
    raw = np.array([10.0, 11.0, 12.0])
    np.testing.assert_allclose(c[:3].numpy(), raw / np.linalg.norm(raw), rtol=1e-6)
    # item 4's words are 7, 5, 5: the bag sums their embeddings (with repeats), then normalises
    word_ids = torch.tensor([data.token2id("t_words", w) for w in ("7", "5", "5")])
    bag = encoder.word_embeddings["t_words"].weight[word_ids].sum(0)
    torch.testing.assert_close(c[3:8], (bag / bag.norm()).detach())
    np.testing.assert_allclose(c[8:].numpy(), np.ones(2) / np.sqrt(2), rtol=1e-6)


def test_mask_multiplies_content_and_checks_its_shape(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["v_feat", "a_feat"])
    items = torch.arange(1, 5)
    mask = torch.tensor([1.0, 0.0, 0.5, 0.0, 2.0])
    encoder.set_mask(mask)
    torch.testing.assert_close(encoder(items), encoder.raw(items) * mask)
    with pytest.raises(ValueError, match=r"content_mask: expected shape \(5,\)"):
        encoder.set_mask(torch.ones(4))


def test_gated_content_is_differentiable_in_the_gate_and_the_mask_comes_back(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["v_feat", "a_feat"])
    stored = torch.tensor([1.0, 0.0, 0.5, 0.0, 2.0])
    encoder.set_mask(stored)
    items = torch.arange(1, 5)
    gate = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0], requires_grad=True)
    weight = torch.randn(3, 5)
    with encoder.gated(gate):
        (encoder(items).sum() + encoder.projected(items, weight).sum()).backward()
    raw = encoder.raw(items)
    torch.testing.assert_close(gate.grad, raw.sum(0) + (raw * weight.sum(0)).sum(0))
    torch.testing.assert_close(encoder.content_mask, stored)
    with pytest.raises(RuntimeError, match="inside"), encoder.gated(gate.detach()):
        raise RuntimeError("inside")
    torch.testing.assert_close(encoder.content_mask, stored)
    with pytest.raises(ValueError, match=r"gate: expected shape \(5,\)"), encoder.gated(torch.ones(4)):
        pass


def test_default_fields_are_every_modality_column(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    assert [f for f, _ in ContentEncoder(data, None).layout] == ["v_feat", "a_feat", "t_words"]


def test_unknown_modality_column_names_the_key(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    with pytest.raises(ContentConfigError, match="content_fields: 'x_feat' is not an item feature"):
        ContentEncoder(data, ["v_feat", "x_feat"])


class _DenseDataset:
    """The few dataset methods ContentEncoder reads, around one float_seq item matrix."""

    dataset_name = "stub"

    def __init__(self, matrix: torch.Tensor):
        from recbole.utils import FeatureSource, FeatureType

        self.matrix = matrix
        self.field2type = {"item_id": FeatureType.TOKEN, "v_feat": FeatureType.FLOAT_SEQ}
        self.field2source = {"item_id": FeatureSource.ITEM_ID, "v_feat": FeatureSource.ITEM}

    def get_item_feature(self):
        return {"v_feat": self.matrix}


def test_dense_content_is_the_dataset_matrix_normalised_bit_for_bit():
    """No copy of the item matrix, and the same bits as F.normalize of it."""
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(300, 2048, generator=generator) * torch.rand(300, 1, generator=generator) * 5
    matrix[7] = 0.0  # an empty row stays zero (eps clamps its norm)
    before = matrix.clone()
    encoder = ContentEncoder(_DenseDataset(matrix), ["v_feat"])
    assert encoder.dense_v_feat.data_ptr() == matrix.data_ptr()
    items = torch.randint(0, 300, (40, 6), generator=generator)
    assert torch.equal(encoder.raw(items), torch.nn.functional.normalize(before, dim=1)[items])
    mask = torch.rand(2048, generator=generator)
    encoder.set_mask(mask)
    assert torch.equal(encoder(items), torch.nn.functional.normalize(before, dim=1)[items] * mask)
    assert torch.equal(matrix, before)  # the dataset's matrix is left as it was


def test_raw_with_precomputed_word_tables_matches_raw(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["v_feat", "t_words", "a_feat"], word_embedding_size=5)
    items = torch.tensor([[1, 4], [2, 2]])
    tables = {"t_words": encoder.word_table("t_words").detach()}
    assert torch.equal(encoder.raw(items, tables), encoder.raw(items).detach())


def test_project_equals_raw_content_times_the_weight(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["v_feat", "t_words", "a_feat"], word_embedding_size=5)
    weight = torch.randn(3, encoder.dim, generator=torch.Generator().manual_seed(0))
    items = torch.tensor([[1, 4, 4], [2, 0, 3]])
    expected = encoder.raw(items) @ weight.T
    torch.testing.assert_close(encoder.project(items, weight), expected)
    every_item = torch.arange(5)
    torch.testing.assert_close(encoder.project(None, weight), encoder.raw(every_item) @ weight.T)
    mask = torch.rand(encoder.dim, generator=torch.Generator().manual_seed(1))
    encoder.set_mask(mask)
    torch.testing.assert_close(encoder.projected(items, weight), encoder(items) @ weight.T)


def test_projected_modality_equals_its_masked_columns_times_the_weight(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["v_feat", "t_words", "a_feat"], word_embedding_size=5)
    mask = torch.rand(encoder.dim, generator=torch.Generator().manual_seed(2))
    encoder.set_mask(mask)
    content = encoder(torch.arange(5))  # every item's m * c_i, (5, 10)
    for index, columns in enumerate([slice(0, 3), slice(3, 8), slice(8, 10)]):
        weight = torch.randn(4, columns.stop - columns.start, generator=torch.Generator().manual_seed(index))
        torch.testing.assert_close(encoder.projected_modality(index, weight), content[:, columns] @ weight.T)


def test_word_bag_gradient_equals_the_dense_count_matrix(build, atomic_dataset, tmp_path):
    _, data, *_ = _dataset(build, atomic_dataset, tmp_path)
    encoder = ContentEncoder(data, ["t_words"], word_embedding_size=5)
    weight = encoder.word_embeddings["t_words"].weight
    counts = encoder.bags_t_words.to_dense()
    assert torch.equal(encoder.bags_t_t_words.to_dense(), counts.T)
    assert counts[data.token2id("item_id", "4"), data.token2id("t_words", "5")] == 2  # repeats count
    upstream = torch.randn(counts.shape[0], 5, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((encoder.word_table("t_words") * upstream).sum(), weight)
    (expected,) = torch.autograd.grad(
        (torch.nn.functional.normalize(counts @ weight, dim=-1) * upstream).sum(), weight)
    torch.testing.assert_close(grad, expected)


class _StubDataset:
    """Dense ``v_feat`` (5 items, 2 wide) and words ``t_words`` (vocabulary of 8, id 0 =
    padding), with the sources as plain strings or RecBole's enums."""

    dataset_name = "stub"

    def __init__(self, enum_sources=True, extra=None):
        from recbole.utils import FeatureSource, FeatureType

        item, item_id = (FeatureSource.ITEM, FeatureSource.ITEM_ID) if enum_sources else ("item", "item_id")
        self.field2type = {"item_id": FeatureType.TOKEN, "v_feat": FeatureType.FLOAT_SEQ,
                           "t_words": FeatureType.TOKEN_SEQ, "user_feat": FeatureType.FLOAT_SEQ}
        self.field2source = {"item_id": item_id, "v_feat": item, "t_words": item,
                             "user_feat": FeatureSource.USER if enum_sources else "user"}
        self.features = {"v_feat": torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [6.0, 8.0]]),
                         "t_words": torch.tensor([[0, 0], [5, 6], [6, 0], [0, 0], [5, 5]])}
        for field, (kind, values) in (extra or {}).items():
            self.field2type[field], self.field2source[field] = kind, item
            self.features[field] = values

    def get_item_feature(self):
        features = self.features

        class Rows(dict):  # RecBole's Interaction: its length is the number of rows
            def __len__(self):
                return len(features["v_feat"])

        return Rows(features)

    def num(self, field):
        return 8


def test_content_fields_are_checked_against_the_item_features_whatever_the_source_type():
    from recbole.utils import FeatureType

    from recbole_invrl.model.content import resolve_content_fields

    for enum_sources in (True, False):
        data = _StubDataset(enum_sources)
        assert resolve_content_fields(data, None) == ["v_feat", "t_words"]
        assert resolve_content_fields(data, "t_words") == ["t_words"]
        with pytest.raises(ContentConfigError, match=r"^content_fields: 'user_feat' is not an item feature of dataset "
                                                     r"'stub' \(item fields loaded: \['item_id', 'v_feat', 't_words'\]\); "
                                                     r"check content_fields, load_col.item and the .item file header$"):
            resolve_content_fields(data, ["user_feat"])
    with pytest.raises(ContentConfigError, match=r"^content_fields: 'item_id' has type token; a modality column must be "
                                                 r"float_seq \(dense features\) or token_seq \(word ids\)$"):
        resolve_content_fields(_StubDataset(), ["item_id"])
    bare = _StubDataset()
    del bare.field2source["v_feat"], bare.field2source["t_words"]
    with pytest.raises(ContentConfigError, match=r"^content_fields: dataset 'stub' has no float_seq or token_seq item "
                                                 r"column to use as content \(item fields loaded: \['item_id'\]\); add "
                                                 r"modality columns to the .item file and to load_col.item$"):
        resolve_content_fields(bare, None)
    assert FeatureType.TOKEN.value == "token"


def test_an_encoder_keeps_no_data_in_its_state_and_shares_it_with_another():
    data = _StubDataset()
    encoder = ContentEncoder(data, None)
    assert encoder.layout == [("v_feat", 2), ("t_words", 128)] and encoder.n_items == 5
    assert set(encoder.state_dict()) == {"content_mask", "word_embeddings.t_words.weight"}
    embedding = encoder.word_embeddings["t_words"]
    assert embedding.padding_idx == 0 and embedding.num_embeddings == 8 and (embedding.weight[0] == 0).all()
    other = ContentEncoder(data, None, shared=encoder)
    for name in ("dense_v_feat", "norm_v_feat", "bags_t_words", "bags_t_t_words"):
        assert getattr(other, name) is getattr(encoder, name)
    other.word_embeddings.load_state_dict(encoder.word_embeddings.state_dict())
    assert torch.equal(other.raw(torch.arange(5)), encoder.raw(torch.arange(5)))


def test_frozen_rows_and_precomputed_tables_are_the_ones_used():
    data = _StubDataset()
    encoder = ContentEncoder(data, None, word_embedding_size=3)
    rows = encoder.frozen_rows()
    every = rows(None)
    assert every.shape == (5, 5) and not every.requires_grad
    assert torch.equal(rows(torch.tensor([[4, 1]])), every[[4, 1]].unsqueeze(0))
    assert every[1, :2].tolist() == pytest.approx([0.6, 0.8])  # (3, 4) / 5
    bag = encoder.word_embeddings["t_words"].weight.detach()[[5, 6]].sum(0)
    torch.testing.assert_close(every[1, 2:], bag / bag.norm())
    custom = {"t_words": torch.arange(15.0).view(5, 3)}  # a table of its own: read, not recomputed
    assert encoder.raw(torch.tensor([2]), custom)[0, 2:].tolist() == [6.0, 7.0, 8.0]
    weight = torch.zeros(1, 5)
    weight[0, 2:] = 1.0
    assert encoder.project(torch.tensor([2, 3]), weight, custom).squeeze(1).tolist() == [21.0, 30.0]
    assert encoder.project(None, weight, custom).squeeze(1).tolist() == [3.0, 12.0, 21.0, 30.0, 39.0]


def test_word_bags_count_the_words_of_each_item_in_a_matrix_of_the_full_vocabulary():
    from recbole_invrl.model.content import word_bags

    bags, bags_t = word_bags(torch.tensor([[5, 6], [6, 0], [0, 0], [2, 2]]), n_words=9)
    expected = torch.zeros(4, 9)
    expected[0, 5] = expected[0, 6] = expected[1, 6] = 1.0
    expected[3, 2] = 2.0  # repeats count; padding (0) does not
    assert bags.layout == torch.sparse_csr and bags.shape == (4, 9)
    assert torch.equal(bags.to_dense(), expected) and torch.equal(bags_t.to_dense(), expected.T)
