import pytest
import torch
import torch.nn.functional as F

from recbole_invrl.model import common
from recbole_invrl.model.common import MaskWatch, distinct_items, gathered_dot


def test_distinct_items_by_flags_equal_torch_unique():
    items = torch.randint(0, 50, (7, 9), generator=torch.Generator().manual_seed(0))
    unique, inverse = distinct_items(items, n_items=50)
    expected_unique, expected_inverse = torch.unique(items, return_inverse=True)
    assert torch.equal(unique, expected_unique) and torch.equal(inverse, expected_inverse)
    assert torch.equal(unique[inverse], items)


def _reference(table, vectors, index):
    return (F.embedding(index, table) * vectors.unsqueeze(1)).sum(-1)


# one block; blocks of one row; blocks of four rows and a last one of two
@pytest.mark.parametrize("chunk", [2**22, 7 * 4, 4 * 7 * 4])
def test_gathered_dot_equals_autograd_through_a_gather(monkeypatch, chunk):
    monkeypatch.setattr(common, "GATHER_CHUNK", chunk)
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(11, 4, generator=generator, requires_grad=True)
    vectors = torch.randn(6, 4, generator=generator, requires_grad=True)
    index = torch.randint(0, 11, (6, 7), generator=generator)
    weights = torch.randn(6, 7, generator=generator)
    results = []
    for score in (gathered_dot, _reference):
        scores = score(table, vectors, index)
        grads = torch.autograd.grad((scores * weights).sum(), [table, vectors])
        results.append([scores, *grads])
    for new, old in zip(*results):
        torch.testing.assert_close(new, old)


@pytest.mark.parametrize("chunk", [2**22, 2 * 4 * 3])  # one block; blocks of two rows and a last one
def test_gathered_dot_second_order_gradients_equal_autograd(monkeypatch, chunk):
    """M4 differentiates a function of dl/ds (create_graph), through the scores' backward."""
    monkeypatch.setattr(common, "GATHER_CHUNK", chunk)
    generator = torch.Generator().manual_seed(2)
    table = torch.randn(9, 3, generator=generator, requires_grad=True)
    vectors = torch.randn(5, 3, generator=generator, requires_grad=True)
    index = torch.randint(0, 9, (5, 4), generator=generator)
    results = []
    for score in (gathered_dot, _reference):
        loss = F.softplus(score(table, vectors, index)).sum()
        grad_table, grad_vectors = torch.autograd.grad(loss, [table, vectors], create_graph=True)
        penalty = grad_table.square().sum() + grad_vectors.pow(3).sum()
        results.append(torch.autograd.grad(penalty, [table, vectors]))
    for new, old in zip(*results):
        torch.testing.assert_close(new, old)


def test_mask_watch_sees_new_values_not_rewrites_of_the_same():
    mask, watch = torch.ones(4), MaskWatch()
    assert watch.changed(mask)  # nothing built yet
    assert not watch.changed(mask)
    mask.copy_(torch.ones(4))  # a reload of the same values: the version moves, the values do not
    assert mask._version > 0 and not watch.changed(mask)
    mask[2] = 0.5
    assert watch.changed(mask) and not watch.changed(mask)
    assert watch.changed(mask.clone().fill_(1.0))  # another tensor with other values


def test_unseen_item_sampler_draws_uniformly_among_the_items_a_user_has_not_seen():
    from recbole_invrl.model.common import UnseenItemSampler

    n_items = 12  # ids 1..11; 0 is padding
    seen = {1: [1, 2, 11, 2], 2: [5, 6, 7], 3: list(range(1, 12)), 4: []}
    users = torch.tensor([u for u, items in seen.items() for _ in items])
    items = torch.tensor([i for items in seen.values() for i in items])
    sampler = UnseenItemSampler(users, items, n_users=5, n_items=n_items)
    torch.manual_seed(0)
    draws = 6000
    for user, items in seen.items():
        negatives = sampler(torch.full((draws,), user), 2)
        assert negatives.shape == (draws, 2)
        counts = torch.bincount(negatives.flatten(), minlength=n_items)
        allowed = [i for i in range(1, n_items) if i not in items] or list(range(1, n_items))  # 3 has seen all
        assert counts[0] == 0 and set(torch.nonzero(counts).flatten().tolist()) == set(allowed)
        expected = 2 * draws / len(allowed)
        assert (counts[allowed].float() / expected - 1).abs().max() < 0.1


