import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_invrl.invariance import MaskLearner, environment_batches
from recbole_invrl.invariance.mask import learn_mask, mask_summary


def stable_and_flipping_data(n_users=30, n_items=48, per_env=(6, 6), seed=0, second_style=-1.0):
    """Dims 0-1 carry quality (clicked in both environments); dims 2-3 carry a style that
    users click in environment 0 and avoid in environment 1 (its sign flips), or ignore
    there (``second_style`` 0). ``per_env``: interactions per user in each environment."""
    rng = np.random.default_rng(seed)
    quality = np.where(np.arange(n_items) % 2 == 0, 1.0, -1.0)
    style = np.where((np.arange(n_items) // 2) % 2 == 0, 1.0, -1.0)
    features = np.stack([quality, quality, style, style], axis=1)
    pairs, envs = [], []
    for u in range(1, n_users + 1):
        for env, wanted_style in ((0, 1.0), (1, second_style)):
            styled = style == wanted_style if wanted_style else np.ones(n_items, dtype=bool)
            pool = np.flatnonzero((quality > 0) & styled & (np.arange(n_items) >= 2)) + 1
            chosen = rng.choice(pool, per_env[env], replace=False)
            pairs += [(u, int(i)) for i in chosen]
            envs += [env] * per_env[env]
    return features, pairs, np.array(envs)


def _envs_for(interactions, data, pairs, envs):
    lookup = {(u, i): e for (u, i), e in zip(pairs, envs)}
    users = data.id2token("user_id", interactions.users.numpy()).astype(int)
    items = data.id2token("item_id", interactions.items.numpy()).astype(int)
    return torch.tensor([lookup[(u, i)] for u, i in zip(users, items)])


@pytest.fixture
def imbalanced(frozen_factory):
    """A style that environment 0 follows and environment 1 ignores, so it pays off in the
    risk of both pooled and balanced environments (a spurious correlation whose strength
    varies), with a frozen backbone that uses every dimension."""
    features, pairs, planted = stable_and_flipping_data(n_users=30, n_items=48, per_env=(6, 6), second_style=0.0)
    frozen, interactions, data = frozen_factory(features, pairs, n_users=30)
    with torch.no_grad():
        frozen.model.projection.weight[0] = torch.tensor([1.0, 1.0, 1.0, 1.0])
    return frozen, interactions, _envs_for(interactions, data, pairs, planted)


def _learned_mask(frozen, interactions, envs, num_envs, alpha, epochs=40, seed=0):
    torch.manual_seed(seed)
    learner = MaskLearner(frozen, torch.full((4,), 0.5), num_envs=num_envs, sigma=0.01)
    history = learn_mask(learner, interactions, envs, epochs=epochs, batch_size=64, learning_rate=0.05,
                         mask_lr=0.01, alpha=alpha, lam=0.1)
    return learner.mask.detach(), history


def test_stable_dims_end_with_higher_gates(frozen_factory):
    features, pairs, planted = stable_and_flipping_data()
    frozen, interactions, data = frozen_factory(features, pairs, n_users=30)
    mask, _ = _learned_mask(frozen, interactions, _envs_for(interactions, data, pairs, planted), 2, 1.0, epochs=30)
    assert mask[:2].min() > mask[2:].max() + 0.2, mask
    assert (mask >= 0).all() and (mask <= 1).all()


def test_the_penalty_moves_the_mask_off_the_spurious_dims(imbalanced):
    """alpha = 0 and alpha = 1 give different masks, and the penalty closes the style dims
    further; its share of m's gradient is neither negligible nor everything."""
    frozen, interactions, envs = imbalanced
    without, _ = _learned_mask(frozen, interactions, envs, 2, alpha=0.0)
    with_penalty, history = _learned_mask(frozen, interactions, envs, 2, alpha=1.0)
    assert (without - with_penalty).abs().max() > 0.05, (without, with_penalty)
    assert with_penalty[2:].mean() < without[2:].mean() - 0.05
    shares = [epoch["penalty_share"] for epoch in history]
    assert 0.01 < np.mean(shares) < 0.99, shares


def test_planted_environments_give_a_better_mask_than_one_environment(imbalanced):
    frozen, interactions, envs = imbalanced
    planted, _ = _learned_mask(frozen, interactions, envs, 2, alpha=1.0)
    single, history = _learned_mask(frozen, interactions, torch.zeros_like(envs), 1, alpha=1.0)
    gap = lambda m: float(m[:2].mean() - m[2:].mean())  # noqa: E731
    assert gap(planted) > gap(single) + 0.01, (planted, single)
    assert planted[2:].mean() < single[2:].mean() - 0.04
    assert all(epoch["alpha_penalty"] == 0.0 for epoch in history)  # one environment: no variance


def _reference_loss(learner, users, pos, neg, items, envs, alpha, lam, mu):
    """Eq. 10 as the release writes it, computed densely and with autograd: one summed
    loss per environment, g_e = dL^e/dW, sum_e (g_e - mean)^2, times mu, squared."""
    frozen = learner.frozen
    risks, grads = [], []
    for e in envs.unique():
        rows = envs == e
        _, p_c = frozen.user_parts(users[rows])
        content = frozen.content_rows(items[rows]) * mu  # (b, M, D) gated content
        scores = frozen.id_scores(users[rows], items[rows]) + torch.einsum("bmd,cd,bc->bm", content, learner.weight, p_c)
        env_loss = frozen.model.interaction_losses(scores, users[rows], pos[rows], neg[rows]).sum()
        risks.append(env_loss)
        grads.append(torch.autograd.grad(env_loss, learner.weight, create_graph=True)[0])
    grads = torch.stack(grads)
    deviations = ((grads - grads.mean(0)) ** 2).sum(0)
    penalty = ((deviations * mu) ** 2).sum()
    risk = torch.stack(risks).mean()
    regulariser = (learner.mask ** 2).sum()
    l2 = 0.5 * frozen.model.proj_reg_weight * (learner.weight ** 2).sum()
    return risk + alpha * penalty + lam * regulariser + l2, risk, penalty


def test_loss_equals_a_dense_autograd_reference(frozen_factory):
    """Closed-form environment gradients, the gate on W's columns and the padded batches
    give the loss, penalty and gradients of the dense per-environment formulation."""
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=(3, 2))
    frozen, interactions, data = frozen_factory(features, pairs, n_users=8, proj_reg_weight=0.3)
    with torch.no_grad():
        frozen.model.user_embedding.weight.normal_(generator=torch.Generator().manual_seed(3))  # the parts share it
    envs = _envs_for(interactions, data, pairs, planted)
    learner = MaskLearner(frozen, torch.tensor([0.9, 0.2, 0.7, 0.4]), num_envs=2, sigma=0.0)
    with torch.no_grad():
        learner.weight.normal_(generator=torch.Generator().manual_seed(4))
    torch.manual_seed(1)
    batch = environment_batches(envs, 2, batch_size=64, cycle=True)[0]
    users, pos, neg, items = frozen.training_batch(interactions, batch.index)
    parts = learner.loss(users, pos, neg, items, batch, 1.5, 0.1)
    total, risk, penalty = _reference_loss(learner, users, pos, neg, items, envs[batch.index], 1.5, 0.1,
                                           learner.mask.clamp(0, 1))
    assert penalty > 0
    for new, old in ((parts.total, total), (parts.risk, risk), (parts.penalty, penalty)):
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-8)
    for param in (learner.mask, learner.weight):
        torch.testing.assert_close(torch.autograd.grad(parts.total, param, retain_graph=True)[0],
                                   torch.autograd.grad(total, param, retain_graph=True)[0], rtol=1e-4, atol=1e-7)


