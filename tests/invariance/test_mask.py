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
        content = frozen.content_rows(items[rows]) * mu
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


def _loss_with_gated_content(learner, users, pos, neg, items, envs, alpha, lam):
    """The formulation before the gate moved onto W's columns: (mu * c) as a (U, D) tensor."""
    from torch.nn import functional as F

    frozen = learner.frozen
    mu = learner.gate()
    unique, inverse = torch.unique(items, return_inverse=True)
    gated = frozen.content_rows(unique) * mu
    _, user_content = frozen.user_parts(users)
    item_content = F.embedding(inverse, learner.projection(gated))
    scores = frozen.id_scores(users, items) + (item_content * user_content.unsqueeze(1)).sum(-1)
    losses = frozen.model.interaction_losses(scores, users, pos, neg)
    env_counts = torch.bincount(envs, minlength=learner.num_envs).float()
    present = (env_counts > 0).float()
    row_weight = 1.0 / env_counts[envs]
    env_losses = torch.zeros(learner.num_envs).index_add(0, envs, losses * row_weight)
    risk = (env_losses * present).sum() / present.sum()
    (dl_ds,) = torch.autograd.grad(losses.sum(), scores, create_graph=True)
    per_score = (dl_ds * row_weight.unsqueeze(1)).unsqueeze(-1) * user_content.unsqueeze(1)
    slots = (envs.unsqueeze(1) * len(unique) + inverse).reshape(-1)
    summed = torch.zeros(learner.num_envs * len(unique), per_score.shape[-1])
    summed = summed.index_add(0, slots, per_score.reshape(-1, per_score.shape[-1]))
    env_grads = summed.view(learner.num_envs, len(unique), -1).transpose(1, 2) @ gated
    penalty = (gradient_variance(env_grads, present) * mu).square().sum()
    l2 = 0.5 * frozen.model.proj_reg_weight * learner.projection.weight.square().sum()
    total = float(len(users)) * (risk + alpha * penalty) + lam * learner.regulariser() + l2
    return total, risk, penalty


def test_gate_on_the_projection_gives_the_gated_content_loss_and_gradients(frozen_factory):
    """W (mu * c) computed as (W diag mu) c: same loss, penalty and gradients up to rounding."""
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=3)
    frozen, interactions, data = frozen_factory(features, pairs, n_users=8, proj_reg_weight=0.3)
    with torch.no_grad():
        frozen.user_weight.normal_(generator=torch.Generator().manual_seed(3))
    envs = _envs_for(interactions, data, pairs, planted)
    learner = MaskLearner(frozen, torch.tensor([0.9, 0.2, 0.7, 0.4]), num_envs=2, sigma=0.05)
    torch.manual_seed(1)
    users, pos, neg, items = frozen.training_batch(interactions, torch.arange(len(interactions)))
    results = []
    for loss_fn in (learner.loss, lambda *a: _loss_with_gated_content(learner, *a)):
        torch.manual_seed(2)  # the same gate noise
        total, risk, penalty = loss_fn(users, pos, neg, items, envs, 1.5, 0.1)
        grads = torch.autograd.grad(total, [learner.mask, learner.projection.weight])
        results.append([total.detach(), risk.detach(), penalty.detach(), *grads])
    assert results[0][2] > 0
    for new, old in zip(*results):
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-7)
