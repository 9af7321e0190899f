import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import VBPR
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3)]
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.0], [3.0, -1.0, 0.0], [0.5, 0.5, 2.0],
                         [-1.0, 0.0, 1.0]])
TOY_WORDS = [[1, 2], [2], [], [3, 1, 1], [4]]
HYPER = dict(embedding_size=6, visual_size=2, word_embedding_size=3, reg_weight=0.05)


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)],
                   dense={"v_feat": TOY_FEATURES}, words={"t_words": TOY_WORDS})
    config, data, train, *_ = build("VBPR", "toy", **HYPER)
    torch.manual_seed(0)
    model = VBPR(config, train._dataset)
    with torch.no_grad():  # biases start at 0; make them matter
        model.item_bias.weight.normal_()
        model.content_bias.weight.normal_()
    return model, data


def _hand_scores(model, users, items):
    """beta_i + <gamma_u, gamma_i> + <theta_u, E c_i> + <beta', c_i>, term by term."""
    c = model.content.raw(items).detach().numpy()
    P = model.user_embedding.weight.detach().numpy()[users.numpy()]
    gamma_u, theta_u = P[:, : model.id_size], P[:, model.id_size:]
    gamma_i = model.item_embedding.weight.detach().numpy()[items.numpy()]
    beta_i = model.item_bias.weight.detach().numpy()[items.numpy(), 0]
    E = model.visual_projection.weight.detach().numpy()
    beta_c = model.content_bias.weight.detach().numpy()[0]
    return (beta_i + (gamma_u * gamma_i).sum(1) + (theta_u * (c @ E.T)).sum(1) + c @ beta_c)


def test_layout_and_sizes(toy):
    model, _ = toy
    assert (model.id_size, model.visual_size) == (4, 2)
    assert model.content_layout == [("v_feat", 3), ("t_words", 3)]
    assert model.visual_projection.weight.shape == (2, 6)


def test_score_is_the_vbpr_formula(toy):
    model, data = toy
    users = torch.tensor([1, 2, 3, 1, 3])
    items = torch.tensor([1, 5, 2, 1, 4])  # a repeated item is projected once, same score
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    np.testing.assert_allclose(scores.numpy(), _hand_scores(model, users, items), rtol=1e-5,
                               atol=1e-6)


def test_loss_is_bpr_plus_l2_on_the_batch(toy):
    model, _ = toy
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 4]), torch.tensor([5, 1, 4])
    loss = model.calculate_loss(Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg}))
    diff = _hand_scores(model, users, pos) - _hand_scores(model, users, neg)
    bpr = np.mean(np.log1p(np.exp(-diff)))
    w = lambda emb, idx: (emb.weight.detach().numpy()[idx.numpy()] ** 2).sum()  # noqa: E731
    l2 = 0.5 * (w(model.user_embedding, users) + w(model.item_embedding, pos)
                + w(model.item_embedding, neg) + w(model.item_bias, pos)
                + w(model.item_bias, neg)) / 3
    assert loss.item() == pytest.approx(bpr + HYPER["reg_weight"] * l2, rel=1e-5)
    loss.backward()
    assert model.visual_projection.weight.grad.abs().sum() > 0
    assert model.content.word_embeddings["t_words"].weight.grad.abs().sum() > 0


def test_full_sort_predict_equals_predict_for_every_pair(toy, monkeypatch):
    model, _ = toy
    monkeypatch.setattr("recbole_invrl.model.general_recommender.vbpr.PROJECTION_CHUNK", 2)
    model.eval()
    users = torch.arange(1, model.n_users)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
        for row, u in enumerate(users):
            items = torch.arange(model.n_items)
            pairs = Interaction({"user_id": u.repeat(len(items)), "item_id": items})
            torch.testing.assert_close(full[row], model.predict(pairs))
        model.item_bias.weight.add_(1.0)  # the cached item vectors follow parameter updates
        shifted = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    torch.testing.assert_close(shifted, full + 1.0)


@pytest.mark.parametrize("key, value, message", [
    ("embedding_size", 0, "embedding_size: expected an integer >= 1"),
    ("embedding_size", 1.5, "embedding_size: expected an integer >= 1"),
    ("visual_size", 6, r"visual_size: expected an integer in \[1, embedding_size - 1\]"),
    ("reg_weight", -1.0, "reg_weight: expected a number >= 0"),
    ("word_embedding_size", 0, "word_embedding_size: expected an integer >= 1"),
])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value, message):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("VBPR", "toy", **{**HYPER, key: value})
    with pytest.raises(ValueError, match=f"^{message}"):
        VBPR(config, train._dataset)


def test_vbpr_without_a_sampler_draws_its_negatives_on_the_device(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("VBPR", "toy", train_neg_sample_args=None)
    model = VBPR(config, train._dataset)
    user = train._dataset.token2id("user_id", "1")
    negatives = model.sample_negatives(torch.full((500,), user))
    assert negatives.shape[0] == 500
    seen = {train._dataset.token2id("item_id", str(i)) for u, i in TOY_TRAIN if u == 1}
    assert not seen & set(negatives.flatten().tolist())  # as RecBole's sampler: none the user has seen
    assert int(negatives.min()) >= 1 and int(negatives.max()) < model.n_items  # item 0 is padding
    assert len(torch.unique(negatives)) > 1


def test_vbpr_refuses_a_malformed_negative_sampler(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("VBPR", "toy")
    config["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 0}
    with pytest.raises(ValueError, match="^train_neg_sample_args: VBPR is trained pairwise"):
        VBPR(config, train._dataset)


def test_defaults_split_the_embedding_like_the_original(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("VBPR", "toy")
    model = VBPR(config, train._dataset)
    assert (model.id_size, model.visual_size) == (32, 32)
    assert config["learning_rate"] == 0.001 and config["reg_weight"] == 0.0001
    assert config["train_neg_sample_args"]["sample_num"] == 1
    assert config["normalize_all"] is False


def test_vbpr_runs_through_get_model_and_beats_pop(tmp_path, atomic_dataset, clustered):
    """On clusters that the item features reveal, VBPR must rank far above popularity."""
    assert get_model("VBPR") is VBPR
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=40, n_items=60)
    features = np.eye(2)[item_cluster] + 0.1 * np.random.default_rng(0).random((60, 2))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": features})
    common = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING",
              "use_gpu": False}
    pop = run_recbole_invrl("Pop", "clusters", config_dict=common, saved=False)
    vbpr = run_recbole_invrl("VBPR", "clusters", config_dict={
        **common, "epochs": 20, "learning_rate": 0.01, "train_batch_size": 64,
        "stopping_step": 100, "eval_step": 5})
    assert vbpr["model"] == "VBPR"
    pop_ndcg, vbpr_ndcg = pop["test_result"]["ndcg@10"], vbpr["test_result"]["ndcg@10"]
    assert vbpr_ndcg > pop_ndcg + 0.1, (pop_ndcg, vbpr_ndcg)
