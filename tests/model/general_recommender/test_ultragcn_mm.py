import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import UltraGCNMM
from recbole_invrl.utils import get_trainer

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3)]
# item 5 has content but no interaction (zero degree, a possible negative)
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.0], [3.0, -1.0, 0.0], [0.5, 0.5, 2.0],
                         [-1.0, 0.0, 1.0]])
HYPER = dict(w1=0.7, w2=1.3, w3=0.4, w4=2.0, gamma_i=0.6, negative_weight=1.5, neg_num=3,
             num_neighbors=3, id_reg_weight=0.01, proj_reg_weight=0.02, embedding_size=4,
             content_size=2, init_std=0.5)


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, data, train, valid, test = build("UltraGCNMM", "toy", **HYPER)
    torch.manual_seed(0)
    model = UltraGCNMM(config, train._dataset)
    return model, data


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def hand_loss(model, data, users_tok, pos_tok, negatives):
    """Eq. 15-20 in numpy, from the raw interaction list and the model's parameters."""
    uid = {u: data.token2id("user_id", str(u)) for u in range(1, 4)}
    iid = {i: data.token2id("item_id", str(i)) for i in range(1, 6)}
    n_items = model.n_items
    R = np.zeros((model.n_users, n_items))
    for u, i in TOY_TRAIN:
        R[uid[u], iid[i]] = 1.0
    d_u, d_i = R.sum(1), R.sum(0)
    G = R.T @ R
    g = G.sum(1)
    P = model.user_embedding.weight.detach().numpy()
    T = model.item_embedding.weight.detach().numpy()
    W = model.projection.weight.detach().numpy()
    c = np.zeros((n_items, 3))
    for i in range(1, 6):
        c[iid[i]] = TOY_FEATURES[i - 1] / np.linalg.norm(TOY_FEATURES[i - 1])
    E = HYPER["embedding_size"]

    def score(u, i):
        return P[u, :E] @ T[i] + P[u, E:] @ (W @ c[i])

    def beta(u, i):
        return np.sqrt(d_u[u] + 1) / d_u[u] / np.sqrt(d_i[i] + 1)

    total = 0.0
    for b, (u_tok, i_tok) in enumerate(zip(users_tok, pos_tok)):
        u, i = uid[u_tok], iid[i_tok]
        total += -(HYPER["w1"] + HYPER["w2"] * beta(u, i)) * _log_sigmoid(score(u, i))
        neg_terms = [-(HYPER["w3"] + HYPER["w4"] * beta(u, j)) * _log_sigmoid(-score(u, j))
                     for j in negatives[b]]
        total += HYPER["negative_weight"] * np.mean(neg_terms)
        for j in range(1, n_items):  # S(i): every other co-interacted item (K=3 covers all)
            if j != i and G[i, j] > 0:
                omega = G[i, j] / (g[i] - G[i, i]) * np.sqrt(g[i] / g[j])  # eq. 20
                total += -HYPER["gamma_i"] * omega * _log_sigmoid(score(u, j))
    total += 0.5 * HYPER["id_reg_weight"] * ((P ** 2).sum() + (T ** 2).sum())
    total += 0.5 * HYPER["proj_reg_weight"] * (W ** 2).sum()
    return total


