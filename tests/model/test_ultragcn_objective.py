"""UltraGCN's objective (eq. 15-20) on a stub scorer, against values written out by hand
from a 4-user x 5-item interaction matrix (no RecBole dataset: each test runs in
milliseconds)."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from recbole_invrl.model.ultragcn_objective import UltraGCNObjective

# internal ids: user 0 and item 0 are padding; user 3 and item 4 have no interaction
TRAIN = [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
N_USERS, N_ITEMS = 4, 5


class _Data:
    def __init__(self, pairs=TRAIN):
        self.pairs = pairs

    def inter_matrix(self, form="csr"):
        rows, cols = zip(*self.pairs)
        return sp.csr_matrix((np.ones(len(self.pairs)), (rows, cols)), shape=(N_USERS, N_ITEMS))


class Stub(UltraGCNObjective, nn.Module):
    USER_ID, ITEM_ID = "user_id", "item_id"

    def __init__(self, shared=None, data=None, **overrides):
        nn.Module.__init__(self)
        self.n_users, self.n_items = N_USERS, N_ITEMS
        generator = torch.Generator().manual_seed(0)
        self.user_embedding = nn.Embedding(N_USERS, 3)
        self.item_embedding = nn.Embedding(N_ITEMS, 3)
        with torch.no_grad():
            self.user_embedding.weight.copy_(torch.randn(N_USERS, 3, generator=generator))
            self.item_embedding.weight.copy_(torch.randn(N_ITEMS, 3, generator=generator))
        config = dict(neg_num=2, num_neighbors=2, gamma_i=0.5, negative_weight=1.5, gamma_c=0.3,
                      w1=0.7, w2=None, w3=0.4, w4=None, id_reg_weight=0.1, single_spec=True, world_size=1)
        config.update(overrides)
        self.init_objective(config, data or _Data(), shared)

    def forward(self, users, items):
        return (self.user_embedding(users).unsqueeze(1) * self.item_embedding(items)).sum(-1)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_beta_factors_are_eq_18_from_the_degrees():
    model = Stub()
    # user degrees 0, 2, 3, 0; item degrees 0, 2, 2, 1, 0
    assert model.beta_user.tolist() == pytest.approx([0.0, math.sqrt(3) / 2, math.sqrt(4) / 3, 0.0])
    assert model.beta_item.tolist() == pytest.approx([1.0, 1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(2), 1.0])
    assert model.beta_user.dtype == torch.float32 and model.beta_item.dtype == torch.float32
    single = Stub(data=_Data([(1, 1), (2, 1), (2, 2), (2, 3), (2, 4)]))  # user 1 has one interaction
    assert single.beta_user.tolist() == pytest.approx([0.0, math.sqrt(2), math.sqrt(5) / 4, 0.0])


def test_neighbours_and_omega_are_eq_20_by_hand():
    """G = R^T R: G_11 = G_22 = 2, G_12 = 2, G_13 = G_23 = 1, G_33 = 1; g = row sums of G
    (g_1 = g_2 = 5, g_3 = 3); omega_ij = G_ij / (g_i - G_ii) * sqrt(g_i / g_j)."""
    model = Stub()
    omega = {(1, 2): 2 / 3, (1, 3): 1 / 3 * math.sqrt(5 / 3), (2, 1): 2 / 3, (2, 3): 1 / 3 * math.sqrt(5 / 3),
             (3, 1): 1 / 2 * math.sqrt(3 / 5), (3, 2): 1 / 2 * math.sqrt(3 / 5)}
    index, weight = model.neighbor_index.tolist(), model.neighbor_weight.tolist()
    assert index[1] == [2, 3] and weight[1] == pytest.approx([omega[1, 2], omega[1, 3]])
    assert index[2] == [1, 3] and weight[2] == pytest.approx([omega[2, 1], omega[2, 3]])
    assert index[3] == [1, 2] and weight[3] == pytest.approx([omega[3, 1], omega[3, 2]])
    assert index[4] == [0, 0] and weight[4] == [0.0, 0.0]  # no co-occurrence: padding, no loss
    assert Stub(gamma_i=0.0).neighbor_index.shape == (N_ITEMS, 0)  # L_I off: no neighbours computed


def test_w2_and_w4_default_to_gamma_c_and_can_be_set_apart():
    default = Stub()
    assert (default.w1, default.w2, default.w3, default.w4) == (0.7, 0.3, 0.4, 0.3)
    apart = Stub(w2=1.1, w4=2.2)
    assert (apart.w2, apart.w4) == (1.1, 2.2)
    assert (default.neg_num, default.num_neighbors, default.gamma_i, default.negative_weight,
            default.id_reg_weight) == (2, 2, 0.5, 1.5, 0.1)


def test_training_items_lay_out_positive_negatives_then_neighbours():
    model = Stub()
    items = model.training_items(torch.tensor([1, 3]), torch.tensor([[4, 2], [1, 1]]))
    assert items.tolist() == [[1, 4, 2, 2, 3], [3, 1, 1, 1, 2]]
    plain = Stub(gamma_i=0.0).training_items(torch.tensor([1, 3]), torch.tensor([[4, 2], [1, 1]]))
    assert plain.tolist() == [[1, 4, 2], [3, 1, 1]]


def test_interaction_losses_are_eq_15_to_19_written_out():
    model = Stub(w2=1.1, w4=2.2)
    users, positives = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 2])
    negatives = torch.tensor([[4, 2], [1, 4], [3, 3]])
    scores = torch.tensor([[0.5, -1.0, 2.0, 0.3, -0.7],
                           [-0.2, 0.4, 1.5, -2.0, 0.9],
                           [1.2, 0.0, -0.5, 0.8, 0.1]])
    beta_u = {1: math.sqrt(3) / 2, 2: 2 / 3, 3: 0.0}
    beta_i = {1: 1 / math.sqrt(3), 2: 1 / math.sqrt(3), 3: 1 / math.sqrt(2), 4: 1.0}
    omega = {1: [2 / 3, 1 / 3 * math.sqrt(5 / 3)], 3: [1 / 2 * math.sqrt(3 / 5)] * 2, 2: [2 / 3, 1 / 3 * math.sqrt(5 / 3)]}
    expected = []
    for row, (u, i) in enumerate(zip(users.tolist(), positives.tolist())):
        s = scores[row].tolist()
        pos = (0.7 + 1.1 * beta_u[u] * beta_i[i]) * softplus(-s[0])
        neg = sum((0.4 + 2.2 * beta_u[u] * beta_i[j]) * softplus(s[1 + k])
                  for k, j in enumerate(negatives[row].tolist())) / 2
        item_item = -sum(w * -softplus(-s[3 + k]) for k, w in enumerate(omega[i]))  # -omega log sigma(s)
        expected.append(pos + 1.5 * neg + 0.5 * item_item)
    losses = model.interaction_losses(scores, users, positives, negatives)
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)
    plain = Stub(gamma_i=0.0, w2=1.1, w4=2.2)
    no_item_item = [e - 0.5 * sum(w * softplus(-s) for w, s in zip(omega[i], scores[r, 3:].tolist()))
                    for r, (e, i) in enumerate(zip(expected, positives.tolist()))]
    assert plain.interaction_losses(scores[:, :3], users, positives, negatives).tolist() == pytest.approx(
        no_item_item, rel=1e-5)


def test_loss_is_the_scaled_batch_sum_plus_the_l2_of_the_whole_id_tables():
    users, positives, negatives = torch.tensor([1, 2]), torch.tensor([2, 1]), torch.tensor([[3, 4], [4, 4]])
    for spec, world, scale in ((True, 4, 1), (False, 3, 3)):
        model = Stub(single_spec=spec, world_size=world)
        U, T = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
        items = model.training_items(positives, negatives)
        scores = (U[users].unsqueeze(1) * T[items]).sum(-1)
        batch = model.interaction_losses(scores, users, positives, negatives).sum()
        l2 = 0.5 * 0.1 * float(U.square().sum() + T.square().sum())
        loss = model.loss(users, positives, negatives)
        assert loss.item() == pytest.approx(scale * batch.item() + l2, rel=1e-5)
        assert model.l2_loss().item() == pytest.approx(l2, rel=1e-5)


def test_negatives_are_uniform_over_the_real_items_and_calculate_loss_uses_them():
    model = Stub(neg_num=3)
    torch.manual_seed(0)
    draws = model.sample_negatives(torch.arange(4).repeat(500))
    assert draws.shape == (2000, 3)
    counts = torch.bincount(draws.flatten(), minlength=N_ITEMS)
    assert counts[0] == 0 and (counts[1:] > 1200).all()  # 6000 draws over items 1..4
    interaction = {"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([2, 3])}
    torch.manual_seed(5)
    loss = model.calculate_loss(interaction)
    torch.manual_seed(5)
    negatives = torch.randint(1, N_ITEMS, (2, 3))
    assert loss.item() == pytest.approx(model.loss(interaction["user_id"], interaction["item_id"], negatives).item())


def test_a_shared_model_reuses_the_graph_buffers():
    first = Stub()
    second = Stub(shared=first)
    for name in ("neighbor_index", "neighbor_weight", "beta_user", "beta_item"):
        assert getattr(second, name).data_ptr() == getattr(first, name).data_ptr()
        assert name not in first.state_dict() and name not in second.state_dict()  # data, not state


@pytest.mark.parametrize("key, value", [("neg_num", 0), ("num_neighbors", -1), ("gamma_i", -0.1),
                                        ("negative_weight", -1.0), ("gamma_c", -2.0), ("id_reg_weight", -1e-3)])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        Stub(**{key: value})
