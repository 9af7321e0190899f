"""M3 and M4 through the backbone's forward pass (``forward_path``), on MMGCN and, against
the closed-form eq. 14 path, on UltraGCN-MM."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_invrl.invariance import FrozenBackbone, MaskLearner, TrainingInteractions, environment_batches
from recbole_invrl.invariance.forward_path import ForwardBackbone, ForwardEnvironmentModels, ForwardMaskLearner
from recbole_invrl.invariance.mask import without_anomaly_checks
from recbole_invrl.invariance.paths import backbone_view, environment_models_for, mask_learner_for
from recbole_invrl.model.general_recommender import GRCN, MMGCN, UltraGCNMM

N_USERS, N_ITEMS = 12, 16


def toy_pairs(seed=0):
    rng = np.random.default_rng(seed)
    return [(u, int(i)) for u in range(1, N_USERS + 1) for i in rng.choice(np.arange(3, N_ITEMS + 1), 5, replace=False)]


@pytest.fixture
def toy_data(atomic_dataset, tmp_path):
    rng = np.random.default_rng(1)
    atomic_dataset(tmp_path, "fwd", toy_pairs(), [(u, 1) for u in range(1, N_USERS + 1)],
                   [(u, 2) for u in range(1, N_USERS + 1)], dense={"v_feat": rng.normal(size=(N_ITEMS, 4))},
                   words={"t_words": [[i % 4 + 1, 5] for i in range(N_ITEMS)]})
    return tmp_path


def build_model(build, cls, **config):
    cfg, data, train, *_ = build(cls.__name__, "fwd", **config)
    torch.manual_seed(0)
    model = cls(cfg, train._dataset)
    return model, TrainingInteractions.from_dataset(train._dataset, torch.device("cpu"))


@pytest.fixture
def mmgcn(build, toy_data):
    # v_feat (4 wide) goes through an input map to 3; the words (2 wide) straight into layer 0
    return build_model(build, MMGCN, embedding_size=3, latent_size=3, n_layers=2, word_embedding_size=2)


@pytest.fixture(params=["MMGCN", "GRCN"])
def graph_model(request, build, toy_data):
    """(model, interactions, shapes of its content weights, their offsets in c_i)."""
    if request.param == "MMGCN":
        model, interactions = build_model(build, MMGCN, embedding_size=3, latent_size=3, n_layers=2,
                                          word_embedding_size=2)
        return model, interactions, [(3, 4), (2, 2), (3, 2)], [0, 4, 4]  # input map; layer 0's W_1, W_2
    model, interactions = build_model(build, GRCN, embedding_size=3, latent_size=3, word_embedding_size=2)
    return model, interactions, [(3, 4), (3, 2)], [0, 4]  # W_m of each modality


def two_env_batch(interactions, seed=0):
    torch.manual_seed(seed)
    envs = torch.randint(2, (len(interactions),))
    return envs, environment_batches(envs, 2, 64, cycle=True)[0]


def test_copies_share_data_and_frozen_ids_and_own_the_rest(mmgcn):
    model, _ = mmgcn
    view = ForwardBackbone(model)
    copy, fresh = view.trainable_copy(), view.trainable_copy(fresh=True)
    assert copy.id_embedding.weight is model.id_embedding.weight and not copy.id_embedding.weight.requires_grad
    assert copy.graph.source is model.graph.source and fresh.content.dense_v_feat is model.content.dense_v_feat
    assert fresh.content.word_embeddings["t_words"].weight is model.content.word_embeddings["t_words"].weight
    w, w_copy, w_fresh = (m.modalities[0].input_map.weight for m in (model, copy, fresh))
    assert w_copy is not w and torch.equal(w_copy, w) and w_copy.requires_grad
    assert not torch.allclose(w_fresh, w) and fresh.id_embedding.weight.requires_grad
    assert not torch.allclose(fresh.id_embedding.weight, model.id_embedding.weight)


def test_mask_penalty_equals_per_environment_gradients_of_the_bpr_loss(graph_model):
    """Eq. 10's penalty against g_e computed environment by environment, each from the
    model's plain BPR on that environment's rows (no index_add, no padding)."""
    model, interactions, shapes, starts = graph_model
    view = ForwardBackbone(model)
    envs, batch = two_env_batch(interactions)
    mask = torch.rand(model.content.dim)
    learner = ForwardMaskLearner(view, mask, num_envs=2, sigma=0.0)
    users, positives, negatives, items = view.training_batch(interactions, batch.index)
    parts = learner.loss(users, positives, negatives, items, batch, alpha=1.0, lam=0.0)

    weights = [w for w, _ in learner.model.forward_parts().weights]
    assert [tuple(w.shape) for w in weights] == shapes
    row_envs = envs[batch.index]
    grads, env_losses = [], []
    for e in range(2):
        rows = row_envs == e
        learner.model.set_content_mask(mask)
        nodes = learner.model.propagate()
        u = nodes[users[rows]]
        pos, neg = nodes[model.n_users + positives[rows]], nodes[model.n_users + negatives[rows, 0]]
        loss = F.softplus((u * neg).sum(-1) - (u * pos).sum(-1)).sum()
        env_losses.append(loss)
        grads.append(torch.autograd.grad(loss, weights))
    expected = sum((((g0 - g1) ** 2 / 2) * mask[s:s + w.shape[1]]).square().sum()
                   for (g0, g1, w, s) in zip(grads[0], grads[1], weights, starts))
    assert parts.risk.item() == pytest.approx(torch.stack(env_losses).mean().item(), rel=1e-5)
    assert parts.penalty.item() == pytest.approx(expected.item(), rel=1e-4)
    assert parts.penalty.item() > 0
    with without_anomaly_checks():
        (penalty_grad,) = torch.autograd.grad(parts.penalty, learner.mask)
    assert penalty_grad.abs().sum() > 0  # the penalty acts on m


def test_forward_path_on_ultragcn_mm_equals_the_eq14_path(build, toy_data):
    """On a model that has the eq. 14 form, differentiating its forward gives what the
    closed form gives: risk, penalty and the gradients on m and W."""
    model, interactions = build_model(build, UltraGCNMM, embedding_size=3, content_size=2, neg_num=3,
                                      word_embedding_size=2, proj_reg_weight=0.01)
    with torch.no_grad():
        model.projection.weight.normal_()
        model.user_embedding.weight.normal_()
    eq14, forward = FrozenBackbone(model), ForwardBackbone(model)
    envs, batch = two_env_batch(interactions)
    mask = torch.rand(model.content.dim)
    closed, through = MaskLearner(eq14, mask, 2, sigma=0.0), ForwardMaskLearner(forward, mask, 2, sigma=0.0)
    torch.manual_seed(3)
    rows = eq14.training_batch(interactions, batch.index)
    results = []
    for learner, weight in ((closed, closed.weight), (through, through.model.projection.weight)):
        parts = learner.loss(*rows, batch, alpha=1.0, lam=0.1)
        parts.total.backward()
        results.append((parts.risk.item(), parts.penalty.item(), learner.mask.grad.clone(), weight.grad.clone()))
    (risk_a, pen_a, m_a, w_a), (risk_b, pen_b, m_b, w_b) = results
    assert risk_b == pytest.approx(risk_a, rel=1e-5) and pen_b == pytest.approx(pen_a, rel=1e-4) and pen_a > 0
    torch.testing.assert_close(m_b, m_a, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w_b, w_a, rtol=1e-4, atol=1e-6)


def test_environment_models_train_each_model_on_its_own_rows(graph_model):
    model, interactions, *_ = graph_model
    view = ForwardBackbone(model)
    envs, _ = two_env_batch(interactions)
    batch = environment_batches(envs, 2, 64, cycle=False)[0]
    mask = torch.rand(model.content.dim)
    models = ForwardEnvironmentModels(view, 2, mask, l1_weight=0.0)
    users, positives, negatives, items = view.training_batch(interactions, batch.index)
    models.loss(users, positives, negatives, items, batch).backward()

    row_envs = envs[batch.index]
    for e, env_model in enumerate(models.models):
        assert torch.allclose(env_model.content.content_mask, 1 - mask)  # Psi = (1 - m) * c
        rows = row_envs == e
        reference = view.trainable_copy()
        reference.load_state_dict(env_model.state_dict())
        nodes = reference.propagate()
        u = nodes[users[rows]]
        pos, neg = nodes[model.n_users + positives[rows]], nodes[model.n_users + negatives[rows, 0]]
        F.softplus((u * neg).sum(-1) - (u * pos).sum(-1)).sum().backward()
        for (weight, _), (expected, _) in zip(env_model.forward_parts().weights, reference.forward_parts().weights):
            torch.testing.assert_close(weight.grad, expected.grad)


def test_environment_l1_touches_only_the_invariant_columns(mmgcn):
    model, _ = mmgcn
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])  # v_feat dims 0-1 and word dim 1 invariant
    models = ForwardEnvironmentModels(ForwardBackbone(model), 1, mask, l1_weight=1.0)
    models.regularisation([True]).backward()
    env_model = models.models[0]
    input_grad = env_model.modalities[0].input_map.weight.grad
    assert (input_grad[:, :2] != 0).all() and (input_grad[:, 2:] == 0).all()
    word_grad = env_model.modalities[1].transform[0].weight.grad
    assert (word_grad[:, 0] == 0).all() and (word_grad[:, 1] != 0).all()


@pytest.mark.parametrize("rule", ["score", "likelihood"])
def test_assign_takes_the_argmax_over_the_environment_models(mmgcn, rule):
    model, interactions = mmgcn
    models = ForwardEnvironmentModels(ForwardBackbone(model), 3, torch.full((model.content.dim,), 0.5), 0.0,
                                      fresh=True)
    torch.manual_seed(5)
    envs = models.assign(interactions, rule, samples=7)
    with torch.no_grad():
        scores = torch.stack([m.eval().forward(interactions.users, interactions.items) for m in models.models], 1)
        if rule == "likelihood":
            torch.manual_seed(5)
            users = torch.arange(model.n_users).repeat_interleave(7)
            sampled = torch.randint(1, model.n_items, (len(users),))
            normaliser = torch.stack([m.forward(users, sampled) for m in models.models], 1)
            scores = scores - torch.logsumexp(normaliser.view(model.n_users, 7, 3), 1)[interactions.users]
    torch.testing.assert_close(envs, scores.argmax(1))
    if rule == "likelihood":  # the raw score lets one model win everything (partition.py)
        assert len(envs.unique()) > 1


def test_paths_are_chosen_by_the_backbone_and_the_setting(mmgcn, build, toy_data):
    model, _ = mmgcn
    assert isinstance(backbone_view(model), ForwardBackbone)
    with pytest.raises(ValueError, match="invariance_path: eq14 needs invariance_parts"):
        backbone_view(model, "eq14")
    with pytest.raises(ValueError, match="invariance_path: expected one of"):
        backbone_view(model, "closed")
    view = backbone_view(model)
    mask = torch.full((model.content.dim,), 0.5)
    assert isinstance(environment_models_for(view, "fresh", 2, mask, 0.0), ForwardEnvironmentModels)
    assert isinstance(mask_learner_for(view, mask, 2, 0.01), ForwardMaskLearner)
    with pytest.raises(ValueError, match="partition_models: expected one of"):
        environment_models_for(view, "own", 2, mask, 0.0)
    ultra, _ = build_model(build, UltraGCNMM, neg_num=3, word_embedding_size=2)
    assert isinstance(backbone_view(ultra), FrozenBackbone)
    assert isinstance(backbone_view(ultra, "forward"), ForwardBackbone)


def test_mask_learning_on_a_graph_model_runs_with_anomaly_mode_on(graph_model):
    """RecBole turns anomaly mode on process-wide when its SINE model is imported; M4's
    double backward through sparse CSR message passing must still run (and leave it on)."""
    from recbole_invrl.invariance.mask import learn_mask

    model, interactions, *_ = graph_model
    envs, _ = two_env_batch(interactions)
    learner = ForwardMaskLearner(ForwardBackbone(model), torch.full((model.content.dim,), 0.5), 2, sigma=0.01)
    with torch.autograd.set_detect_anomaly(True):
        history = learn_mask(learner, interactions, envs, epochs=1, batch_size=64, learning_rate=0.01,
                             mask_lr=0.01, alpha=1.0, lam=0.1)
        assert torch.is_anomaly_enabled()
    assert history[0]["grad_norm_penalty"] > 0


def test_environment_loss_on_ultragcn_mm_equals_a_reference_from_the_raw_tables(build, toy_data):
    """Eq. 6 on the forward path, written out: each row scored by its own environment's
    copy, <p_u^(t), t_i> + <p_u^(c), W_e ((1 - m) * c_i)> with c_i the item's feature row
    over its norm; UltraGCN's loss with beta (eq. 18) from the training degrees; the L1
    (weighted by m) and L2 of the active environments only (environment 1 is empty)."""
    model, interactions = build_model(build, UltraGCNMM, embedding_size=3, content_size=2, neg_num=3, gamma_i=0.0,
                                      content_fields=["v_feat"], proj_reg_weight=0.3)
    generator = torch.Generator().manual_seed(21)
    with torch.no_grad():
        model.user_embedding.weight.normal_(generator=generator)
        model.item_embedding.weight.normal_(generator=generator)
    view = ForwardBackbone(model)
    mask = torch.tensor([0.9, 0.4, 0.1, 0.0])
    models = ForwardEnvironmentModels(view, 3, mask, l1_weight=0.5)
    with torch.no_grad():
        for env_model in models.models:
            env_model.projection.weight.normal_(generator=generator)
    content = _raw_content(model)
    users_all, items_all = interactions.users, interactions.items
    d_u = torch.bincount(users_all, minlength=model.n_users).double()
    d_i = torch.bincount(items_all, minlength=model.n_items).double()

    def beta(u, i):
        return float((d_u[u] + 1).sqrt() / d_u[u] / (d_i[i] + 1).sqrt())

    envs = torch.where(torch.arange(len(interactions)) % 3 == 0, 0, 2)
    torch.manual_seed(4)
    batch = environment_batches(envs, 3, 64, cycle=False)[0]
    assert batch.active_envs == [True, False, True]
    users, positives, negatives, items = view.training_batch(interactions, batch.index)
    U, T = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    expected = 0.0
    for u, e, row in zip(users.tolist(), envs[batch.index].tolist(), items.tolist()):
        W = models.models[e].projection.weight.detach()
        s = [float(U[u, :3] @ T[i] + U[u, 3:] @ (W @ ((1 - mask) * content[i]))) for i in row]
        expected += (1 + beta(u, row[0])) * float(F.softplus(torch.tensor(-s[0])))
        expected += sum((1 + beta(u, j)) * float(F.softplus(torch.tensor(v))) for j, v in zip(row[1:], s[1:])) / 3
    for e in (0, 2):
        W = models.models[e].projection.weight.detach()
        expected += 0.5 * float((W.abs() * mask).sum()) + 0.5 * 0.3 * float(W.square().sum())
    loss = models.loss(users, positives, negatives, items, batch)
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    optimizers = models.optimizer(0.03)
    assert len(optimizers) == 1 and optimizers[0].param_groups[0]["lr"] == 0.03
    assert [id(p) for p in optimizers[0].param_groups[0]["params"]] == [id(m.projection.weight) for m in models.models]
    loss.backward()
    assert models.models[1].projection.weight.grad is None  # no row, no penalty: not in the graph
    models.models[1].projection.weight.grad = torch.ones(2, 4)  # as a step of its own would leave it
    models.drop_inactive_gradients(batch)
    assert models.models[1].projection.weight.grad is None
    assert all(models.models[e].projection.weight.grad.abs().sum() > 0 for e in (0, 2))


def test_fresh_environment_copies_see_the_whole_content(mmgcn):
    model, _ = mmgcn
    mask = torch.rand(model.content.dim, generator=torch.Generator().manual_seed(0))
    fresh = ForwardEnvironmentModels(ForwardBackbone(model), 2, mask, 0.0, fresh=True)
    shared = ForwardEnvironmentModels(ForwardBackbone(model), 2, mask, 0.0)
    for env_model in fresh.models:
        assert torch.equal(env_model.content.content_mask, torch.ones(model.content.dim))
    for env_model in shared.models:
        torch.testing.assert_close(env_model.content.content_mask, 1 - mask)
    torch.testing.assert_close(fresh.invariant_gate, mask)


def _raw_content(model):
    """c_i of every internal item id of the ``toy_data`` set, from the matrix the fixture
    wrote (each id's row found by its values), divided by its norm."""
    features = np.random.default_rng(1).normal(size=(N_ITEMS, 4))
    content = torch.zeros(model.n_items, 4)
    loaded = model.content.dense_v_feat
    for internal in range(1, model.n_items):
        (row,) = [r for r in range(N_ITEMS) if np.allclose(loaded[internal].numpy(), features[r], atol=1e-6)]
        content[internal] = torch.tensor(features[row] / np.linalg.norm(features[row]), dtype=torch.float32)
    return content


def test_forward_mask_loss_on_ultragcn_mm_equals_a_reference_from_the_raw_tables(build, toy_data, eq10_reference):
    """Eq. 10 through the forward pass, against the raw tables with autograd for
    g_e = dL^e / dW (gamma_C = 0: softplus(-s_pos) + mean softplus(s_neg)); environment 1
    is empty and takes no part."""
    model, interactions = build_model(build, UltraGCNMM, embedding_size=3, content_size=2, neg_num=3, gamma_i=0.0,
                                      gamma_c=0.0, content_fields=["v_feat"], proj_reg_weight=0.2)
    generator = torch.Generator().manual_seed(31)
    with torch.no_grad():
        model.user_embedding.weight.normal_(generator=generator)
        model.item_embedding.weight.normal_(generator=generator)
        model.projection.weight.normal_(generator=generator)
    content = _raw_content(model)
    mask = torch.tensor([0.8, 0.3, 0.6, 0.1])
    learner = ForwardMaskLearner(ForwardBackbone(model), mask, num_envs=3, sigma=0.0)
    envs = torch.where(torch.arange(len(interactions)) % 3 == 0, 0, 2)
    torch.manual_seed(6)
    batch = environment_batches(envs, 3, 64, cycle=True)[0]
    assert batch.active_envs == [True, False, True]
    users, positives, negatives, items = learner.frozen.training_batch(interactions, batch.index)
    parts = learner.loss(users, positives, negatives, items, batch, alpha=1.5, lam=0.1)

    U, T = model.user_embedding.weight.detach(), model.item_embedding.weight.detach()
    W = learner.model.projection.weight
    mu = learner.mask
    risk, penalty = eq10_reference(U, T, W, content, mu, users, items, envs[batch.index], (0, 2), id_dims=3)
    total = risk + 1.5 * penalty + 0.1 * (mu ** 2).sum() + 0.5 * 0.2 * (W ** 2).sum()
    assert penalty > 0
    for new, old in ((parts.risk, risk), (parts.penalty, penalty), (parts.total, total)):
        torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(torch.autograd.grad(parts.total, mu, retain_graph=True)[0],
                               torch.autograd.grad(total, mu)[0], rtol=1e-4, atol=1e-6)


def test_the_forward_mask_model_starts_from_the_pretrained_weights_or_a_small_draw(mmgcn):
    model, _ = mmgcn
    view = ForwardBackbone(model)
    mask = torch.full((model.content.dim,), 0.5)
    pretrained = ForwardMaskLearner(view, mask, 2, 0.01)
    torch.manual_seed(0)
    fresh = ForwardMaskLearner(view, mask, 2, 0.01, model_start="random")
    for (kept, _), (redrawn, _), (original, _) in zip(pretrained.model.forward_parts().weights,
                                                      fresh.model.forward_parts().weights,
                                                      model.forward_parts().weights):
        assert torch.equal(kept, original)
        assert redrawn.abs().max() < 0.06 and 0.003 < redrawn.std() < 0.02 and redrawn.mean().abs() < 0.01
    with pytest.raises(ValueError, match="mask_model_start"):
        ForwardMaskLearner(view, mask, 2, 0.01, model_start="warm")


def test_the_forward_view_freezes_the_backbone_and_names_what_is_missing(mmgcn, build, toy_data):
    model, _ = mmgcn
    view = ForwardBackbone(model)
    assert not any(p.requires_grad for p in model.parameters())
    copy = view.trainable_copy()
    words = copy.content.word_embeddings["t_words"].weight
    assert words is model.content.word_embeddings["t_words"].weight and not words.requires_grad
    with pytest.raises(ValueError, match=r"^Linear has no forward_parts: it cannot be InvRL's backbone on the "
                                         r"forward path$"):
        ForwardBackbone(torch.nn.Linear(2, 2))
    ultra, _ = build_model(build, UltraGCNMM, neg_num=3, word_embedding_size=2)
    with pytest.raises(ValueError, match=r"^partition_models: fresh needs UltraGCNMM.reset_parameters on the "
                                         r"forward path; use shared$"):
        ForwardBackbone(ultra).trainable_copy(fresh=True)