def _random_tables_bed(frozen_factory, seed: int, proj_reg_weight: float):
    """A small planted bed on a frozen UltraGCN-MM (gamma_C = 0) whose id tables are redrawn
    from ``seed``: (features, frozen, interactions, dataset, environments, the generator)."""
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=(3, 2))
    frozen, interactions, data = frozen_factory(features, pairs, n_users=8, gamma_c=0.0,
                                                proj_reg_weight=proj_reg_weight)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        frozen.model.user_embedding.weight.normal_(generator=generator)
        frozen.model.item_embedding.weight.normal_(generator=generator)
    return features, frozen, interactions, data, _envs_for(interactions, data, pairs, planted), generator


def _raw_content(model, features, data) -> torch.Tensor:
    """c_i for each internal item id: the item's raw feature row over its norm (row 0: padding)."""
    content = np.zeros((model.n_items, features.shape[1]))
    for internal in range(1, model.n_items):
        row = features[int(data.id2token("item_id", internal)) - 1]
        content[internal] = row / np.linalg.norm(row)
    return torch.tensor(content, dtype=torch.float32)


def test_loss_equals_a_reference_from_the_raw_tables(frozen_factory, eq10_reference):
    """Eq. 10 written out from the model's embedding tables and the raw features (c_i: the
    item's feature row over its norm), with autograd for g_e = dL^e / dW and UltraGCN's
    loss by hand (gamma_C = gamma_I = 0: softplus(-s_pos) + mean softplus(s_neg)): no
    helper of the code under test. A third, empty environment takes no part in the risk
    or the penalty."""
    features, frozen, interactions, data, envs, generator = _random_tables_bed(frozen_factory, 3, 0.3)
    model = frozen.model
    learner = MaskLearner(frozen, torch.tensor([0.9, 0.2, 0.7, 0.4]), num_envs=3, sigma=0.0)  # 2: empty
    with torch.no_grad():
        learner.weight.normal_(generator=generator)
    torch.manual_seed(1)
    batch = environment_batches(envs, 3, batch_size=64, cycle=True)[0]
    assert batch.active.tolist() == [1.0, 1.0, 0.0]
    users, pos, neg, items = frozen.training_batch(interactions, batch.index)
    assert torch.equal(items, torch.cat([pos.unsqueeze(1), neg], 1))
    parts = learner.loss(users, pos, neg, items, batch, 1.5, 0.1)

    content = _raw_content(model, features, data)
    U, T = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    mu, W = learner.mask, learner.weight  # sigma = 0: the gate is m itself inside (0, 1)
    risk, penalty = eq10_reference(U, T, W, content, mu, users, items, envs[batch.index], (0, 1), id_dims=2)
    total = risk + 1.5 * penalty + 0.1 * (mu ** 2).sum() + 0.5 * 0.3 * (W ** 2).sum()
    assert penalty > 0
    for new, old in ((parts.total, total), (parts.risk, risk), (parts.penalty, penalty),
                     (parts.regulariser, (mu ** 2).sum())):
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-7)
    for param in (learner.mask, learner.weight):
        torch.testing.assert_close(torch.autograd.grad(parts.total, param, retain_graph=True)[0],
                                   torch.autograd.grad(total, param, retain_graph=True)[0], rtol=1e-4, atol=1e-6)


