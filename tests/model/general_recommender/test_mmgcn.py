import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import MMGCN
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model, get_trainer

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3)]
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.0], [3.0, -1.0, 0.0], [0.5, 0.5, 2.0],
                         [-1.0, 0.0, 1.0]])
TOY_WORDS = [[1, 2], [2], [], [3, 1, 1], [4]]
# v_feat (3 wide) is mapped to latent_size 2 first; the word modality (2 wide) is not
HYPER = dict(embedding_size=3, latent_size=2, n_layers=2, word_embedding_size=2, reg_weight=0.05)


def make_toy(build, atomic_dataset, tmp_path, **config):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)],
                   dense={"v_feat": TOY_FEATURES}, words={"t_words": TOY_WORDS})
    config, data, train, *_ = build("MMGCN", "toy", **{**HYPER, **config})
    torch.manual_seed(0)
    return MMGCN(config, train._dataset), data


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    return make_toy(build, atomic_dataset, tmp_path)


def leaky(x):
    return np.where(x > 0, x, 0.01 * x)


def np_(tensor):
    return tensor.detach().double().numpy()


def reference_modalities(model, data, mask=None):
    """Each item's v_feat row over its norm, and its summed word embeddings over their norm
    (the padding item 0 has neither)."""
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


def reference_neighbours(model, data):
    neighbours = [[] for _ in range(model.n_users + model.n_items)]
    for user, item in TOY_TRAIN:
        u = data.token2id("user_id", str(user))
        i = model.n_users + data.token2id("item_id", str(item))
        neighbours[u].append(i)
        neighbours[i].append(u)
    return neighbours


def reference_nodes(model, data, combination="concat", mask=None):
    """Eq. 1-7 node by node: mean of W_1 x_j over the neighbours, LeakyReLU; W_2, b_2 and
    the id embedding; W_3 on the concatenation (or sum); summed over the modalities."""
    neighbours = reference_neighbours(model, data)
    ids = np_(model.id_embedding.weight)
    total = 0.0
    for graph, content in zip(model.modalities, reference_modalities(model, data, mask)):
        if graph.input_map is not None:
            content = content @ np_(graph.input_map.weight).T + np_(graph.input_map.bias)
        x = np.concatenate([np_(graph.preference), content])
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        for layer in range(model.n_layers):
            W1 = np_(graph.aggregate[layer].weight)
            W2, b2 = np_(graph.transform[layer].weight), np_(graph.transform[layer].bias)
            W3, b3 = np_(graph.combine[layer].weight), np_(graph.combine[layer].bias)
            h = np.zeros((len(x), W1.shape[0]))
            for v, around in enumerate(neighbours):
                if around:
                    h[v] = leaky(np.mean([W1 @ x[j] for j in around], axis=0))
            x_hat = leaky(x @ W2.T + b2) + ids
            if combination == "concat":
                x = leaky(np.concatenate([h, x_hat], axis=1) @ W3.T + b3)
            else:
                x = leaky(h @ W3.T + b3 + x_hat)
        total = total + x
    return total


def test_layers_and_sizes(toy):
    model, _ = toy
    visual, words = model.modalities
    assert visual.input_map.weight.shape == (2, 3) and words.input_map is None
    assert visual.preference.shape == (model.n_users, 2) and words.preference.shape == (model.n_users, 2)
    assert model.id_embedding.weight.shape == (model.n_users + model.n_items, 3)
    assert model.graph.shape == (model.n_users + model.n_items,) * 2
    assert len(model.graph.source) == 2 * len(TOY_TRAIN)
    # the weights average: those into one node sum to 1
    into = torch.zeros(model.n_users + model.n_items).index_add_(0, model.graph.target, model.mean_weights)
    torch.testing.assert_close(into[into > 0], torch.ones(int((into > 0).sum())))


