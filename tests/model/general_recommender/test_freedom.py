import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import FREEDOM
from recbole_invrl.model.general_recommender.freedom import knn_edges
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model, get_trainer

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3)]
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.0], [3.0, -1.0, 0.0], [0.5, 0.5, 2.0],
                         [-1.0, 0.2, 1.0]])
TOY_WORDS = [[1, 2], [2], [], [3, 1, 1], [4]]  # the third item has an empty bag: no word edges
# v_feat (3 wide) is the widest modality: alpha = visual_weight; the words (2 wide) get the rest
HYPER = dict(embedding_size=3, word_embedding_size=2, knn_k=2, n_mm_layers=2, n_ui_layers=2,
             visual_weight=0.3, mm_loss_weight=0.5, reg_weight=0.05, edge_dropout=0.0)


def make_toy(build, atomic_dataset, tmp_path, **config):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)],
                   dense={"v_feat": TOY_FEATURES}, words={"t_words": TOY_WORDS})
    config, data, train, *_ = build("FREEDOM", "toy", **{**HYPER, **config})
    torch.manual_seed(0)
    return FREEDOM(config, train._dataset), data


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    return make_toy(build, atomic_dataset, tmp_path)


def np_(tensor):
    return tensor.detach().double().numpy()


def reference_modalities(model, data, mask=None):
    """Each item's v_feat row over its norm, and its summed word embeddings over their norm
    (the padding item 0 has neither), times the mask."""
    table = np_(model.content.word_embeddings["t_words"].weight)
    dense, words = np.zeros((model.n_items, 3)), np.zeros((model.n_items, table.shape[1]))
    for item in range(1, model.n_items):
        row = int(data.id2token("item_id", item)) - 1
        dense[item] = TOY_FEATURES[row] / np.linalg.norm(TOY_FEATURES[row])
        for word in TOY_WORDS[row]:
            words[item] += table[data.token2id("t_words", str(word))]
        if np.linalg.norm(words[item]) > 0:
            words[item] /= np.linalg.norm(words[item])
    if mask is not None:
        dense, words = dense * mask[:3], words * mask[3:]
    return [dense, words]


def reference_item_graph(model, data, k, alphas, mask=None):
    """Eq. 1-4 item by item: cosine top-k among the items with a non-zero row (self
    included), 0/1, D^-1/2 S D^-1/2 by row degrees, weighted sum over modalities."""
    n = model.n_items
    total = np.zeros((n, n))
    for alpha, rows in zip(alphas, reference_modalities(model, data, mask)):
        eligible = [i for i in range(1, n) if np.linalg.norm(rows[i]) > 1e-12]
        S = np.zeros((n, n))
        for i in eligible:
            sims = {j: rows[i] @ rows[j] / np.linalg.norm(rows[i]) / np.linalg.norm(rows[j]) for j in eligible}
            for j in sorted(sims, key=lambda j: -sims[j])[: min(k, len(eligible))]:
                S[i, j] = 1.0
        degree = S.sum(1)
        inv = np.array([d ** -0.5 if d > 0 else 0.0 for d in degree])
        total += alpha * inv[:, None] * S * inv[None, :]
    return total


def reference_adjacency(model, data, pairs):
    """D^-1/2 A D^-1/2 of the user-item graph with the (user id, item id) ``pairs``."""
    n_nodes = model.n_users + model.n_items
    A = np.zeros((n_nodes, n_nodes))
    for u, i in pairs:
        A[u, model.n_users + i] = A[model.n_users + i, u] = 1.0
    degree = A.sum(1)
    inv = np.array([d ** -0.5 if d > 0 else 0.0 for d in degree])
    return inv[:, None] * A * inv[None, :]


def toy_pairs(data):
    return [(data.token2id("user_id", str(u)), data.token2id("item_id", str(i))) for u, i in TOY_TRAIN]


def reference_tables(model, data, adjacency, mask=None):
    """LightGCN mean over layers 0..L, plus the item ids convolved over S."""
    S = reference_item_graph(model, data, HYPER["knn_k"], [HYPER["visual_weight"], 1 - HYPER["visual_weight"]], mask)
    users, items = np_(model.user_embedding.weight), np_(model.item_embedding.weight)
    h = items
    for _ in range(HYPER["n_mm_layers"]):
        h = S @ h
    x = np.concatenate([users, items])
    layers = [x]
    for _ in range(HYPER["n_ui_layers"]):
        x = adjacency @ x
        layers.append(x)
    nodes = np.mean(layers, axis=0)
    return nodes[: model.n_users], nodes[model.n_users :] + h


def test_knn_graph_is_built_in_blocks():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(23, 4))
    rows[5] = 0.0
    torch_rows = torch.tensor(rows, dtype=torch.float32)
    whole = knn_edges(torch_rows, 3)
    blocked = knn_edges(torch_rows, 3, block_entries=23 * 2)  # two rows at a time
    for a, b in zip(whole, blocked):
        torch.testing.assert_close(a, b)
    source, target = whole
    assert 0 not in source.tolist() and 0 not in target.tolist()
    assert 5 not in source.tolist() and 5 not in target.tolist()
    assert torch.bincount(source, minlength=23).tolist() == [0] + [3] * 4 + [0] + [3] * 17
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    for i in (1, 7, 22):
        sims = unit[i] @ unit.T
        sims[[0, 5]] = -np.inf
        assert set(target[source == i].tolist()) == set(np.argsort(-sims)[:3].tolist())