def test_loss_equals_hand_computation(toy):
    model, data = toy
    users_tok, pos_tok = [1, 2, 3, 2], [1, 3, 4, 2]
    interaction = Interaction({
        "user_id": torch.tensor([data.token2id("user_id", str(u)) for u in users_tok]),
        "item_id": torch.tensor([data.token2id("item_id", str(i)) for i in pos_tok]),
    })
    torch.manual_seed(11)
    negatives = torch.randint(1, model.n_items, (4, HYPER["neg_num"]))
    torch.manual_seed(11)
    loss = model.calculate_loss(interaction)
    expected = hand_loss(model, data, users_tok, pos_tok, negatives.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_negatives_are_uniform_over_real_items(toy):
    model, _ = toy
    negatives = model.sample_negatives(torch.ones(4000, dtype=torch.long))
    assert negatives.shape == (4000, HYPER["neg_num"])
    assert negatives.min() >= 1 and negatives.max() == model.n_items - 1
    counts = torch.bincount(negatives.flatten(), minlength=model.n_items)[1:].float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1


def test_full_sort_predict_equals_predict_for_every_pair(toy):
    model, _ = toy
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        for u in users:
            items = torch.arange(model.n_items)
            pairs = Interaction({"user_id": u.repeat(len(items)), "item_id": items})
            torch.testing.assert_close(full[u - 1], model.predict(pairs))


def test_zero_mask_removes_the_content_term(toy):
    model, _ = toy
    model.eval()
    model.set_content_mask(torch.zeros(3))
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        id_only = model.user_embedding(users)[:, :4] @ model.item_embedding.weight.T
    torch.testing.assert_close(scores, id_only)
    assert model.content_layout == [("v_feat", 3)]


def test_cached_item_vectors_follow_parameter_updates(toy):
    model, _ = toy
    model.eval()
    users = Interaction({"user_id": torch.tensor([1, 2])})
    with torch.no_grad():
        before = model.full_sort_predict(users)
        model.projection.weight.add_(1.0)
        after = model.full_sort_predict(users)
        model.set_content_mask(torch.zeros(3))
        masked = model.full_sort_predict(users)
    assert not torch.allclose(before, after) and not torch.allclose(after, masked)


@pytest.mark.parametrize("key, value", [("neg_num", 0), ("neg_num", -3), ("embedding_size", 0),
                                        ("gamma_i", -1.0)])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("UltraGCNMM", "toy", **{key: value})
    with pytest.raises(ValueError, match=f"^{key}: expected"):
        UltraGCNMM(config, train._dataset)


def test_short_training_raises_ndcg(build, atomic_dataset, clustered, tmp_path):
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=40, n_items=60)
    features = np.eye(2)[item_cluster] + 0.1 * np.random.default_rng(0).random((60, 2))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": features})
    config, _, train, valid, test = build(
        "UltraGCNMM", "clusters", epochs=15, neg_num=10, train_batch_size=64,
        learning_rate=0.01, init_std=0.01, stopping_step=100)
    model = UltraGCNMM(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    untrained = trainer.evaluate(test, load_best_model=False)["ndcg@10"]
    trainer.fit(train, valid, saved=False)
    trained = trainer.evaluate(test, load_best_model=False)["ndcg@10"]
    assert trained > untrained + 0.1, (untrained, trained)


def test_whole_catalogue_and_distinct_item_paths_agree(toy, monkeypatch):
    """A batch naming the catalogue twice over projects every item; a smaller one only its
    distinct items. Same loss, same gradients."""
    model, data = toy
    users = torch.tensor([1, 2, 3, 2])
    positives = torch.tensor([1, 3, 4, 2])
    negatives = torch.randint(1, model.n_items, (4, HYPER["neg_num"]), generator=torch.Generator().manual_seed(5))
    results = []
    for factor in (1, 10**6):
        monkeypatch.setattr("recbole_invrl.model.common.FULL_CATALOGUE_FACTOR", factor)
        loss = model.loss(users, positives, negatives)
        results.append([loss, *torch.autograd.grad(loss, list(model.parameters()))])
    for whole, distinct in zip(*results):
        torch.testing.assert_close(whole, distinct)


def test_evaluation_after_a_fused_adam_epoch_sees_the_new_parameters(toy):
    """torch's fused Adam updates parameters without moving their versions; the item-vector
    cache of one evaluation must not survive into the next (RecBole calls model.train())."""
    model, _ = toy
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    users = Interaction({"user_id": torch.tensor([1, 2, 3])})
    model.eval()
    with torch.no_grad():
        before = model.full_sort_predict(users)
    model.train()
    model.loss(torch.tensor([1, 2]), torch.tensor([1, 3]), torch.tensor([[2, 4, 5], [1, 1, 2]])).backward()
    versions = [p._version for p in model.parameters()]
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model.full_sort_predict(users)
        expected = model.user_embedding(users["user_id"]) @ model.item_vectors().T
    torch.testing.assert_close(after, expected.reshape(-1))
    assert not torch.allclose(before, after)
    assert versions == [p._version for p in model.parameters()]  # why the cache cannot rely on them
