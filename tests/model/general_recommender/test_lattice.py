import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import LATTICE
from recbole_invrl.model.general_recommender import lattice as lattice_module
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model, get_trainer

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3), (4, 5), (4, 6), (1, 6)]
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.3], [3.0, -1.0, 0.2], [0.5, 0.7, 2.0],
                         [-1.0, 0.1, 1.0], [0.9, 0.3, -0.4]])
TOY_WORDS = [[1, 2], [2], [], [3, 1, 1], [4], [2, 4]]
HYPER = dict(embedding_size=3, feat_embed_dim=2, knn_k=2, lambda_coeff=0.7, n_layers=2, n_ui_layers=2,
             word_embedding_size=2, reg_weight=0.05)


def make_toy(build, atomic_dataset, tmp_path, **config):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)],
                   dense={"v_feat": TOY_FEATURES}, words={"t_words": TOY_WORDS})
    config, data, train, *_ = build("LATTICE", "toy", **{**HYPER, **config})
    torch.manual_seed(0)
    model = LATTICE(config, train._dataset)
    with torch.no_grad():  # modality weights away from uniform, so that alpha is tested
        model.modal_weight.copy_(torch.tensor([0.3, -0.2]))
    return model, data


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    return make_toy(build, atomic_dataset, tmp_path)


def np_(tensor):
    return tensor.detach().double().numpy()


def reference_modalities(model, data, mask=None):
    """Each item's v_feat row over its norm and its summed word embeddings over their norm
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


def reference_knn(features, has_content, k):
    """Eq. 1-3 item by item: cosine to every item with content, the k largest kept,
    then S_ij / sqrt(d_i d_j) with d the row sums."""
    n = len(features)
    S = np.zeros((n, n))
    for i in range(n):
        if not has_content[i]:
            continue
        candidates = []
        for j in range(n):
            if has_content[j]:
                cos = features[i] @ features[j] / (np.linalg.norm(features[i]) * np.linalg.norm(features[j]))
                candidates.append((cos, j))
        for cos, j in sorted(candidates, reverse=True)[:k]:
            S[i, j] = cos
    d = S.sum(1)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if d[i] > 0 and d[j] > 0:
                out[i, j] = S[i, j] / np.sqrt(d[i] * d[j])
    return out


def reference_item_graph(model, data, mask=None):
    """Eq. 4-7: A = sum_m alpha_m (lambda S~_m + (1 - lambda) A^_m)."""
    weights = np.exp(np_(model.modal_weight))
    alpha = weights / weights.sum()
    lam, k = HYPER["lambda_coeff"], HYPER["knn_k"]
    A = 0.0
    for m, content in enumerate(reference_modalities(model, data, mask)):
        has_content = np.abs(content).sum(1) > 0
        projection = model.projections[m]
        projected = content @ np_(projection.weight).T + np_(projection.bias)
        initial = reference_knn(content, has_content, k)
        learned = reference_knn(projected, has_content, k)
        A = A + alpha[m] * (lam * initial + (1 - lam) * learned)
    return A


def reference_tables(model, data, mask=None):
    """LightGCN's mean over layers of D^-1/2 R D^-1/2 propagation, then eq. 8-9."""
    n_users, n_items = model.n_users, model.n_items
    R = np.zeros((n_users + n_items, n_users + n_items))
    for user, item in TOY_TRAIN:
        u = data.token2id("user_id", str(user))
        i = n_users + data.token2id("item_id", str(item))
        R[u, i] = R[i, u] = 1.0
    degree = R.sum(1)
    norm = np.zeros_like(R)
    for a in range(len(R)):
        for b in range(len(R)):
            if R[a, b]:
                norm[a, b] = 1.0 / np.sqrt(degree[a] * degree[b])
    x = np_(model.item_id_embedding.weight)
    layer = np.concatenate([np_(model.user_embedding.weight), x])
    layers = [layer]
    for _ in range(HYPER["n_ui_layers"]):
        layer = norm @ layer
        layers.append(layer)
    cf = np.mean(layers, axis=0)
    A = reference_item_graph(model, data, mask)
    h = x
    for _ in range(HYPER["n_layers"]):
        h = A @ h
    h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    return cf[:n_users], cf[n_users:] + h


def test_graphs_are_neighbour_lists_of_k_per_modality(toy):
    model, _ = toy
    assert [p.weight.shape for p in model.projections] == [(2, 3), (2, 2)]
    neighbours, weights = model.item_graph()
    assert neighbours.shape == weights.shape == (model.n_items, 2 * 2 * HYPER["knn_k"])
    assert (weights[0] == 0).all()  # the padding item has no neighbours
    assert model.adjacency._nnz() == 2 * len(TOY_TRAIN)


def test_blockwise_knn_equals_one_block(monkeypatch):
    torch.manual_seed(1)
    features = torch.randn(23, 5, requires_grad=True)
    valid = torch.rand(23) > 0.2
    whole = lattice_module.knn_graph(features, valid, 4)
    monkeypatch.setattr(lattice_module, "KNN_BLOCK_ENTRIES", 50)  # 2 rows per block
    blocks = lattice_module.knn_graph(features, valid, 4)
    torch.testing.assert_close(blocks[0], whole[0])
    torch.testing.assert_close(blocks[1], whole[1])
    dense = np.zeros((23, 23))
    np.add.at(dense, (np.repeat(np.arange(23), 4), np_(blocks[0]).reshape(-1).astype(int)),
              np_(blocks[1]).reshape(-1))
    np.testing.assert_allclose(dense, reference_knn(np_(features), valid.numpy(), 4), rtol=1e-5, atol=1e-7)
    with torch.autograd.detect_anomaly():  # items without content: no inf or nan on the way back
        blocks[1].sum().backward()  # gradient through the kept similarities
    assert features.grad.abs().sum() > 0