def _small_noiseless_case(frozen_factory):
    """8 users in two planted environments, and a maker of the same noiseless learner
    (fixed m, seeded W) for the code under test and for the reference."""
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=(3, 2))
    frozen, interactions, data = frozen_factory(features, pairs, n_users=8)

    def learner():
        torch.manual_seed(5)
        made = MaskLearner(frozen, torch.tensor([0.9, 0.2, 0.7, 0.4]), 2, sigma=0.0)
        with torch.no_grad():
            made.weight.normal_()
        return made

    return frozen, interactions, _envs_for(interactions, data, pairs, planted), learner


def test_the_history_splits_the_mask_gradient_into_its_three_terms(frozen_factory):
    frozen, interactions, envs, learner = _small_noiseless_case(frozen_factory)

    history = learn_mask(learner(), interactions, envs, epochs=1, batch_size=64, learning_rate=0.0, mask_lr=0.0,
                         alpha=2.0, lam=0.3)
    reference = learner()
    batch = environment_batches(envs, 2, batch_size=64, cycle=True)[0]  # one step: the same draws
    users, pos, neg, items = frozen.training_batch(interactions, batch.index)
    _, risk, penalty = _reference_loss(reference, users, pos, neg, items, envs[batch.index], 2.0, 0.3,
                                       reference.mask)
    norm = lambda term: float(torch.autograd.grad(term, reference.mask, retain_graph=True)[0].norm())  # noqa: E731
    expected = {"grad_norm_risk": norm(risk), "grad_norm_penalty": norm(2.0 * penalty),
                "grad_norm_regulariser": float((2 * 0.3 * reference.mask.detach()).norm())}
    (epoch,) = history
    for key, value in expected.items():
        assert epoch[key] == pytest.approx(value, rel=1e-4), key
    assert epoch["alpha_penalty"] == pytest.approx(2.0 * float(penalty.detach()), rel=1e-4)
    assert epoch["penalty_share"] == pytest.approx(expected["grad_norm_penalty"] / sum(expected.values()), rel=1e-4)


