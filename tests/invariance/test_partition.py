import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from recbole_invrl.invariance import environment_batches, environment_models
from recbole_invrl.invariance.common import EnvironmentBatch
from recbole_invrl.invariance.partition import (
    environment_sizes,
    initial_environments,
    moved_share,
    train_environments,
)

KINDS = ("shared", "fresh")


def planted_style_data(n_users=30, n_items=40, per_env=(6, 6), seed=0):
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
            pairs += [(u, int(i)) for i in rng.choice(pool, per_env[s], replace=False)]
    return features, pairs, style


def _planted(interactions, data, style):
    return style[data.id2token("item_id", interactions.items.numpy()).astype(int) - 1]


def test_shared_models_from_a_random_start_recover_two_planted_environments(frozen_factory):
    """Psi keeps the style dims; the symmetric start is broken by each environment model
    training on its own rows."""
    features, pairs, style = planted_style_data()
    frozen, interactions, data = frozen_factory(features, pairs, n_users=30)
    truth = _planted(interactions, data, style)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    torch.manual_seed(0)
    envs = initial_environments("random", frozen, interactions, 2)
    assert abs(adjusted_rand_score(truth, envs.numpy())) < 0.05
    shares = []
    for _ in range(6):
        models = environment_models("shared", frozen, 2, mask, l1_weight=0.0)
        train_environments(models, interactions, envs, epochs=3, batch_size=64, learning_rate=0.05)
        new_envs = models.assign(interactions, "likelihood", samples=50)
        shares.append(moved_share(envs, new_envs).item())
        envs = new_envs
    assert adjusted_rand_score(truth, envs.numpy()) >= 0.5, shares
    assert shares[-1] <= 0.05
    assert environment_sizes(envs, 2).sum() == len(interactions)


def _copy_into(single, batched, env):
    with torch.no_grad():
        single.weights[0].copy_(batched.weights[env])
        if hasattr(batched, "user"):
            single.user[0].copy_(batched.user[env])
            single.item[0].copy_(batched.item[env])


