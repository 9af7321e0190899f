import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_invrl.model.general_recommender import DUIF
from recbole_invrl.quick_start import run_recbole_invrl
from recbole_invrl.utils import get_model, get_trainer

TOY_TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (3, 1), (3, 4), (3, 3)]
TOY_FEATURES = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 1.0], [3.0, -1.0, 0.0], [0.5, 0.5, 2.0],
                         [-1.0, 0.0, 1.0]])
TOY_WORDS = [[1, 2], [2], [], [3, 1, 1], [4]]
HYPER = dict(embedding_size=4, word_embedding_size=3, reg_weight=0.05, proj_reg_weight=0.2)


@pytest.fixture
def toy(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)],
                   dense={"v_feat": TOY_FEATURES}, words={"t_words": TOY_WORDS})
    config, data, train, *_ = build("DUIF", "toy", **HYPER)
    torch.manual_seed(0)
    return DUIF(config, train._dataset), data


def reference_content(model, data, items):
    """c_i written out from the raw file rows: the feature row over its norm, then the sum
    of the item's word embeddings (repeats count) over its norm."""
    table = model.content.word_embeddings["t_words"].weight.detach().numpy()
    rows = []
    for item in items.tolist():
        row = int(data.id2token("item_id", item)) - 1
        features = TOY_FEATURES[row] / np.linalg.norm(TOY_FEATURES[row])
        bag = sum((table[data.token2id("t_words", str(w))] for w in TOY_WORDS[row]),
                  np.zeros(table.shape[1]))
        norm = np.linalg.norm(bag)
        rows.append(np.concatenate([features, bag / norm if norm > 0 else bag]))
    return np.array(rows)


def reference_scores(model, data, users, items):
    """<p_u, W c_i> with the products written out."""
    c = reference_content(model, data, items)
    P = model.user_embedding.weight.detach().numpy()[users.numpy()]
    W = model.projection.weight.detach().numpy()
    return np.array([sum(P[n, k] * sum(W[k, d] * c[n, d] for d in range(c.shape[1]))
                         for k in range(W.shape[0])) for n in range(len(users))])


def test_layout_and_sizes(toy):
    model, _ = toy
    assert model.content_layout == [("v_feat", 3), ("t_words", 3)]
    assert model.projection.weight.shape == (4, 6)
    assert not hasattr(model, "item_embedding")  # items are their content only


def test_score_is_user_vector_dot_projected_content(toy):
    model, data = toy
    users = torch.tensor([1, 2, 3, 1, 3])
    items = torch.tensor([1, 5, 2, 1, 3])  # item 3's word bag is empty
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    np.testing.assert_allclose(scores.numpy(), reference_scores(model, data, users, items),
                               rtol=1e-5, atol=1e-6)


def test_loss_is_bpr_plus_l2(toy):
    model, data = toy
    users, pos, neg = torch.tensor([1, 2, 3]), torch.tensor([1, 3, 4]), torch.tensor([5, 1, 4])
    loss = model.calculate_loss(Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg}))
    diff = reference_scores(model, data, users, pos) - reference_scores(model, data, users, neg)
    bpr = np.mean(np.log(1 + np.exp(-diff)))
    P = model.user_embedding.weight.detach().numpy()[users.numpy()]
    W = model.projection.weight.detach().numpy()
    l2 = 0.5 * HYPER["reg_weight"] * (P ** 2).sum() / 3 + 0.5 * HYPER["proj_reg_weight"] * (W ** 2).sum()
    assert loss.item() == pytest.approx(bpr + l2, rel=1e-5)
    loss.backward()
    assert model.projection.weight.grad.abs().sum() > 0
    assert model.content.word_embeddings["t_words"].weight.grad.abs().sum() > 0


def test_content_mask_reaches_the_scores(toy):
    model, data = toy
    users, items = torch.tensor([1, 2, 3]), torch.tensor([2, 4, 5])
    model.set_content_mask(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.5]))
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    c = reference_content(model, data, items) * np.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    P = model.user_embedding.weight.detach().numpy()[users.numpy()]
    expected = (P * (c @ model.projection.weight.detach().numpy().T)).sum(1)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)


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
        model.projection.weight.mul_(2.0)  # the cached item vectors follow parameter updates
        doubled = model.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    torch.testing.assert_close(doubled, 2 * full)


@pytest.mark.parametrize("key, value, message", [
    ("embedding_size", 0, "embedding_size: expected an integer >= 1"),
    ("reg_weight", -1.0, "reg_weight: expected a number >= 0"),
    ("proj_reg_weight", "x", "proj_reg_weight: expected a number >= 0"),
])
def test_bad_hyper_parameters_name_the_key(build, atomic_dataset, tmp_path, key, value, message):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("DUIF", "toy", **{**HYPER, key: value})
    with pytest.raises(ValueError, match=f"^{message}"):
        DUIF(config, train._dataset)


def test_without_a_sampler_negatives_are_drawn_on_the_device(build, atomic_dataset, tmp_path):
    atomic_dataset(tmp_path, "toy", TOY_TRAIN, [(1, 3)], [(1, 4)], dense={"v_feat": TOY_FEATURES})
    config, _, train, *_ = build("DUIF", "toy", train_neg_sample_args=None)
    model = DUIF(config, train._dataset)
    loss = model.calculate_loss(Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([1, 2])}))
    assert torch.isfinite(loss)
    negatives = model.sample_negatives(torch.ones(500, dtype=torch.long))
    assert int(negatives.min()) >= 1 and int(negatives.max()) < model.n_items
    config["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 0}
    with pytest.raises(ValueError, match="^train_neg_sample_args: DUIF is trained pairwise"):
        DUIF(config, train._dataset)


def test_invariance_parts_give_the_score_in_the_form_of_eq_14(toy):
    model, _ = toy
    model.eval()
    parts = model.invariance_parts()
    users, items = torch.tensor([1, 2, 3]), torch.tensor([4, 2, 5])
    s_id = (parts.user_ids[users] * parts.item_ids[items]).sum(1)
    content = parts.content_rows(items) @ parts.projection.T
    rebuilt = s_id + (parts.user_content[users] * content).sum(1)
    with torch.no_grad():
        scores = model.predict(Interaction({"user_id": users, "item_id": items}))
    torch.testing.assert_close(rebuilt, scores)
    assert parts.content_reg == HYPER["proj_reg_weight"]


def test_duif_runs_through_get_model_and_learns(tmp_path, atomic_dataset, clustered, build):
    """On clusters that the item features reveal, a short training raises validation NDCG
    far above the untrained model's, and the test NDCG above popularity's."""
    assert get_model("DUIF") is DUIF
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=40, n_items=80, n_clusters=4)
    features = np.eye(4)[item_cluster] + 0.1 * np.random.default_rng(0).random((80, 4))
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": features})
    schedule = {"epochs": 20, "learning_rate": 0.01, "train_batch_size": 64, "stopping_step": 100,
                "eval_step": 5}
    config, _, train, valid, _ = build("DUIF", "clusters", **schedule)
    trainer = get_trainer(config["MODEL_TYPE"], "DUIF")(config, DUIF(config, train._dataset).to(config["device"]))
    before = trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]

    common = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "use_gpu": False}
    trained = run_recbole_invrl("DUIF", "clusters", config_dict={**common, **schedule})
    pop = run_recbole_invrl("Pop", "clusters", config_dict=common, saved=False)
    assert trained["model"] == "DUIF"
    after = trained["best_valid_result"]["ndcg@10"]
    assert after > before + 0.1, (before, after)
    assert trained["test_result"]["ndcg@10"] > pop["test_result"]["ndcg@10"] + 0.1
