import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import GRCN
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model, get_trainer

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3)]
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.0], [3.0, -1.0, 0.0], [0.5, 0.5, 2.0],
                         [-1.0, 0.0, 1.0]])
TOY_WORDS = [[1, 2], [2], [], [3, 1, 1], [4]]
HYPER = dict(embedding_size=3, latent_size=2, num_routing=2, word_embedding_size=2, reg_weight=0.05)


def make_toy(build, atomic_dataset, tmp_path, **config):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)],
                   dense={"v_feat": TOY_FEATURES}, words={"t_words": TOY_WORDS})
    config, data, train, *_ = build("GRCN", "toy", **{**HYPER, **config})
    torch.manual_seed(0)
    return GRCN(config, train._dataset), data


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    return make_toy(build, atomic_dataset, tmp_path)


def np_(tensor):
    return tensor.detach().double().numpy()


def leaky(x):
    return np.where(x > 0, x, 0.01 * x)


def unit(x):
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def reference_content(model, data, mask):
    """Per modality, each item's content row: the v_feat row over its norm, and the summed
    word embeddings over their norm, times the mask."""
    table = np_(model.content.word_embeddings["t_words"].weight)
    dense, words = np.zeros((model.n_items, 3)), np.zeros((model.n_items, table.shape[1]))
    for item in range(1, model.n_items):
        row = int(data.id2token("item_id", item)) - 1
        dense[item] = unit(TOY_FEATURES[row])
        for word in TOY_WORDS[row]:
            words[item] += table[data.token2id("t_words", str(word))]
        words[item] = unit(words[item])
    return [dense * mask[:3], words * mask[3:]]


def neighbours(model, data):
    around = [[] for _ in range(model.n_users + model.n_items)]
    for user, item in TOY_TRAIN:
        u = data.token2id("user_id", str(user))
        i = model.n_users + data.token2id("item_id", str(item))
        around[u].append(i)
        around[i].append(u)
    return around


def softmax(values):
    values = np.exp(np.array(values) - np.max(values))
    return values / values.sum()


def reference_nodes(model, data, mask=None, weight_mode="confid", pruning=True):
    """§3.2-3.3 node by node with explicit loops over neighbours."""
    mask = np.ones(5) if mask is None else mask
    around = neighbours(model, data)
    n_users, n_nodes = model.n_users, model.n_users + model.n_items
    reps, affinities = [], []  # affinities[m][(j, v)]: alpha of the message j -> v
    for refiner, rows in zip(model.refiners, reference_content(model, data, mask)):
        W, b = np_(refiner.projection.weight), np_(refiner.projection.bias)
        features = unit(leaky(rows @ W.T + b))
        preference = unit(np_(refiner.preference))
        for _ in range(model.refiners[0].num_routing):
            new = preference.copy()
            for u in range(n_users):
                items = [i - n_users for i in around[u]]
                if items:
                    a = softmax([preference[u] @ features[i] for i in items])
                    new[u] = preference[u] + sum(w * features[i] for w, i in zip(a, items))
            preference = unit(new)
        x = np.concatenate([preference, features])
        out, alpha = x.copy(), {}
        for v in range(n_nodes):
            if around[v]:
                a = softmax([x[v] @ x[j] for j in around[v]])
                for w, j in zip(a, around[v]):
                    out[v] += w * x[j]
                    alpha[(j, v)] = w
        reps.append(out)
        affinities.append(alpha)
    confidence = np_(model.confidence)
    weights = {}
    for edge in affinities[0]:
        per_modality = [alpha[edge] for alpha in affinities]
        if weight_mode == "confid":
            w = max(a * confidence[edge[0], m] for m, a in enumerate(per_modality))
        elif weight_mode == "max":
            w = max(per_modality)
        else:
            w = np.mean(per_modality)
        weights[edge] = max(w, 0.0) if pruning else w
    x = unit(np_(model.id_embedding))
    layers = [x]
    for _ in range(2):
        h = np.zeros_like(x)
        for (j, v), w in weights.items():
            h[v] += w * layers[-1][j]
        layers.append(h)
    return np.concatenate([sum(layers), *reps], axis=1)


def scores_of(model, users, items):
    model.eval()
    with torch.no_grad():
        return model.predict(Interaction({"user_id": users, "item_id": items})).numpy()