def test_item_graph_follows_eq_1_to_4(toy):
    model, data = toy
    expected = reference_item_graph(model, data, 2, [0.3, 0.7])
    np.testing.assert_allclose(model.item_graph().to_dense().numpy(), expected, rtol=1e-5, atol=1e-7)
    assert model.modality_weights == pytest.approx([0.3, 0.7])


def test_scores_follow_the_equations(toy):
    model, data = toy
    users = torch.tensor([1, 2, 3, 1, 3])
    items = torch.tensor([1, 5, 2, 4, 3])
    user_table, item_table = reference_tables(model, data, reference_adjacency(model, data, toy_pairs(data)))
    expected = (user_table[users.numpy()] * item_table[items.numpy()]).sum(1)
    model.eval()
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-6)


def reference_loss(model, data, users, pos, neg, adjacency):
    user_table, item_table = reference_tables(model, data, adjacency)
    u = user_table[users]
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    loss = np.mean(softplus((u * item_table[neg]).sum(1) - (u * item_table[pos]).sum(1)))
    for projection, rows in zip(model.projections, reference_modalities(model, data)):
        x = rows @ np_(projection.weight).T + np_(projection.bias)  # x^m = W_m e^m + b_m
        loss += HYPER["mm_loss_weight"] * np.mean(softplus((u * x[neg]).sum(1) - (u * x[pos]).sum(1)))
    ids_u, ids_i = np_(model.user_embedding.weight), np_(model.item_embedding.weight)
    squares = sum((ids_u[k] ** 2).sum() for k in users) + sum((ids_i[k] ** 2).sum() for k in [*pos, *neg])
    return loss + HYPER["reg_weight"] * 0.5 * squares / len(users)


def test_loss_is_bpr_plus_modality_bpr_plus_l2(toy):
    model, data = toy
    users, pos, neg = [1, 2, 3], [1, 3, 4], [5, 1, 4]
    loss = model.calculate_loss(Interaction({"user_id": torch.tensor(users), "item_id": torch.tensor(pos),
                                             "neg_item_id": torch.tensor(neg)}))
    expected = reference_loss(model, data, users, pos, neg, reference_adjacency(model, data, toy_pairs(data)))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert model.projections[0].weight.grad.abs().sum() > 0
    assert model.content.word_embeddings["t_words"].weight.grad.abs().sum() > 0
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_pruned_graph_is_drawn_by_degree_and_resampled_per_epoch(build, atomic_dataset, tmp_path):
    model, data = make_toy(build, atomic_dataset, tmp_path, edge_dropout=0.5)
    model.train()
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([1, 3]),
                         "neg_item_id": torch.tensor([5, 1])})
    loss = model.calculate_loss(batch)
    pruned = model._pruned.coalesce()
    rows, cols = pruned.indices()
    kept = sorted((int(u), int(i) - model.n_users) for u, i in zip(rows, cols) if u < model.n_users)
    assert len(kept) == 4 and set(kept) <= set(toy_pairs(data))  # int(8 * (1 - 0.5)) training edges
    # renormalised with the kept graph's degrees; the loss uses that graph
    expected_adjacency = reference_adjacency(model, data, kept)
    np.testing.assert_allclose(pruned.to_dense().numpy(), expected_adjacency, rtol=1e-5, atol=1e-7)
    expected = reference_loss(model, data, [1, 2], [1, 3], [5, 1], expected_adjacency)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # the same graph for the whole epoch; a new one after train(), none in evaluation
    model.calculate_loss(batch)
    assert model._pruned is pruned or torch.equal(model._pruned.coalesce().indices(), pruned.indices())
    model.train()
    assert model._pruned is None  # train() drops the graph; the next step draws a new one
    model.eval()
    assert model.current_adjacency() is model.full_adjacency


def inclusion_probabilities(weights, n_keep):
    """P(edge kept) when n_keep edges are drawn one by one without replacement, each with
    probability proportional to its weight among those left (by enumeration)."""
    keep = np.zeros(len(weights))

    def draw(left, chance, depth):
        if depth == n_keep:
            return
        total = sum(weights[e] for e in left)
        for e in left:
            p = chance * weights[e] / total
            keep[e] += p
            draw([f for f in left if f != e], p, depth + 1)

    draw(list(range(len(weights))), 1.0, 0)
    return keep