def test_scores_follow_the_equations(toy):
    model, data = toy
    users = torch.tensor([1, 2, 3, 1, 4])
    items = torch.tensor([1, 5, 2, 4, 6])
    user_table, item_table = reference_tables(model, data)
    expected = (user_table[users.numpy()] * item_table[items.numpy()]).sum(1)
    model.eval()
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_loss_is_bpr_plus_l2_and_the_graph_learns_once_per_epoch(toy):
    model, data = toy
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 4]), torch.tensor([5, 1, 6])
    batch = Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg})
    model.train()
    loss = model.calculate_loss(batch)
    user_table, item_table = reference_tables(model, data)
    u, i, j = user_table[users.numpy()], item_table[pos.numpy()], item_table[neg.numpy()]
    bpr = np.mean(np.log(1 + np.exp(-((u * i).sum(1) - (u * j).sum(1)))))
    l2 = 0.5 * ((u ** 2).sum() + (i ** 2).sum() + (j ** 2).sum()) / 3
    assert loss.item() == pytest.approx(bpr + HYPER["reg_weight"] * l2, rel=1e-4)
    loss.backward()
    learned = [model.projections[0].weight, model.projections[1].bias, model.modal_weight,
               model.content.word_embeddings["t_words"].weight]
    assert all(p.grad.abs().sum() > 0 for p in learned)
    model.zero_grad(set_to_none=True)
    model.calculate_loss(batch).backward()  # later batches of the epoch: the graph is detached
    assert model.projections[0].weight.grad is None and model.modal_weight.grad is None
    assert model.item_id_embedding.weight.grad.abs().sum() > 0
    model.train()  # the next epoch rebuilds it with gradient
    model.calculate_loss(Interaction({"user_id": users, "item_id": pos})).backward()  # device negatives
    assert model.projections[0].weight.grad.abs().sum() > 0


def test_content_mask_reaches_both_graphs(toy):
    model, data = toy
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        before = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    mask = np.array([1.0, 0.0, 0.5, 0.0, 0.0])  # the word modality masked out entirely
    model.set_content_mask(torch.tensor(mask, dtype=torch.float32))
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    user_table, item_table = reference_tables(model, data, mask=mask)
    np.testing.assert_allclose(scores.numpy(), user_table[users.numpy()] @ item_table.T, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(scores, before, atol=1e-4)


def test_best_model_reload_keeps_the_initial_graphs(toy):
    model, _ = toy
    model.eval()
    with torch.no_grad():
        model.item_graph()
        initial = model._initial_graphs
        model.load_state_dict(model.state_dict())  # as RecBole's evaluate(load_best_model=True)
        model.item_graph()
        assert model._initial_graphs is initial
        model.set_content_mask(torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0]))
        model.item_graph()
        assert model._initial_graphs is not initial


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
        model.projections[0].weight.mul_(-1.0)  # the cached tables follow parameter updates
        moved = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    assert not torch.allclose(moved, full)


@pytest.mark.parametrize("key, value, message", [
    ("knn_k", 0, "knn_k: expected an integer >= 1"),
    ("feat_embed_dim", 0, "feat_embed_dim: expected an integer >= 1"),
    ("lambda_coeff", 1.5, r"lambda_coeff: expected a number in \[0, 1\]"),
    ("n_layers", 0, "n_layers: expected an integer >= 1"),
    ("n_ui_layers", -1, "n_ui_layers: expected an integer >= 0"),
    ("reg_weight", -1.0, "reg_weight: expected a number >= 0"),
])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value, message):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("LATTICE", "toy", **{**HYPER, key: value})
    with pytest.raises(ValueError, match=f"^{message}"):
        LATTICE(config, train._dataset)


def test_lattice_runs_through_get_model_and_learns(tmp_path, atomic_dataset, clustered, build):
    """A short training raises validation NDCG well above the untrained model's."""
    assert get_model("LATTICE") is LATTICE
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=40, n_items=80, n_clusters=4)
    features = np.eye(4)[item_cluster] + 0.1 * np.random.default_rng(0).random((80, 4))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs, dense={"v_feat": features})
    schedule = {"epochs": 20, "learning_rate": 0.01, "train_batch_size": 64, "stopping_step": 100,
                "eval_step": 5, "embedding_size": 16, "feat_embed_dim": 8}
    config, _, train, valid, _ = build("LATTICE", "clusters", **schedule)
    trainer = get_trainer(config["MODEL_TYPE"], "LATTICE")(config, LATTICE(config, train._dataset))
    before = trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]

    common = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "use_gpu": False}
    trained = run_recbole_invrl("LATTICE", "clusters", config_dict={**common, **schedule})
    assert trained["model"] == "LATTICE"
    after = trained["best_valid_result"]["ndcg@10"]
    assert after > before + 0.1, (before, after)