def test_the_gradient_split_is_sampled_on_every_kth_step_and_leaves_the_losses_alone(frozen_factory):
    frozen, interactions, envs, learner = _small_noiseless_case(frozen_factory)

    def history(every):
        return learn_mask(learner(), interactions, envs, epochs=1, batch_size=8, learning_rate=0.0, mask_lr=0.0,
                          alpha=2.0, lam=0.3, grad_norm_every=every)

    (every_step,), (first_only,) = history(1), history(10 ** 6)
    for key in ("risk", "alpha_penalty", "lambda_regulariser"):  # means over all steps either way
        assert first_only[key] == pytest.approx(every_step[key], rel=1e-6), key
    reference = learner()  # the first step, computed apart from the code under test
    assert len(environment_batches(envs, 2, batch_size=8, cycle=True)) >= 3
    torch.manual_seed(5)
    learner()
    batch = environment_batches(envs, 2, batch_size=8, cycle=True)[0]  # the same draws as step 0
    users, pos, neg, items = frozen.training_batch(interactions, batch.index)
    _, risk, _ = _reference_loss(reference, users, pos, neg, items, envs[batch.index], 2.0, 0.3, reference.mask)
    first_norm = float(torch.autograd.grad(risk, reference.mask)[0].norm())
    assert first_only["grad_norm_risk"] == pytest.approx(first_norm, rel=1e-4)
    assert every_step["grad_norm_risk"] != pytest.approx(first_norm, rel=1e-3)  # a mean over other steps too


def test_mask_regularisers_and_binary_gate(frozen_factory):
    features, pairs, planted = stable_and_flipping_data(n_users=8, n_items=24, per_env=(3, 3))
    frozen, *_ = frozen_factory(features, pairs, n_users=8)
    mask = torch.tensor([0.2, 0.7, 0.55, 0.45])
    expected = {"l2": float((mask ** 2).sum()), "l2_half": float(((mask - 0.5) ** 2).sum())}
    for reg, value in expected.items():
        assert MaskLearner(frozen, mask, 2, sigma=0.0, mask_reg=reg).regulariser().item() == pytest.approx(value)
    binary = MaskLearner(frozen, mask, 2, sigma=0.0, mask_type="binary", mask_reg="l0")
    assert binary.gate().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert binary.final_mask().tolist() == [0.0, 1.0, 1.0, 0.0]
    binary.sigma = 0.1
    normal_cdf = 0.5 * (1 + torch.erf(mask / 0.1 / 2 ** 0.5))  # P(m + eps > 0): the expected open gates
    torch.testing.assert_close(binary.regulariser().detach(), normal_cdf.sum())


def test_the_mask_model_starts_from_the_pretrained_projection_or_afresh(frozen_factory):
    features, pairs, _ = stable_and_flipping_data(n_users=8, n_items=24, per_env=(3, 3))
    frozen, *_ = frozen_factory(features, pairs, n_users=8)
    with torch.no_grad():
        frozen.model.projection.weight.fill_(2.0)
    pretrained = MaskLearner(frozen, torch.full((4,), 0.5), 2, 0.01, model_start="pretrained")
    fresh = MaskLearner(frozen, torch.full((4,), 0.5), 2, 0.01, model_start="random")
    assert torch.equal(pretrained.weight, frozen.model.projection.weight)
    assert fresh.weight.abs().max() < 0.1  # std 0.01, as the release re-initialises it
    with pytest.raises(ValueError, match="mask_model_start"):
        MaskLearner(frozen, torch.full((4,), 0.5), 2, 0.01, model_start="warm")


