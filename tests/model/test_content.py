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
