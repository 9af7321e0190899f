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