@pytest.mark.parametrize("combination", ["concat", "add"])
def test_scores_follow_the_layer_equations(build, atomic_dataset, tmp_path, combination):
    model, data = make_toy(build, atomic_dataset, tmp_path, combination=combination)
    users = torch.tensor([1, 2, 3, 1, 3])
    items = torch.tensor([1, 5, 2, 4, 3])
    nodes = reference_nodes(model, data, combination)
    expected = (nodes[users.numpy()] * nodes[model.n_users + items.numpy()]).sum(1)
    model.eval()
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_loss_is_bpr_plus_l2(toy):
    model, data = toy
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 4]), torch.tensor([5, 1, 4])
    loss = model.calculate_loss(Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg}))
    nodes = reference_nodes(model, data)
    u, i, j = nodes[users.numpy()], nodes[model.n_users + pos.numpy()], nodes[model.n_users + neg.numpy()]
    bpr = np.mean(np.log(1 + np.exp(-((u * i).sum(1) - (u * j).sum(1)))))
    ids = np_(model.id_embedding.weight)
    squares = sum((ids[k] ** 2).sum() for k in [*users.tolist(), *(pos + model.n_users).tolist(),
                                               *(neg + model.n_users).tolist()])
    squares += sum((np_(graph.preference)[users.numpy()] ** 2).sum() for graph in model.modalities)
    assert loss.item() == pytest.approx(bpr + HYPER["reg_weight"] * 0.5 * squares / 3, rel=1e-4)
    loss.backward()
    assert model.modalities[0].input_map.weight.grad.abs().sum() > 0
    assert model.content.word_embeddings["t_words"].weight.grad.abs().sum() > 0


def test_gradients_match_a_dense_adjacency(toy):
    """The loss's gradients with the sparse edge aggregation equal those with the same
    averaging written as a dense matrix product."""
    model, data = toy
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 4]), torch.tensor([5, 1, 4])
    batch = Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg})
    model.calculate_loss(batch).backward()
    sparse = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    n_nodes = model.n_users + model.n_items
    dense = torch.zeros(n_nodes, n_nodes)
    for v, around in enumerate(reference_neighbours(model, data)):
        for j in around:
            dense[v, j] = 1.0 / len(around)

    model.graph.aggregate = lambda weights, cols: dense @ cols
    model.calculate_loss(batch).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, sparse[name], rtol=1e-5, atol=1e-7, msg=name)
    assert sparse["id_embedding.weight"].abs().sum() > 0


def test_content_mask_reaches_the_graph(toy):
    model, data = toy
    mask = np.array([1.0, 0.0, 0.5, 0.0, 1.0])
    model.set_content_mask(torch.tensor(mask, dtype=torch.float32))
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    nodes = reference_nodes(model, data, mask=mask)
    expected = nodes[users.numpy()] @ nodes[model.n_users :].T
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-6)


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
        model.id_embedding.weight.add_(1.0)  # the cached tables follow parameter updates
        moved = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    assert not torch.allclose(moved, full)


@pytest.mark.parametrize("key, value, message", [
    ("n_layers", 0, "n_layers: expected an integer >= 1"),
    ("latent_size", 0, "latent_size: expected an integer >= 1"),
    ("combination", "max", "combination: expected one of"),
    ("reg_weight", -1.0, "reg_weight: expected a number >= 0"),
])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value, message):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("MMGCN", "toy", **{**HYPER, key: value})
    with pytest.raises(ValueError, match=f"^{message}"):
        MMGCN(config, train._dataset)


def test_mmgcn_runs_through_get_model_and_learns(tmp_path, atomic_dataset, clustered, build):
    """A short training raises validation NDCG well above the untrained model's, and the
    test NDCG above popularity's."""
    assert get_model("MMGCN") is MMGCN
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=40, n_items=80, n_clusters=4)
    features = np.eye(4)[item_cluster] + 0.1 * np.random.default_rng(0).random((80, 4))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": features})
    schedule = {"epochs": 20, "learning_rate": 0.01, "train_batch_size": 64, "stopping_step": 100,
                "eval_step": 5}
    config, _, train, valid, _ = build("MMGCN", "clusters", **schedule)
    trainer = get_trainer(config["MODEL_TYPE"], "MMGCN")(config, MMGCN(config, train._dataset))
    before = trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]

    common = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "use_gpu": False}
    trained = run_recbole_invrl("MMGCN", "clusters", config_dict={**common, **schedule})
    pop = run_recbole_invrl("Pop", "clusters", config_dict=common, saved=False)
    assert trained["model"] == "MMGCN"
    after = trained["best_valid_result"]["ndcg@10"]
    assert after > before + 0.1, (before, after)
    assert trained["test_result"]["ndcg@10"] > pop["test_result"]["ndcg@10"] + 0.1
