import numpy as np
import torch

from recbole_invrl.invariance import MaskLearner
from recbole_invrl.invariance.mask import gradient_variance, learn_mask, mask_summary


def stable_and_flipping_data(n_users=30, n_items=48, per_env=6, seed=0):
    """Dims 0-1 carry quality (clicked in both environments); dims 2-3 carry a style that
    users click in environment 0 and avoid in environment 1 (its sign flips)."""
    rng = np.random.default_rng(seed)
    quality = np.where(np.arange(n_items) % 2 == 0, 1.0, -1.0)
    style = np.where((np.arange(n_items) // 2) % 2 == 0, 1.0, -1.0)
    features = np.stack([quality, quality, style, style], axis=1)
    pairs, envs = [], []
    for u in range(1, n_users + 1):
        for env, wanted_style in ((0, 1.0), (1, -1.0)):
            pool = np.flatnonzero((quality > 0) & (style == wanted_style) & (np.arange(n_items) >= 2)) + 1
            chosen = rng.choice(pool, per_env, replace=False)
            pairs += [(u, int(i)) for i in chosen]
            envs += [env] * per_env
    return features, pairs, np.array(envs)


def _envs_for(interactions, data, pairs, envs):
    lookup = {(u, i): e for (u, i), e in zip(pairs, envs)}
    users = data.id2token("user_id", interactions.users.numpy()).astype(int)
    items = data.id2token("item_id", interactions.items.numpy()).astype(int)
    return torch.tensor([lookup[(u, i)] for u, i in zip(users, items)])


def test_stable_dims_end_with_higher_gates(frozen_factory):
    features, pairs, planted = stable_and_flipping_data()
    frozen, interactions, data = frozen_factory(features, pairs, n_users=30)
    envs = _envs_for(interactions, data, pairs, planted)
    torch.manual_seed(0)
    learner = MaskLearner(frozen, torch.full((4,), 0.5), num_envs=2, sigma=0.01)
    learn_mask(learner, interactions, envs, epochs=30, batch_size=64, learning_rate=0.05,
               mask_lr=0.01, alpha=1.0, lam=0.1)
    mask = learner.mask.detach()
    assert mask[:2].min() > mask[2:].max() + 0.2, mask
    assert (mask >= 0).all() and (mask <= 1).all()


def test_closed_form_environment_gradients_match_autograd(frozen_factory):
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=3)
    frozen, interactions, data = frozen_factory(features, pairs, n_users=8)
    envs = _envs_for(interactions, data, pairs, planted)
    learner = MaskLearner(frozen, torch.tensor([0.9, 0.2, 0.7, 0.4]), num_envs=2, sigma=0.0)
    torch.manual_seed(1)
    index = torch.arange(len(interactions))
    users, pos, neg, items = frozen.training_batch(interactions, index)
    weight = learner.projection.weight
    mu = learner.gate()

    def env_loss(e):
        rows = envs == e
        _, p_c = frozen.user_parts(users[rows])
        content = frozen.content[items[rows]] * mu
        scores = frozen.id_scores(users[rows], items[rows]) + torch.einsum(
            "bmd,cd,bc->bm", content, weight, p_c)
        return frozen.model.interaction_losses(scores, users[rows], pos[rows], neg[rows]).mean()

    grads = torch.stack([torch.autograd.grad(env_loss(e), weight)[0] for e in range(2)])
    expected = (gradient_variance(grads, torch.ones(2)) * mu).square().sum()
    _, _, penalty = learner.loss(users, pos, neg, items, envs, alpha=1.0, lam=0.0)
    torch.testing.assert_close(penalty, expected, rtol=1e-4, atol=1e-12)
    assert expected > 0


def test_binary_mask_and_l0_regulariser(frozen_factory):
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=3)
    frozen, *_ = frozen_factory(features, pairs, n_users=8)
    learner = MaskLearner(frozen, torch.tensor([0.2, 0.7, 0.55, 0.45]), 2, sigma=0.0,
                          mask_type="binary", mask_reg="l0")
    assert learner.gate().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert learner.final_mask().tolist() == [0.0, 1.0, 1.0, 0.0]
    learner.sigma = 0.1
    expected = torch.special.ndtr(learner.mask.detach() / 0.1).sum()
    torch.testing.assert_close(learner.regulariser().detach(), expected)


def test_mask_summary_per_modality():
    summary = mask_summary(torch.tensor([0.1, 0.3, 1.0, 0.0, 0.5]), [("v", 2), ("t", 3)])
    assert abs(summary["v"]["mean"] - 0.2) < 1e-6 and abs(summary["v"]["max"] - 0.3) < 1e-6
    assert summary["t"]["min"] == 0.0 and summary["t"]["max"] == 1.0
