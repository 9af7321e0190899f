from pathlib import Path

import pytest
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import UltraGCN
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model, get_trainer

# item 5 is in no training interaction: zero degree, still a possible negative
TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3), (4, 2), (4, 3)]
TOY_SPLITS = (TOY_TRAIN, [(1, 3), (5, 5)], [(1, 4)])
HYPER = dict(w1=0.7, w2=1.3, w3=0.4, w4=2.0, gamma_i=0.6, negative_weight=1.5, neg_num=3,
             num_neighbors=2, id_reg_weight=0.01, embedding_size=4, init_std=0.5)


def write_interactions_only(root: Path, name: str, train, valid, test, **config) -> None:
    """RecBole benchmark files with no .item file and no feature column."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", train), ("valid", valid), ("test", test)):
        rows = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in pairs]
        (folder / f"{name}.{split}.inter").write_text("\n".join(rows) + "\n")
    settings = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
                "load_col": {"inter": ["user_id", "item_id"]},
                "benchmark_filename": ["train", "valid", "test"],
                "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
                "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", **config}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(settings))


@pytest.fixture
def toy(build, tmp_path):
    write_interactions_only(tmp_path, "toy", *TOY_SPLITS)
    config, data, train, *_ = build("UltraGCN", "toy", **HYPER)
    torch.manual_seed(0)
    return UltraGCN(config, train._dataset), data


def reference_loss(model, data, users, positives, negatives):
    """L_O + L_C + gamma_I L_I + L2 of UltraGCN written out from the interaction list:
    dense R, G = R^T R, beta (eq. 18), omega and S(i) (eq. 20), loops over the batch."""
    uid = lambda u: data.token2id("user_id", str(u))  # noqa: E731
    iid = lambda i: data.token2id("item_id", str(i))  # noqa: E731
    R = torch.zeros(model.n_users, model.n_items, dtype=torch.float64)
    for u, i in TOY_TRAIN:
        R[uid(u), iid(i)] = 1.0
    d_u, d_i = R.sum(1), R.sum(0)
    G = R.T @ R
    g = G.sum(1)
    E = model.user_embedding.weight.detach().double()
    T = model.item_embedding.weight.detach().double()
    log_sigmoid = torch.nn.functional.logsigmoid

    def beta(u, i):
        return (d_u[u] + 1).sqrt() / d_u[u] / (d_i[i] + 1).sqrt()

    def neighbours(i):
        """S(i): the num_neighbors items j != i with the largest omega_ij (ties: smaller j)."""
        omega = {j: G[i, j] / (g[i] - G[i, i]) * (g[i] / g[j]).sqrt()
                 for j in range(1, model.n_items) if j != i and G[i, j] > 0}
        ranked = sorted(omega, key=lambda j: (-float(omega[j]), j))
        return [(j, omega[j]) for j in ranked[: HYPER["num_neighbors"]]]

    total = torch.zeros((), dtype=torch.float64)
    for b in range(len(users)):
        u, i = int(users[b]), int(positives[b])
        s = lambda j: E[u] @ T[j]  # noqa: E731
        total -= (HYPER["w1"] + HYPER["w2"] * beta(u, i)) * log_sigmoid(s(i))
        neg = [-(HYPER["w3"] + HYPER["w4"] * beta(u, int(j))) * log_sigmoid(-s(int(j)))
               for j in negatives[b]]
        total += HYPER["negative_weight"] * torch.stack(neg).mean()
        for j, omega in neighbours(i):
            total -= HYPER["gamma_i"] * omega * log_sigmoid(s(j))
    total += 0.5 * HYPER["id_reg_weight"] * (E.square().sum() + T.square().sum())
    return total


def test_loss_equals_the_reference(toy):
    model, data = toy
    users = torch.tensor([data.token2id("user_id", str(u)) for u in (1, 2, 3, 2, 4)])
    positives = torch.tensor([data.token2id("item_id", str(i)) for i in (1, 3, 4, 2, 3)])
    torch.manual_seed(11)
    negatives = model.sample_negatives(users)
    torch.manual_seed(11)
    loss = model.calculate_loss(Interaction({"user_id": users, "item_id": positives}))
    expected = reference_loss(model, data, users, positives, negatives)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0


def test_scores_are_dot_products_and_full_sort_equals_predict(toy):
    model, _ = toy
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        expected = model.user_embedding.weight[users] @ model.item_embedding.weight.T
        torch.testing.assert_close(full, expected)
        for row, u in enumerate(users):
            items = torch.arange(model.n_items)
            pairs = Interaction({"user_id": u.repeat(len(items)), "item_id": items})
            torch.testing.assert_close(full[row], model.predict(pairs))


def test_shared_model_reuses_the_graph_weights(build, tmp_path):
    write_interactions_only(tmp_path, "toy", *TOY_SPLITS)
    config, _, train, *_ = build("UltraGCN", "toy", **HYPER)
    model = UltraGCN(config, train._dataset)
    other = UltraGCN(config, train._dataset, shared=model)
    assert other.neighbor_index.data_ptr() == model.neighbor_index.data_ptr()
    assert other.beta_user.data_ptr() == model.beta_user.data_ptr()


@pytest.mark.parametrize("key, value", [("embedding_size", 0), ("neg_num", 0), ("gamma_i", -1.0),
                                        ("id_reg_weight", -0.1)])
def test_bad_hyper_parameters_name_the_key(build, tmp_path, key, value):
    write_interactions_only(tmp_path, "toy", *TOY_SPLITS)
    config, _, train, *_ = build("UltraGCN", "toy", **{key: value})
    with pytest.raises(ValueError, match=f"^{key}: expected"):
        UltraGCN(config, train._dataset)


def test_short_training_raises_ndcg(build, clustered, tmp_path):
    train_pairs, valid_pairs, test_pairs, _ = clustered(n_users=40, n_items=60)
    write_interactions_only(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs)
    config, _, train, valid, _ = build(
        "UltraGCN", "clusters", epochs=15, neg_num=10, negative_weight=10.0, train_batch_size=64,
        learning_rate=0.01, init_std=0.01, stopping_step=100, gamma_i=1.0)
    model = UltraGCN(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    untrained = trainer.evaluate(valid, load_best_model=False)["ndcg@10"]
    trainer.fit(train, valid, saved=False)
    trained = trainer.evaluate(valid, load_best_model=False)["ndcg@10"]
    assert trained > untrained + 0.1, (untrained, trained)


def test_runs_through_get_model_on_a_dataset_without_features(tmp_path, clustered):
    assert get_model("UltraGCN") is UltraGCN
    train_pairs, valid_pairs, test_pairs, _ = clustered(n_users=40, n_items=60)
    write_interactions_only(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs)
    result = run_recbole_invrl("UltraGCN", "clusters", config_dict={
        "data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "use_gpu": False,
        "epochs": 2, "neg_num": 5}, saved=False)
    assert result["model"] == "UltraGCN" and 0 <= result["test_result"]["ndcg@10"] <= 1