def test_mask_summary_per_modality():
    summary = mask_summary(torch.tensor([0.1, 0.3, 1.0, 0.0, 0.5]), [("v", 2), ("t", 3)])
    assert abs(summary["v"]["mean"] - 0.2) < 1e-6 and abs(summary["v"]["max"] - 0.3) < 1e-6
    assert summary["t"]["min"] == 0.0 and summary["t"]["max"] == 1.0



def test_the_gate_is_m_plus_noise_clipped_to_the_unit_interval():
    """eq. 8, by hand: mu = min(max(m + sigma * eps, 0), 1) with the same noise; a closed
    gate (m = 0) is never negative, so it never flips the sign of the content it hides."""
    from recbole_invrl.invariance.mask import MaskGate

    m = torch.tensor([0.0] * 500 + [1.0] * 500 + [0.5] * 500)
    gate = MaskGate(m, num_envs=2, sigma=0.3)
    torch.manual_seed(3)
    mu = gate.gate().detach().numpy()
    torch.manual_seed(3)
    eps = torch.randn(len(m)).numpy()
    expected = [min(max(float(v) + 0.3 * float(e), 0.0), 1.0) for v, e in zip(m, eps)]
    np.testing.assert_allclose(mu, expected, rtol=0, atol=1e-7)
    closed, open_ = mu[:500], mu[500:1000]
    assert closed.min() == 0.0 and 0.4 < (closed == 0.0).mean() < 0.6  # half the draws fall below 0
    assert open_.max() == 1.0 and 0.4 < (open_ == 1.0).mean() < 0.6


def _raw_step(eq10_reference, model, features, data, learner, users, items, row_envs, alpha, lam):
    """(risk, penalty, regulariser) of eq. 10 on one step, from the raw tables (as in
    ``test_loss_equals_a_reference_from_the_raw_tables``; sigma = 0, gamma_C = 0)."""
    content = _raw_content(model, features, data)
    U, T = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    mu, W = learner.mask, learner.weight
    risk, penalty = eq10_reference(U, T, W, content, mu, users, items, row_envs, row_envs.unique().tolist(),
                                   id_dims=2)
    return risk, penalty, (mu ** 2).sum()


def test_the_epoch_history_equals_a_step_by_step_reference(frozen_factory, eq10_reference):
    """With both step sizes 0 the parameters stay put, so every step of an epoch can be
    recomputed from the raw tables with the same draws (the batch layout, then per step the
    negatives and the gate's noise): the history holds the means over the steps of risk,
    alpha x penalty and lambda x R(m), and the means over steps 0, k, 2k, ... of the norms
    of the gradient each puts on m."""
    features, frozen, interactions, data, envs, _ = _random_tables_bed(frozen_factory, 11, 0.0)
    model = frozen.model

    def learner():
        made = MaskLearner(frozen, torch.tensor([0.9, 0.2, 0.7, 0.4]), 2, sigma=0.0)
        with torch.no_grad():
            made.weight.copy_(torch.randn(2, 4, generator=torch.Generator().manual_seed(12)))
        return made

    seen = []

    def progress(epochs):
        seen.append(list(epochs))
        return epochs

    torch.manual_seed(13)
    (epoch,) = learn_mask(learner(), interactions, envs, epochs=1, batch_size=8, learning_rate=0.0, mask_lr=0.0,
                          alpha=2.0, lam=0.3, progress=progress, grad_norm_every=2)
    assert seen == [[0]]
    torch.manual_seed(13)
    reference = learner()
    batches = environment_batches(envs, 2, batch_size=8, cycle=True)
    assert len(batches) == 3 and all(b.active_envs == [True, True] for b in batches)  # 24 and 16 rows
    totals, norms = np.zeros(3), np.zeros(3)
    for step, batch in enumerate(batches):
        users, _, _, items = frozen.training_batch(interactions, batch.index)
        torch.randn(4)  # the gate's noise (sigma = 0)
        risk, penalty, reg = _raw_step(eq10_reference, model, features, data, reference, users, items, envs[batch.index], 2.0, 0.3)
        totals += [risk.item(), 2.0 * penalty.item(), 0.3 * reg.item()]
        if step % 2 == 0:
            norms += [float(torch.autograd.grad(term, reference.mask, retain_graph=True)[0].norm())
                      for term in (risk, 2.0 * penalty, 0.3 * reg)]
    expected = dict(zip(("risk", "alpha_penalty", "lambda_regulariser"), totals / 3))
    expected.update(zip(("grad_norm_risk", "grad_norm_penalty", "grad_norm_regulariser"), norms / 2))
    for key, value in expected.items():
        assert epoch[key] == pytest.approx(value, rel=1e-4), key
    assert epoch["penalty_share"] == pytest.approx(norms[1] / norms.sum(), rel=1e-4)