def test_positive_int_and_non_negative_name_the_key():
    from recbole_invrl.model.common import non_negative, positive_int

    assert positive_int({"n": 1}, "n") == 1 and positive_int({"n": 7}, "n") == 7
    for bad in (0, -2, True, 1.0, "3", None):
        with pytest.raises(ValueError, match=rf"^n: expected an integer >= 1, got {bad!r}$"):
            positive_int({"n": bad}, "n")
    assert non_negative({"w": 0}, "w") == 0.0 and isinstance(non_negative({"w": 0}, "w"), float)
    assert non_negative({"w": 0.5}, "w") == 0.5 and non_negative({"w": 3}, "w", int) == 3
    assert isinstance(non_negative({"w": 3.0}, "w", int), int)
    for bad in (-0.1, False, "1", None):
        with pytest.raises(ValueError, match=rf"^w: expected a number >= 0, got {bad!r}$"):
            non_negative({"w": bad}, "w")


def test_pairwise_sampling_takes_recbole_s_sampler_or_none():
    from recbole_invrl.model.common import check_pairwise_sampling

    for good in (None, {"distribution": "none"}, {"distribution": "uniform", "sample_num": 1},
                 {"distribution": "popularity", "sample_num": 3}):
        check_pairwise_sampling({"train_neg_sample_args": good}, "VBPR")
    for bad in ({"distribution": "uniform", "sample_num": 0}, {"distribution": "uniform", "sample_num": True},
                {"distribution": "uniform", "sample_num": "1"}, {"distribution": "uniform"},
                {"distribution": "gaussian", "sample_num": 1}, {"sample_num": 1}, "uniform"):
        with pytest.raises(ValueError, match=r"^train_neg_sample_args: VBPR is trained pairwise \(BPR\): give RecBole's "
                                             r"negative sampler, e\.g\. \{distribution: uniform, sample_num: 1\}, or ~ to "
                                             r"draw on the device; got ") as error:
            check_pairwise_sampling({"train_neg_sample_args": bad}, "VBPR")
        assert str(error.value).endswith(repr(bad))


def test_final_mask_thresholds_a_binary_mask_strictly_above_one_half():
    from recbole_invrl.model.common import final_mask

    mask = torch.tensor([0.5, 0.51, 0.2, 1.0])
    assert final_mask(mask, "binary").tolist() == [0.0, 1.0, 0.0, 1.0]
    assert final_mask(mask, "float") is mask


def test_item_rows_take_every_item_once_the_batch_names_the_catalogue_twice():
    from recbole_invrl.model.common import item_rows

    assert common.FULL_CATALOGUE_FACTOR == 2
    items = torch.tensor([[1, 2, 3, 4, 0], [2, 2, 2, 2, 2]])  # 10 entries, n_items = 5: every item, by id
    rows, index = item_rows(items, 5)
    assert rows is None and index is items
    rows, index = item_rows(torch.tensor([1, 2, 3, 4, 2, 2, 2, 2, 2]), 5)  # 9 entries: the distinct ones
    assert rows.tolist() == [1, 2, 3, 4] and index.tolist() == [0, 1, 2, 3, 1, 1, 1, 1, 1]


def test_distinct_items_without_dedupe_are_the_entries_themselves():
    items = torch.tensor([[4, 1, 4], [0, 1, 2]])
    rows, index = distinct_items(items, n_items=5, dedupe=False)
    assert rows.tolist() == [4, 1, 4, 0, 1, 2] and index.tolist() == [[0, 1, 2], [3, 4, 5]]
    rows, index = distinct_items(items, n_items=5, dedupe=True)
    assert rows.tolist() == [0, 1, 2, 4] and index.tolist() == [[3, 1, 3], [0, 1, 2]]