@pytest.mark.parametrize("kind", KINDS)
def test_batched_environments_equal_separate_training(frozen_factory, kind):
    """E models trained together on per-environment batches end where each ends trained
    alone on its own rows, also when one environment sits out the last steps."""
    features, pairs, _ = planted_style_data(n_users=12, n_items=20, per_env=(3, 3))
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=12, proj_reg_weight=0.3, id_reg_weight=0.2)
    with torch.no_grad():
        frozen.model.projection.weight.normal_()
    mask = torch.tensor([0.8, 0.6, 0.1, 0.0])
    envs = (torch.arange(len(interactions)) % 3 == 0).long()  # 2:1, so environment 1 runs out first
    torch.manual_seed(2)
    batched = environment_models(kind, frozen, 2, mask, l1_weight=0.05)
    separate = [environment_models(kind, frozen, 1, mask, l1_weight=0.05) for _ in range(2)]
    for e, single in enumerate(separate):
        _copy_into(single, batched, e)
    opts_b = batched.optimizer(0.01)
    opts = [single.optimizer(0.01) for single in separate]
    torch.manual_seed(3)
    sat_out = 0
    for _ in range(3):
        for batch in environment_batches(envs, 2, batch_size=8, cycle=False):
            users, pos, neg, items = frozen.training_batch(interactions, batch.index)
            for opt in opts_b:
                opt.zero_grad()
            batched.loss(users, pos, neg, items, batch).backward()
            batched.drop_inactive_gradients(batch)
            for opt in opts_b:
                opt.step()
            sat_out += not all(batch.active_envs)
            for e, (single, opt) in enumerate(zip(separate, opts)):
                rows = batch.envs == e
                if not rows.any():
                    continue
                alone = EnvironmentBatch(batch.index[rows], batch.slot[rows] - e * 8, torch.ones(1), [True], 8)
                for o in opt:
                    o.zero_grad()
                single.loss(users[rows], pos[rows], neg[rows], items[rows], alone).backward()
                for o in opt:
                    o.step()
    assert sat_out > 0
    for e, single in enumerate(separate):
        torch.testing.assert_close(batched.weights[e], single.weights[0], rtol=1e-5, atol=1e-6)
        if kind == "fresh":
            torch.testing.assert_close(batched.user[e], single.user[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.item[e], single.item[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched.weights[0], batched.weights[1])


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_environment_does_not_crash(frozen_factory, kind):
    features, pairs, _ = planted_style_data(n_users=10, n_items=20, per_env=(3, 3))
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=10)
    envs = torch.zeros(len(interactions), dtype=torch.long)  # environments 1 and 2 are empty
    models = environment_models(kind, frozen, 3, torch.full((4,), 0.5), l1_weight=0.01)
    before = models.weights[1].detach().clone()
    train_environments(models, interactions, envs, epochs=1, batch_size=32, learning_rate=0.01)
    assert torch.equal(models.weights[1], before)  # no rows, no step
    for rule in ("score", "likelihood"):
        new_envs = models.assign(interactions, rule, samples=5)
        assert new_envs.shape == envs.shape and new_envs.max() < 3


@pytest.mark.parametrize("kind", KINDS)
def test_training_scores_equal_the_scores_of_every_environment(frozen_factory, kind):
    """<p_b, W_e g c_i> on the user side for each row's own environment (``scores``) equals
    the (items, E) table of every environment (``all_scores``, which leaves out the id term
    that shared models have in common)."""
    features, pairs, _ = planted_style_data(n_users=8, n_items=16, per_env=(3, 3))
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=8)
    with torch.no_grad():
        frozen.model.user_embedding.weight.normal_(generator=torch.Generator().manual_seed(0))  # the parts share it
    models = environment_models(kind, frozen, 3, torch.tensor([0.9, 0.5, 0.2, 0.0]), l1_weight=0.0)
    with torch.no_grad():
        for weight in models.weights:
            weight.normal_(generator=torch.Generator().manual_seed(1))
    envs = torch.arange(len(interactions)) % 3
    torch.manual_seed(2)
    batch = environment_batches(envs, 3, batch_size=4, cycle=False)[0]
    users, _, _, items = frozen.training_batch(interactions, batch.index)
    n, m = items.shape
    table = models.all_scores(users.repeat_interleave(m), items.reshape(-1)).view(n, m, 3)
    expected = table.gather(2, batch.envs.view(n, 1, 1).expand(n, m, 1)).squeeze(2)
    if kind == "shared":
        expected = expected + frozen.id_scores(users, items)
    torch.testing.assert_close(models.scores(users, items, batch), expected)
    stored = frozen.table
    frozen.table = None  # as at Kwai size: rows gathered and normalised on demand
    torch.testing.assert_close(models.scores(users, items, batch), expected)
    frozen.table = stored


def test_score_start_cuts_the_ranked_interactions_into_equal_blocks(frozen_factory):
    features, pairs, _ = planted_style_data(n_users=10, n_items=20, per_env=(3, 4))
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=10)
    with torch.no_grad():
        frozen.model.projection.weight.normal_(generator=torch.Generator().manual_seed(0))
    envs = initial_environments("score", frozen, interactions, 3)
    sizes = torch.bincount(envs, minlength=3)
    assert sizes.sum() == len(interactions) and sizes.max() - sizes.min() <= 1
    with torch.no_grad():  # the pretrained score of every interaction, eq. 14 by hand
        user_vectors = frozen.model.user_embedding.weight[interactions.users]
        item_ids = frozen.model.item_embedding.weight[interactions.items]
        rows = torch.nn.functional.normalize(frozen.model.content.dense_v_feat, dim=1)[interactions.items]
        scores = (user_vectors * torch.cat([item_ids, rows @ frozen.model.projection.weight.T], 1)).sum(1)
    order = torch.argsort(scores)
    assert (envs[order].diff() >= 0).all()  # blocks follow the score
    assert initial_environments("random", frozen, interactions, 3).max() == 2
    with pytest.raises(ValueError, match="partition_start"):
        initial_environments("kmeans", frozen, interactions, 3)


