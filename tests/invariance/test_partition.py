import itertools

import numpy as np
import torch

from recbole_invrl.invariance import EnvironmentModels
from recbole_invrl.invariance.partition import environment_sizes, moved_share, train_environments


def planted_style_data(n_users=30, n_items=40, per_env=6, seed=0):
    """Items have style A (dim 2) or B (dim 3); each user clicks A items in one environment
    and B items in the other: the planted environment of an interaction is its item's style."""
    rng = np.random.default_rng(seed)
    style = np.arange(n_items) % 2  # 0 = A, 1 = B
    features = np.zeros((n_items, 4))
    features[:, 0] = rng.random(n_items) + 0.5  # invariant dims (masked out of Psi)
    features[:, 1] = rng.random(n_items) + 0.5
    features[np.arange(n_items), 2 + style] = 1.0
    pairs = []
    for u in range(1, n_users + 1):
        for s in (0, 1):
            pool = np.flatnonzero((style == s) & (np.arange(n_items) >= 2)) + 1
            pairs += [(u, int(i)) for i in rng.choice(pool, per_env, replace=False)]
    return features, pairs, style


def purity(found: np.ndarray, truth: np.ndarray) -> float:
    k = max(found.max(), truth.max()) + 1
    return max(np.mean(np.array(p)[found] == truth) for p in itertools.permutations(range(k)))


def test_partition_recovers_two_planted_environments(frozen_factory):
    features, pairs, style = planted_style_data()
    frozen, interactions, data = frozen_factory(features, pairs, n_users=30)
    item_tokens = data.id2token("item_id", interactions.items.numpy()).astype(int)
    truth = style[item_tokens - 1]
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])  # Psi keeps the style dims only
    torch.manual_seed(0)
    envs = torch.randint(2, (len(interactions),))
    shares = []
    for _ in range(6):
        models = EnvironmentModels(frozen, 2, mask, l1_weight=0.0)
        train_environments(models, interactions, envs, epochs=3, batch_size=64, learning_rate=0.05)
        new_envs = models.assign(interactions)
        shares.append(moved_share(envs, new_envs).item())
        envs = new_envs
    assert purity(envs.numpy(), truth) >= 0.9, shares
    assert shares[-1] <= 0.05
    assert environment_sizes(envs, 2).sum() == len(interactions)


def test_batched_environments_equal_separate_training(frozen_factory):
    features, pairs, _ = planted_style_data(n_users=12, n_items=20, per_env=3)
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=12, proj_reg_weight=0.3)
    with torch.no_grad():
        frozen.model.projection.weight.normal_()
    mask = torch.tensor([0.8, 0.6, 0.1, 0.0])
    envs = torch.arange(len(interactions)) % 2
    batched = EnvironmentModels(frozen, 2, mask, l1_weight=0.05)
    separate = [EnvironmentModels(frozen, 1, mask, l1_weight=0.05) for _ in range(2)]
    opt_b = torch.optim.Adam(batched.parameters(), lr=0.01)
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in separate]
    torch.manual_seed(3)
    for _ in range(5):
        for index in interactions.batches(16):
            users, pos, neg, items = frozen.training_batch(interactions, index)
            opt_b.zero_grad()
            batched.loss(users, pos, neg, items, envs[index]).backward()
            opt_b.step()
            for e, (model, opt) in enumerate(zip(separate, opts)):
                rows = envs[index] == e
                opt.zero_grad()
                model.loss(users[rows], pos[rows], neg[rows], items[rows],
                           torch.zeros(int(rows.sum()), dtype=torch.long)).backward()
                opt.step()
    for e in range(2):
        torch.testing.assert_close(batched.weight[e], separate[e].weight[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched.weight[0], batched.weight[1])


def test_an_empty_environment_does_not_crash(frozen_factory):
    features, pairs, _ = planted_style_data(n_users=10, n_items=20, per_env=3)
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=10)
    envs = torch.zeros(len(interactions), dtype=torch.long)  # environments 1 and 2 are empty
    models = EnvironmentModels(frozen, 3, torch.full((4,), 0.5), l1_weight=0.01)
    train_environments(models, interactions, envs, epochs=1, batch_size=32, learning_rate=0.01)
    new_envs = models.assign(interactions)
    assert torch.isfinite(models.weight).all()
    assert new_envs.shape == envs.shape and new_envs.max() < 3


def test_user_side_scores_equal_projecting_items_under_every_environment(frozen_factory):
    """<p_b, W_e Psi_i> computed as <(W_e^T p_b) * (1 - m), c_i> (scores) and from the
    (items, E, C) table of every item under every environment (projected)."""
    features, pairs, _ = planted_style_data(n_users=8, n_items=16, per_env=3)
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=8)
    with torch.no_grad():
        frozen.user_weight.normal_(generator=torch.Generator().manual_seed(0))
    models = EnvironmentModels(frozen, 3, torch.tensor([0.9, 0.5, 0.2, 0.0]), l1_weight=0.0)
    with torch.no_grad():
        models.weight.normal_(generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    users, _, _, items = frozen.training_batch(interactions, torch.arange(10))
    envs = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    projected, inverse = models.projected(items)  # (U, E, C)
    _, user_content = frozen.user_parts(users)
    item_content = projected[inverse, envs.unsqueeze(1)]  # each row under its own environment
    expected = frozen.id_scores(users, items) + (item_content * user_content.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(models.scores(users, items, envs), expected)
    table = frozen.table
    frozen.table = None  # as at Kwai size: rows gathered and normalised on demand
    torch.testing.assert_close(models.scores(users, items, envs), expected)
    frozen.table = table