def test_mask_watch_tells_two_fresh_tensors_apart():
    watch = MaskWatch()
    assert watch.changed(torch.ones(3)) and watch.changed(torch.zeros(3))  # both at version 0
    same = torch.zeros(3)
    assert not watch.changed(same)  # another tensor, the same values


class _Tables(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.cache = common.AllItemsCache()
        self.computed = 0

    def table(self):
        def compute():
            self.computed += 1
            return self.weight.detach() * self.computed
        return self.cache.get(self, compute)


def test_the_all_items_cache_keeps_an_entry_only_in_eval_mode_outside_autograd_until_a_change():
    module = _Tables()
    module.eval()
    with torch.no_grad():
        first = module.table()
        assert module.table() is first and module.computed == 1
        module.weight.mul_(2.0)  # an in-place change moves the version
        changed = module.table()
        assert module.computed == 2 and changed.tolist() == [4.0, 4.0]
        assert module.table() is changed
    assert module.table() is changed  # a kept entry is read with autograd on too
    module.cache.clear()
    module.table()
    module.table()  # with autograd on: computed, not kept
    assert module.computed == 4
    with torch.no_grad():
        module.table()
        assert module.table() is not changed and module.computed == 5
        module.train()  # reaches the cache: dropped, and not kept while training
        assert module.cache.training is True and module.cache._key is None
        module.table()
        module.table()
        assert module.computed == 7
        module.cache.train(False)
        assert module.cache.training is False
        module.cache.train()
        assert module.cache.training is True


def test_the_all_items_cache_sees_a_parameter_replaced_by_another_tensor():
    module = _Tables().eval()
    with torch.no_grad():
        first = module.table()
        module.weight = torch.nn.Parameter(torch.full((2,), 3.0))  # a new tensor, at version 0 as well
        assert module.table().tolist() == [6.0, 6.0] and module.computed == 2 and first.tolist() == [1.0, 1.0]


def test_gathered_dot_gives_each_input_its_own_gradient():
    generator = torch.Generator().manual_seed(3)
    table, vectors = torch.randn(6, 3, generator=generator), torch.randn(4, 3, generator=generator)
    index = torch.randint(0, 6, (4, 5), generator=generator)
    weights = torch.randn(4, 5, generator=generator)
    for table_grad, vector_grad in ((True, False), (False, True)):
        t, v = table.clone().requires_grad_(table_grad), vectors.clone().requires_grad_(vector_grad)
        (gathered_dot(t, v, index) * weights).sum().backward()
        t_ref, v_ref = table.clone().requires_grad_(table_grad), vectors.clone().requires_grad_(vector_grad)
        (_reference(t_ref, v_ref, index) * weights).sum().backward()
        for new, old, wanted in ((t.grad, t_ref.grad, table_grad), (v.grad, v_ref.grad, vector_grad)):
            assert (new is not None) == wanted
            if wanted:
                torch.testing.assert_close(new, old)


def test_row_blocks_hold_as_many_rows_as_fit_the_chunk(monkeypatch):
    index = torch.zeros(5, 3, dtype=torch.long)
    monkeypatch.setattr(common, "GATHER_CHUNK", 24)  # 24 values, 3 x 4 per row: 2 rows
    assert common._row_blocks(index, 4) == [slice(0, 2), slice(2, 4), slice(4, 6)]
    monkeypatch.setattr(common, "GATHER_CHUNK", 5)  # less than a row: one row at a time
    assert common._row_blocks(index, 4) == [slice(i, i + 1) for i in range(5)]
    monkeypatch.setattr(common, "GATHER_CHUNK", 2)  # one value per row: 2 rows
    assert common._row_blocks(torch.zeros(3, 1, dtype=torch.long), 1) == [slice(0, 2), slice(2, 4)]


def test_the_sampler_draws_the_one_unseen_item_and_keeps_no_state():
    from recbole_invrl.model.common import UnseenItemSampler

    sampler = UnseenItemSampler(torch.tensor([1, 1, 1]), torch.tensor([1, 2, 4]), n_users=2, n_items=5)
    assert sampler.state_dict() == {}
    torch.manual_seed(0)
    assert sampler(torch.ones(50, dtype=torch.long), 3).unique().tolist() == [3]
