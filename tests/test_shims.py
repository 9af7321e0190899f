"""Each shim for RecBole 1.2.1 on today's stack, against the failure it fixes: the behaviour
holds on every stack, and where the installed version needs the shim, removing it brings
the failure back."""
from functools import partial

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data.dataset import Dataset

from recbole_invrl import shims

needs_dok_shim = pytest.mark.skipif(sp.dok_matrix._update is not shims._dok_update,
                                    reason="this scipy still has dok_matrix._update")
needs_pandas_shim = pytest.mark.skipif(not shims.pandas_copy_on_write(), reason="pandas < 3")
needs_hyperopt_shim = pytest.mark.skipif(not shims.hyperopt_uses_generator(), reason="hyperopt < 0.2.7")


def test_apply_is_idempotent():
    assert shims.apply() == shims.apply()
    assert Dataset._fill_nan.__name__ == "_fill_nan"
    assert not hasattr(getattr(Dataset._fill_nan, "__wrapped__", None), "__wrapped__")  # wrapped once


# --- scipy: LightGCN's adjacency through dok_matrix._update --------------------------------


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    return clusters_dataset(tmp_path, n_users=12, n_items=16, per_user=8)


def lightgcn(build):
    from recbole.model.general_recommender import LightGCN

    config, data, train, _, _ = build("LightGCN", "clusters", epochs=1)
    return LightGCN(config, train._dataset), train._dataset


def test_lightgcn_adjacency_is_the_normalised_bipartite_graph(build, clusters):
    model, data = lightgcn(build)
    n_users, n_items = data.user_num, data.item_num
    inter = data.inter_matrix(form="coo").astype(np.float32)
    graph = sp.bmat([[None, inter], [inter.T, None]]).toarray()
    degree = graph.sum(axis=1) + 1e-7
    expected = graph / np.sqrt(degree)[:, None] / np.sqrt(degree)[None, :]
    got = model.norm_adj_matrix.to_dense().numpy()
    assert got.shape == (n_users + n_items, n_users + n_items)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@needs_dok_shim
def test_without_the_dok_shim_lightgcn_fails(build, clusters, monkeypatch):
    monkeypatch.delattr(sp.dok_matrix, "_update")
    with pytest.raises(AttributeError, match="_update"):
        lightgcn(build)


# --- pandas 3: Dataset._fill_nan fills float columns --------------------------------------