@pytest.mark.parametrize("weight_mode, pruning", [("confid", True), ("max", True), ("mean", False)])
def test_scores_follow_the_refining_and_convolution_equations(build, atomic_dataset, tmp_path, weight_mode, pruning):
    model, data = make_toy(build, atomic_dataset, tmp_path, weight_mode=weight_mode, pruning=pruning)
    users, items = torch.tensor([1, 2, 3, 1, 3]), torch.tensor([1, 5, 2, 4, 3])
    nodes = reference_nodes(model, data, weight_mode=weight_mode, pruning=pruning)
    expected = (nodes[users.numpy()] * nodes[model.n_users + items.numpy()]).sum(1)
    np.testing.assert_allclose(scores_of(model, users, items), expected, rtol=1e-4, atol=1e-6)


def test_routing_moves_the_user_preferences(build, atomic_dataset, tmp_path):
    """With no routing the users' content part is their own normalised preference."""
    routed, _ = make_toy(build, atomic_dataset, tmp_path, num_routing=2)
    plain, _ = make_toy(build, atomic_dataset, tmp_path, num_routing=1)
    users, items = torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3])
    assert not np.allclose(scores_of(routed, users, items), scores_of(plain, users, items))


def test_loss_is_bpr_plus_the_authors_l2(toy):
    model, data = toy
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 4]), torch.tensor([5, 1, 4])
    model.train()
    loss = model.calculate_loss(Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg}))
    nodes = reference_nodes(model, data)
    u, i, j = nodes[users.numpy()], nodes[model.n_users + pos.numpy()], nodes[model.n_users + neg.numpy()]
    bpr = np.mean(np.log(1 + np.exp(-((u * i).sum(1) - (u * j).sum(1)))))
    ids = np_(model.id_embedding)
    pair_users = np.repeat(users.numpy(), 2)
    pair_items = np.stack([pos.numpy(), neg.numpy()], 1).reshape(-1) + model.n_users
    l2 = (ids[pair_users] ** 2 + ids[pair_items] ** 2).mean()
    l2 += sum((np_(r.preference)[pair_users] ** 2).mean() for r in model.refiners)
    assert loss.item() == pytest.approx(bpr + HYPER["reg_weight"] * l2, rel=1e-4)
    loss.backward()
    assert model.confidence.grad.abs().sum() > 0
    assert model.refiners[0].projection.weight.grad.abs().sum() > 0
    assert model.content.word_embeddings["t_words"].weight.grad.abs().sum() > 0


def test_content_mask_reaches_the_refined_graph(toy):
    model, data = toy
    mask = np.array([1.0, 0.0, 0.5, 0.0, 1.0])
    model.set_content_mask(torch.tensor(mask, dtype=torch.float32))
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    nodes = reference_nodes(model, data, mask=mask)
    np.testing.assert_allclose(scores.numpy(), nodes[users.numpy()] @ nodes[model.n_users:].T, rtol=1e-4, atol=1e-6)


def test_full_sort_predict_equals_predict_for_every_pair(toy):
    model, _ = toy
    model.eval()
    users, items = torch.arange(1, model.n_users), torch.arange(model.n_items)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        pairs = Interaction({"user_id": users.repeat_interleave(len(items)), "item_id": items.repeat(len(users))})
        torch.testing.assert_close(full.reshape(-1), model.predict(pairs))


@pytest.mark.parametrize("key, value, message", [
    ("num_routing", 0, "num_routing: expected an integer >= 1"),
    ("latent_size", 0, "latent_size: expected an integer >= 1"),
    ("weight_mode", "sum", "weight_mode: expected one of"),
    ("reg_weight", -1.0, "reg_weight: expected a number >= 0"),
])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value, message):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("GRCN", "toy", **{**HYPER, key: value})
    with pytest.raises(ValueError, match=f"^{message}"):
        GRCN(config, train._dataset)


def test_grcn_runs_through_get_model_and_learns(tmp_path, atomic_dataset, clustered, build):
    """Content that says nothing of the clusters: what is learned comes from the graph."""
    assert get_model("GRCN") is GRCN
    train_pairs, valid_pairs, test_pairs, _ = clustered(n_users=40, n_items=80, n_clusters=4)
    features = np.random.default_rng(0).random((80, 4))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs, dense={"v_feat": features})
    schedule = {"epochs": 20, "learning_rate": 0.01, "train_batch_size": 64, "stopping_step": 100, "eval_step": 5}
    config, _, train, valid, _ = build("GRCN", "clusters", **schedule)
    trainer = get_trainer(config["MODEL_TYPE"], "GRCN")(config, GRCN(config, train._dataset))
    before = trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]
    common = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "use_gpu": False}
    trained = run_recbole_invrl("GRCN", "clusters", config_dict={**common, **schedule})
    assert trained["best_valid_result"]["ndcg@10"] > before + 0.1, (before, trained["best_valid_result"])