def test_likelihood_separation_ignores_a_model_that_scores_everything_higher(frozen_factory):
    """Environment 1 adds 5 to every item's score (a bias dimension) but prefers style B;
    the raw score (eq. 7 as written) hands it every interaction, the log-probability over
    the items hands it the style-B ones only."""
    n_items = 20
    style = np.arange(n_items) % 2
    features = np.c_[np.ones(n_items), np.where(style == 0, 1.0, -1.0), np.zeros(n_items), np.zeros(n_items)]
    rng = np.random.default_rng(0)
    pairs = [(u, int(i)) for u in range(1, 11) for i in rng.choice(np.arange(3, n_items + 1), 6, replace=False)]
    frozen, interactions, data = frozen_factory(features, pairs, n_users=10)
    models = environment_models("shared", frozen, 2, torch.zeros(4), l1_weight=0.0)
    norm = float(np.linalg.norm(features[0]))  # rows are L2-normalised: every row has this norm
    with torch.no_grad():
        models.weights[0].zero_()
        models.weights[1].zero_()
        models.weights[0][0, 1] = norm  # environment 0: +1 for style A, -1 for B
        models.weights[1][0, 0] = 5 * norm
        models.weights[1][0, 1] = -norm  # environment 1: 5 + (-1 for A, +1 for B)
    item_style = style[data.id2token("item_id", interactions.items.numpy()).astype(int) - 1]
    raw = models.assign(interactions, "score")
    assert raw.tolist() == [1] * len(interactions)
    torch.manual_seed(0)
    likely = models.assign(interactions, "likelihood", samples=4000)
    # exact: s_e(i) - log sum_j exp s_e(j) over all items; A items score +1 / -1 + 5 ...
    logp = {0: {0: 1 - np.log(10 * np.e + 10 / np.e)}, 1: {0: 4 - np.log(10 * np.e ** 4 + 10 * np.e ** 6)}}
    logp[0][1] = -1 - np.log(10 * np.e + 10 / np.e)
    logp[1][1] = 6 - np.log(10 * np.e ** 4 + 10 * np.e ** 6)
    expected = [int(logp[1][s] > logp[0][s]) for s in item_style]
    assert likely.tolist() == expected and 0 < sum(expected) < len(expected)
    # what the rule compares: log p_1 - log p_0 of each interaction, up to the sampling error
    torch.manual_seed(0)
    table = models.assignment_scores(interactions, "likelihood", samples=4000)
    gap = [logp[1][s] - logp[0][s] for s in item_style]
    np.testing.assert_allclose((table[:, 1] - table[:, 0]).numpy(), gap, atol=0.05)
    raw_table = models.assignment_scores(interactions, "score")
    np.testing.assert_allclose((raw_table[:, 1] - raw_table[:, 0]).numpy(), [4 - 1 if s == 0 else 6 + 1 for s in item_style],
                               atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_the_score_start_recovers_the_planted_environments_of_the_test_bed(pretrained_bed, kind):
    """From the pretrained backbone alone (no truth), E = 2 environments on the full
    content match the planted A/B with ARI >= 0.5; a uniformly random start does not."""
    frozen, interactions, planted = pretrained_bed
    mask = torch.full((frozen.model.content.dim,), 0.5)

    def partition(start):
        torch.manual_seed(0)
        envs = initial_environments(start, frozen, interactions, 2)
        for _ in range(4):
            models = environment_models(kind, frozen, 2, mask, l1_weight=0.001)
            train_environments(models, interactions, envs, epochs=2, batch_size=256, learning_rate=0.001)
            envs = models.assign(interactions, "likelihood", samples=50)
        return adjusted_rand_score(planted, envs.numpy())

    assert partition("score") >= 0.5
    assert partition("random") < 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_the_l1_penalty_acts_on_the_invariant_columns_only(frozen_factory, kind):
    """d/dW of the regulariser is l1 * sign(W_e) * m_d (plus the backbone's L2, set to 0 here):
    nothing on a column the mask calls variant (m_d = 0)."""
    features, pairs, _ = planted_style_data(n_users=6, n_items=12, per_env=(2, 2))
    frozen, *_ = frozen_factory(features, pairs, n_users=6, proj_reg_weight=0.0)
    mask = torch.tensor([1.0, 0.5, 0.0, 0.0])
    models = environment_models(kind, frozen, 2, mask, l1_weight=0.3)
    with torch.no_grad():
        for weight in models.weights:
            weight.normal_(generator=torch.Generator().manual_seed(4))
    active = torch.tensor([1.0, 0.0])  # environment 1 sits out: no penalty on it either
    if kind == "fresh":
        models.frozen.parts.id_reg = 0.0
    models.regularisation(active, models.stacked_weight()).backward()
    expected = 0.3 * torch.sign(models.weights[0].detach()) * mask
    torch.testing.assert_close(models.weights[0].grad, expected)
    assert (models.weights[0].grad[:, 2:] == 0).all()
    assert models.weights[1].grad is None or (models.weights[1].grad == 0).all()


def test_each_interaction_is_scored_against_its_own_user_s_normaliser(frozen_factory):
    """Users differ in how strongly content moves their scores (p_u^(c) = (0.5 u, 0)), so
    their log-softmax normalisers differ; eq. 7's table must subtract each interaction's
    own user's. Reference: the exact log-probabilities over all items, written out per user."""
    n_items, n_users = 20, 10
    style = np.arange(n_items) % 2
    features = np.c_[np.ones(n_items), np.where(style == 0, 1.0, -1.0), np.zeros(n_items), np.zeros(n_items)]
    rng = np.random.default_rng(1)
    pairs = [(u, int(i)) for u in range(1, n_users + 1) for i in rng.choice(np.arange(3, n_items + 1), 6, replace=False)]
    frozen, interactions, data = frozen_factory(features, pairs, n_users=n_users)
    strength = np.zeros(n_users + 1)  # by internal user id (0 is padding)
    for internal in range(1, n_users + 1):
        strength[internal] = 0.5 * int(data.id2token("user_id", internal))
    frozen.parts.user_content[:, 0] = torch.tensor(strength, dtype=torch.float32)
    models = environment_models("shared", frozen, 2, torch.zeros(4), l1_weight=0.0)
    norm = float(np.linalg.norm(features[0]))
    with torch.no_grad():
        models.weights[0].zero_()
        models.weights[1].zero_()
        models.weights[0][0, 1] = norm  # environment 0: s = +1 on style A, -1 on B
        models.weights[1][0, 0] = 2 * norm  # environment 1: s = 2 - 1 on A, 2 + 1 on B
        models.weights[1][0, 1] = -norm
    item_style = style[data.id2token("item_id", interactions.items.numpy()).astype(int) - 1]
    content_score = {0: np.where(style == 0, 1.0, -1.0), 1: np.where(style == 0, 1.0, 3.0)}

    def log_p(env: int, user: int, s: int) -> float:
        scores = strength[user] * content_score[env]  # over every item
        own = strength[user] * (1.0 if env == 0 and s == 0 else -1.0 if env == 0 else 1.0 if s == 0 else 3.0)
        return own - np.log(np.exp(scores).sum())

    users = interactions.users.numpy()
    expected_gap = [log_p(1, u, s) - log_p(0, u, s) for u, s in zip(users, item_style)]
    torch.manual_seed(0)
    table = models.assignment_scores(interactions, "likelihood", samples=4000)
    np.testing.assert_allclose((table[:, 1] - table[:, 0]).numpy(), expected_gap, atol=0.05)
    assert np.ptp(expected_gap) > 1.0  # the users' normalisers do differ


def _content_table(features, data, n_items):
    """c_i of every internal item id from the feature matrix written to the dataset: the
    row of the item's token, divided by its L2 norm (row 0, padding, stays zero)."""
    table = np.zeros((n_items, features.shape[1]))
    for internal in range(1, n_items):
        row = features[int(data.id2token("item_id", internal)) - 1]
        table[internal] = row / np.linalg.norm(row)
    return torch.tensor(table, dtype=torch.float32)


def _plain_losses(scores):
    """Per-row UltraGCN loss with gamma_C = gamma_I = 0 and unit weights: softplus(-s_pos)
    + the mean over the negatives of softplus(s_neg)."""
    return torch.nn.functional.softplus(-scores[:, 0]) + torch.nn.functional.softplus(scores[:, 1:]).mean(1)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_and_loss_equal_a_reference_from_the_raw_tables(frozen_factory, kind):
    """Every environment's score, written out from the model's embedding tables, the raw
    features and each W_e (shared: frozen ids, W_e on (1 - m) * c; fresh: the model's own
    ids, W_e on c), and eq. 6's loss with the L1 and L2 terms of the active environments,
    summed by hand."""
    features, pairs, _ = planted_style_data(n_users=8, n_items=16, per_env=(3, 3))
    frozen, interactions, data = frozen_factory(features, pairs, n_users=8, gamma_c=0.0, proj_reg_weight=0.3,
                                                id_reg_weight=0.2)
    model = frozen.model
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.user_embedding.weight.normal_(generator=generator)
        model.item_embedding.weight.normal_(generator=generator)
    mask = torch.tensor([0.9, 0.5, 0.2, 0.0])
    models = environment_models(kind, frozen, 3, mask, l1_weight=0.4)
    with torch.no_grad():
        for weight in models.weights:
            weight.normal_(generator=generator)
        if kind == "fresh":
            models.user.normal_(generator=generator)
            models.item.normal_(generator=generator)
    content = _content_table(features, data, model.n_items)
    K = 2
    U, T = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    W = [weight.detach() for weight in models.weights]

    def score(e, u, i):
        if kind == "shared":
            user, item, gate = U[u], T[i], 1.0 - mask
        else:
            user, item, gate = models.user[e, u].detach(), models.item[e, i].detach(), torch.ones(4)
        return float(user[:K] @ item + user[K:] @ (W[e] @ (gate * content[i])))

    users, items = interactions.users[:12], interactions.items[:12]
    table = models.all_scores(users, items)
    for row, (u, i) in enumerate(zip(users.tolist(), items.tolist())):
        for e in range(3):
            shared_id = float(U[u, :K] @ T[i])
            expected = score(e, u, i) - (shared_id if kind == "shared" else 0.0)  # all_scores leaves it out
            assert table[row, e].item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(models.assignment_scores(interactions, "score")[:12], table)

    envs = torch.tensor([0, 2] * (len(interactions) // 2) + [0] * (len(interactions) % 2))  # environment 1 empty
    torch.manual_seed(2)
    batch = environment_batches(envs, 3, batch_size=4, cycle=False)[0]
    users, positives, negatives, items = frozen.training_batch(interactions, batch.index)
    assert torch.equal(items, torch.cat([positives.unsqueeze(1), negatives], 1))
    row_envs = envs[batch.index]
    scores = torch.tensor([[score(int(e), int(u), int(i)) for i in row]
                           for e, u, row in zip(row_envs, users, items.tolist())])
    torch.testing.assert_close(models.scores(users, items, batch), scores, rtol=1e-5, atol=1e-5)
    expected = float(_plain_losses(scores).sum())
    for e in (0, 2):  # the active environments
        weight = W[e]
        expected += 0.4 * float((weight.abs() * mask).sum()) + 0.5 * 0.3 * float(weight.square().sum())
        if kind == "fresh":
            expected += 0.5 * 0.2 * float(models.user[e].detach().square().sum() + models.item[e].detach().square().sum())
    assert models.loss(users, positives, negatives, items, batch).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_optimizers_take_the_step_size_and_training_reports_each_epoch(frozen_factory, kind):
    """Adam on every W_e (and, fresh, Adagrad on the ids) at the given step size; the
    ``progress`` wrapper sees the epochs, and an epoch moves every non-empty environment."""
    features, pairs, _ = planted_style_data(n_users=6, n_items=12, per_env=(2, 2))
    frozen, interactions, _ = frozen_factory(features, pairs, n_users=6)
    models = environment_models(kind, frozen, 2, torch.full((4,), 0.5), l1_weight=0.01)
    optimizers = models.optimizer(0.037)
    assert [type(o).__name__ for o in optimizers] == (["Adam"] if kind == "shared" else ["Adagrad", "Adam"])
    assert all(group["lr"] == 0.037 for o in optimizers for group in o.param_groups)
    seen = []

    def progress(epochs):
        seen.append(list(epochs))
        return epochs

    before = [w.detach().clone() for w in models.weights]
    envs = torch.arange(len(interactions)) % 2
    train_environments(models, interactions, envs, epochs=3, batch_size=64, learning_rate=0.01, progress=progress)
    assert seen == [[0, 1, 2]]
    assert all(not torch.equal(w, b) for w, b in zip(models.weights, before))


def test_environment_sizes_count_every_environment_and_a_bad_kind_is_named(frozen_factory):
    assert environment_sizes(torch.tensor([0, 0, 1]), 4).tolist() == [2, 1, 0, 0]
    assert moved_share(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1])).item() == 0.5
    with pytest.raises(ValueError, match="partition_models: expected one of"):
        environment_models("bespoke", None, 2, torch.zeros(4), 0.0)