def test_epoch_summary_gives_the_penalty_share_of_the_three_norms():
    from recbole_invrl.invariance.mask import epoch_summary

    values = {"risk": 5.0, "grad_norm_risk": 0.1, "grad_norm_penalty": 0.2, "grad_norm_regulariser": 0.1}
    assert epoch_summary(values) == {**values, "penalty_share": pytest.approx(0.5)}
    zero = {"grad_norm_risk": 0.0, "grad_norm_penalty": 0.0, "grad_norm_regulariser": 0.0}
    assert epoch_summary(zero)["penalty_share"] == 0.0


def test_the_mask_step_size_is_given_or_spread_over_the_iteration_s_steps():
    from recbole_invrl.invariance.mask import mask_step_size

    envs = torch.tensor([0] * 5 + [1] * 13)  # the largest environment: 13 rows, 4 batches of 4
    assert mask_step_size(0.02, 0.6, envs, 3, batch_size=4, epochs=2) == 0.02
    assert mask_step_size("0.5", 0.6, envs, 3, batch_size=4, epochs=2) == 0.5
    assert mask_step_size("auto", 0.6, envs, 3, batch_size=4, epochs=2) == pytest.approx(0.6 / 8)
    assert mask_step_size("auto", 0.5, torch.zeros(3, dtype=torch.long), 1, batch_size=8, epochs=1) == 0.5
    assert mask_step_size("auto", 0.5, envs, 2, batch_size=4, epochs=0) == 0.5  # no step: the whole travel


def test_mask_learning_switches_anomaly_mode_off():
    from recbole_invrl.invariance.mask import without_anomaly_checks

    with torch.autograd.set_detect_anomaly(True):
        with without_anomaly_checks():
            assert not torch.is_anomaly_enabled()
        assert torch.is_anomaly_enabled()


def test_squared_deviations_leave_out_the_inactive_environments():
    from recbole_invrl.invariance.mask import squared_deviations

    grads = torch.tensor([[[1.0, 2.0]], [[50.0, -7.0]], [[3.0, 6.0]]])  # (E = 3, 1, 2); environment 1 sits out
    # mean of environments 0 and 2: (2, 4); deviations (1 + 1, 4 + 4)
    assert squared_deviations(grads, torch.tensor([1.0, 0.0, 1.0])).tolist() == [[2.0, 8.0]]
    assert squared_deviations(grads[:1], torch.tensor([1.0])).tolist() == [[0.0, 0.0]]
    assert squared_deviations(torch.zeros(2, 3), torch.zeros(2)).tolist() == [0.0, 0.0, 0.0]  # nothing active


def test_the_binary_gate_opens_strictly_above_one_half_and_bad_settings_name_their_key():
    from recbole_invrl.invariance.mask import MaskGate

    gate = MaskGate(torch.tensor([0.5, 0.5001, 0.4999]), num_envs=2, sigma=0.0, mask_type="binary")
    assert gate.gate().tolist() == [0.0, 1.0, 0.0]
    for key, kwargs in (("mask_type", {"mask_type": "ternary"}), ("mask_reg", {"mask_reg": "l1"}),
                        ("mask_model_start", {"model_start": "warm"})):
        with pytest.raises(ValueError, match=rf"^{key}: expected one of"):
            MaskGate(torch.ones(2), 2, 0.1, **kwargs)