@pytest.fixture
def priced(tmp_path, clusters):
    """The clusters dataset with a float item column whose third and fifth cells are empty."""
    folder = tmp_path / "clusters"
    prices = [str(float(i)) for i in range(1, 17)]
    prices[2] = prices[4] = ""
    rows = ["item_id:token\tprice:float"] + [f"{i}\t{p}" for i, p in zip(range(1, 17), prices)]
    (folder / "clusters.item").write_text("\n".join(rows) + "\n")
    return {"load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "price"]}}


def item_prices(build, load_col) -> dict[str, float]:
    _, data, _, _, _ = build("BPR", "clusters", **load_col)
    ids = data.id2token(data.iid_field, np.arange(1, data.item_num))
    return dict(zip(ids.tolist(), data.item_feat["price"][1:].tolist()))


def test_missing_floats_are_filled_with_the_column_mean(build, priced):
    prices = item_prices(build, priced)
    mean = np.mean([i for i in range(1, 17) if i not in (3, 5)])
    assert prices["3"] == pytest.approx(mean) and prices["5"] == pytest.approx(mean)
    assert prices["4"] == pytest.approx(4.0)


@needs_pandas_shim
def test_without_the_fill_nan_shim_the_gaps_stay(build, priced, monkeypatch):
    monkeypatch.setattr(Dataset, "_fill_nan", Dataset._fill_nan.__wrapped__)
    with pytest.warns(Warning, match="chained assignment"):
        prices = item_prices(build, priced)
    assert np.isnan(prices["3"])


# --- pandas 3: Dataset._remap of token_seq columns -----------------------------------------


@pytest.fixture
def worded(tmp_path, atomic_dataset, clustered):
    train, valid, test, _ = clustered(n_users=12, n_items=16, per_user=8)
    words = [[10 + i % 3, 20 + i % 5][: 1 + i % 2] for i in range(16)]
    atomic_dataset(tmp_path, "clusters", train, valid, test, words={"words": words})
    return words


def item_words(build) -> list[list[str]]:
    _, data, _, _, _ = build("BPR", "clusters")
    ids = data.id2token(data.iid_field, np.arange(1, data.item_num)).astype(int)
    rows = data.item_feat["words"][1:]
    per_item = {int(i): [str(t) for t in data.id2token("words", row[row > 0].numpy())] for i, row in zip(ids, rows)}
    return [per_item[i] for i in range(1, 17)]


def test_token_seq_cells_keep_their_own_tokens(build, worded):
    assert item_words(build) == [[str(w) for w in bag] for bag in worded]


@needs_pandas_shim
def test_without_the_remap_shim_token_seq_columns_fail(build, worded, monkeypatch):
    monkeypatch.setattr(Dataset, "_remap", Dataset._remap.__wrapped__)
    with pytest.raises(ValueError, match="Length of values"):
        item_words(build)


# --- hyperopt >= 0.2.7: RecBole's exhaustive search ----------------------------------------


def exhaustive_values(search, seed=0) -> list[int]:
    from hyperopt import Trials, fmin, hp

    trials = Trials()
    fmin(lambda p: float(p["a"]), {"a": hp.choice("a", [1, 2, 3, 4])}, trials=trials,
         algo=partial(search, nbMaxSucessiveFailures=1000), max_evals=4,
         rstate=shims.hyperopt_rstate(seed), show_progressbar=False)
    return [t["misc"]["vals"]["a"][0] for t in trials.trials]


def test_exhaustive_search_visits_every_grid_point_once_in_a_seeded_order():
    from recbole.trainer import hyper_tuning

    first = exhaustive_values(hyper_tuning.exhaustive_search)
    assert sorted(first) == [0, 1, 2, 3]
    assert exhaustive_values(hyper_tuning.exhaustive_search) == first


@needs_hyperopt_shim
def test_without_the_hyperopt_shim_exhaustive_search_fails():
    from recbole.trainer import hyper_tuning

    with pytest.raises(AttributeError, match="integers"):
        exhaustive_values(hyper_tuning.exhaustive_search.__wrapped__)


# --- NumPy 2 aliases in Config, torch >= 2.6 weights-only loads ---------------------------


@pytest.mark.skipif(shims.version_tuple("numpy") < (2,), reason="numpy < 2 still has np.float_")
def test_recbole_config_aliases_fail_on_numpy_2_and_ours_do_not():
    from recbole.config import Config as RecBoleConfig

    from recbole_invrl.config import Config

    with pytest.raises(AttributeError, match="float_"):
        RecBoleConfig.compatibility_settings(None)
    Config.compatibility_settings(None)
    assert np.float is float and np.complex is complex and np.unicode is str and np.object is object


@pytest.mark.skipif(tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 6),
                    reason="torch < 2.6 loads pickles by default")
def test_recbole_trainer_cannot_reload_its_best_model_but_ours_can(build, clusters):
    from recbole.model.general_recommender import BPR
    from recbole.trainer import Trainer

    from recbole_invrl.compat import with_compat_mixins

    config, _, train, valid, test = build("BPR", "clusters", epochs=1)
    for trainer_class, fails in ((Trainer, True), (with_compat_mixins(Trainer), False)):
        trainer = trainer_class(config, BPR(config, train._dataset))
        trainer.fit(train, valid, saved=True, show_progress=False)
        if fails:
            with pytest.raises(Exception, match="[Ww]eights only"):
                trainer.evaluate(test, load_best_model=True)
        else:
            assert "ndcg@10" in trainer.evaluate(test, load_best_model=True)