def test_edges_are_kept_with_the_degree_sensitive_probabilities(build, atomic_dataset, tmp_path):
    model, data = make_toy(build, atomic_dataset, tmp_path, edge_dropout=0.5)
    edges = list(zip(model.edge_users.tolist(), model.edge_items.tolist()))
    user_degree = {u: sum(1 for v, _ in edges if v == u) for u, _ in edges}
    item_degree = {i: sum(1 for _, j in edges if j == i) for _, i in edges}
    weights = [1 / np.sqrt(user_degree[u] * item_degree[i]) for u, i in edges]  # p = 1/sqrt(d_u d_i)
    expected = inclusion_probabilities(weights, 4)
    torch.manual_seed(1)
    n_draws = 3000
    kept = np.zeros(len(edges))
    for _ in range(n_draws):
        rows, cols = model.sample_pruned().indices()
        for u, i in zip(rows.tolist(), cols.tolist()):
            if u < model.n_users:
                kept[edges.index((u, i - model.n_users))] += 1
    np.testing.assert_allclose(kept / n_draws, expected, atol=4 * np.sqrt(0.25 / n_draws))
    user_1 = data.token2id("user_id", "1")  # degree 2: its edges are kept more often
    assert min(e for (u, _), e in zip(edges, expected) if u == user_1) > max(
        e for (u, _), e in zip(edges, expected) if u != user_1)


def test_content_mask_reaches_the_graph(toy):
    model, data = toy
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        unmasked = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    mask = np.array([1.0, 0.0, 0.5, 0.0, 0.0])  # the word modality off: S is the visual graph only
    model.set_content_mask(torch.tensor(mask, dtype=torch.float32))
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    user_table, item_table = reference_tables(model, data, reference_adjacency(model, data, toy_pairs(data)), mask)
    np.testing.assert_allclose(scores.numpy(), user_table[1:] @ item_table.T, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(scores, unmasked)
    graph = model.item_graph().to_dense().numpy()
    np.testing.assert_allclose(graph, reference_item_graph(model, data, 2, [0.3, 0.7], mask), atol=1e-7)
    assert graph.sum() == pytest.approx(0.3 * graph.shape[0] - 0.3, rel=1e-5)  # row sums 0.3 (k entries of 1/k)


def test_best_model_reload_keeps_the_item_graph(toy):
    """Loading a state with the same mask keeps the built S; another mask rebuilds it."""
    model, _ = toy
    graph = model.item_graph()
    model.load_state_dict(model.state_dict())  # as RecBole's evaluate(load_best_model=True)
    assert model.item_graph() is graph
    state = model.state_dict()
    state["content.content_mask"] = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0])
    model.load_state_dict(state)
    assert model.item_graph() is not graph


def test_full_sort_predict_equals_predict_for_every_pair(toy):
    model, _ = toy
    model.eval()
    users = torch.arange(1, model.n_users)
    items = torch.arange(model.n_items)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        pairs = Interaction({"user_id": users.repeat_interleave(len(items)),
                             "item_id": items.repeat(len(users))})
        torch.testing.assert_close(full.reshape(-1), model.predict(pairs))
        model.item_embedding.weight.add_(1.0)  # the cached tables follow parameter updates
        moved = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    assert not torch.allclose(moved, full)


def test_negatives_are_drawn_on_the_device_without_a_sampler(toy):
    model, _ = toy
    loss = model.calculate_loss(Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([1, 3])}))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("key, value, message", [
    ("knn_k", 0, "knn_k: expected an integer >= 1"),
    ("n_mm_layers", 0, "n_mm_layers: expected an integer >= 1"),
    ("n_ui_layers", -1, "n_ui_layers: expected an integer >= 1"),
    ("edge_dropout", 1.0, r"edge_dropout: expected a number in \[0, 1\)"),
    ("edge_dropout", -0.1, "edge_dropout: expected a number"),
    ("visual_weight", 1.5, r"visual_weight: expected a number in \[0, 1\]"),
    ("mm_loss_weight", -1.0, "mm_loss_weight: expected a number >= 0"),
    ("reg_weight", -1.0, "reg_weight: expected a number >= 0"),
])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value, message):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    with pytest.raises(ValueError, match=f"^{message}"):
        config, _, train, *_ = build("FREEDOM", "toy", **{**HYPER, key: value})
        FREEDOM(config, train._dataset)


def test_freedom_runs_through_get_model_and_learns(tmp_path, atomic_dataset, clustered, build):
    """A short training raises validation NDCG well above the untrained model's."""
    assert get_model("FREEDOM") is FREEDOM
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=40, n_items=80, n_clusters=4)
    features = np.eye(4)[item_cluster] + 0.1 * np.random.default_rng(0).random((80, 4))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs, dense={"v_feat": features})
    schedule = {"epochs": 20, "learning_rate": 0.01, "train_batch_size": 64, "stopping_step": 100,
                "eval_step": 5, "embedding_size": 16}
    config, _, train, valid, _ = build("FREEDOM", "clusters", **schedule)
    trainer = get_trainer(config["MODEL_TYPE"], "FREEDOM")(config, FREEDOM(config, train._dataset))
    before = trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]

    common = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "use_gpu": False}
    trained = run_recbole_invrl("FREEDOM", "clusters", config_dict={**common, **schedule})
    assert trained["model"] == "FREEDOM"
    after = trained["best_valid_result"]["ndcg@10"]
    assert after > before + 0.1, (before, after)
