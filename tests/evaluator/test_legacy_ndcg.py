from math import log2

import numpy as np
import pytest
import torch
from recbole.evaluator import Collector, Evaluator
from recbole.evaluator.collector import DataStruct
from recbole.evaluator.metrics import NDCG
from recbole.utils import EvaluatorType

from recbole_invrl.evaluator import LegacyNDCG, register_legacy_ndcg
from recbole_invrl.quick_start import run_recbole_invrl

TOPK = [1, 3, 5]
# hits in the top 5 (1 = relevant) and the number of relevant items of each user
RANKINGS = [
    ([0, 1, 0, 0, 1], 3),  # hits at ranks 2 and 5 of 3 relevant items
    ([1, 0, 0, 0, 0], 1),  # one relevant item, ranked first
    ([0, 0, 0, 0, 0], 4),  # no hit
    ([0, 0, 0, 0, 1], 10),  # one hit at rank 5 of 10 relevant items
]
D = {rank: 1 / log2(rank + 1) for rank in range(1, 6)}  # discount of each rank
# Standard NDCG: ideal DCG over min(relevant, K) items. Legacy: over the hits in the top K.
LEGACY = {
    1: (0 + 1 + 0 + 0) / 4,
    3: (D[2] / D[1] + 1 + 0 + 0) / 4,
    5: ((D[2] + D[5]) / (D[1] + D[2]) + 1 + 0 + D[5] / D[1]) / 4,
}
STANDARD = {
    1: (0 + 1 + 0 + 0) / 4,
    3: (D[2] / (D[1] + D[2] + D[3]) + 1 + 0 + 0) / 4,
    5: ((D[2] + D[5]) / (D[1] + D[2] + D[3]) + 1 + 0 + D[5] / sum(D.values())) / 4,
}


def _data_struct():
    """``rec.topk`` exactly as RecBole's Collector lays it out: top-K hit flags, then |R(u)|."""
    data = DataStruct()
    data.set("rec.topk", torch.tensor([hits + [n] for hits, n in RANKINGS], dtype=torch.int))
    return data


def test_hand_computed_example_where_legacy_and_standard_differ(monkeypatch):
    monkeypatch.setattr(np, "float", float, raising=False)  # RecBole's NDCG uses np.float
    config = {"topk": TOPK, "metric_decimal_place": 6}
    legacy = LegacyNDCG(config).calculate_metric(_data_struct())
    standard = NDCG(config).calculate_metric(_data_struct())
    assert set(legacy) == {"legacyndcg@1", "legacyndcg@3", "legacyndcg@5"}
    for k in TOPK:
        assert legacy[f"legacyndcg@{k}"] == pytest.approx(LEGACY[k], abs=1e-6)
        assert standard[f"ndcg@{k}"] == pytest.approx(STANDARD[k], abs=1e-6)
    assert legacy["legacyndcg@3"] > standard["ndcg@3"] and legacy["legacyndcg@5"] > standard["ndcg@5"]


def test_per_user_values_and_the_release_single_hit():
    pos_index = np.array([hits for hits, _ in RANKINGS], dtype=bool)
    pos_len = np.array([n for _, n in RANKINGS])
    per_user = LegacyNDCG({"topk": [5], "metric_decimal_place": 4}).metric_info(pos_index, pos_len)
    # one hit at rank 2: DCG D2 over the ideal DCG of one hit, D1 = 1; then two hits
    np.testing.assert_allclose(per_user[0], [0, D[2], D[2], D[2], (D[2] + D[5]) / (D[1] + D[2])])
    np.testing.assert_allclose(per_user[1], np.ones(5))
    np.testing.assert_allclose(per_user[2], np.zeros(5))  # zero hits score 0, not NaN
    np.testing.assert_allclose(per_user[3], [0, 0, 0, 0, D[5]])
    # the release's evaluation: a single hit at rank 10 scores about 0.29 (1 / log2(11)), whatever |R(u)| is
    one_hit = np.zeros((1, 10), dtype=bool)
    one_hit[0, 9] = True
    value = LegacyNDCG({"topk": [10], "metric_decimal_place": 4}).metric_info(one_hit, np.array([50]))
    assert value[0, 9] == pytest.approx(0.2891, abs=1e-4)


def test_registration_reaches_config_register_and_evaluator(build, atomic_dataset, clustered,
                                                            tmp_path):
    import recbole.evaluator.metrics
    import recbole.evaluator.register as register

    register_legacy_ndcg()  # idempotent: a second call changes nothing
    sizes = (len(register.metrics_dict), len(register.metric_types),
             len(register.metric_information), len(register.smaller_metrics))
    register_legacy_ndcg()
    assert sizes == (len(register.metrics_dict), len(register.metric_types),
                     len(register.metric_information), len(register.smaller_metrics))
    assert register.metrics_dict["legacyndcg"] is LegacyNDCG
    assert register.metric_information["legacyndcg"] == ["rec.topk"]
    assert "legacyndcg" not in register.smaller_metrics
    assert recbole.evaluator.metrics.LegacyNDCG is LegacyNDCG

    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=10, n_items=30)
    atomic_dataset(tmp_path, "tiny", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": np.eye(2)[item_cluster]})
    config, *_ = build("UltraGCNMM", "tiny", metrics=["Recall", "NDCG", "LegacyNDCG"],
                       valid_metric="LegacyNDCG@10")
    assert config["eval_type"] == EvaluatorType.RANKING
    assert config["valid_metric_bigger"] is True
    assert isinstance(Evaluator(config).metric_class["legacyndcg"], LegacyNDCG)
    assert Collector(config).register.need("rec.topk")


def test_end_to_end_legacy_is_reported_and_not_below_ndcg(tmp_path, atomic_dataset, clustered):
    train_pairs, valid_pairs, test_pairs, item_cluster = clustered(n_users=20, n_items=30)
    atomic_dataset(tmp_path, "clusters", train_pairs, valid_pairs, test_pairs,
                   dense={"v_feat": np.eye(2)[item_cluster]})
    result = run_recbole_invrl("UltraGCNMM", "clusters", config_dict={
        "data_path": str(tmp_path), "epochs": 3, "neg_num": 5, "show_progress": False,
        "state": "WARNING", "metrics": ["NDCG", "LegacyNDCG"], "topk": [10],
        "valid_metric": "LegacyNDCG@10"})
    for split in ("best_valid_result", "test_result"):
        assert set(result[split]) == {"ndcg@10", "legacyndcg@10"}
        assert result[split]["legacyndcg@10"] >= result[split]["ndcg@10"] > 0
    assert result["best_valid_score"] == result["best_valid_result"]["legacyndcg@10"]
    assert result["valid_score_bigger"] is True


def test_registration_puts_the_class_where_recbole_looks_it_up():
    import recbole.evaluator
    import recbole.evaluator.metrics
    import recbole.evaluator.register as register

    register_legacy_ndcg()
    register_legacy_ndcg()  # twice: no duplicate entries
    assert recbole.evaluator.LegacyNDCG is LegacyNDCG and recbole.evaluator.metrics.LegacyNDCG is LegacyNDCG
    assert register.metrics_dict["legacyndcg"] is LegacyNDCG
    assert register.metric_types["legacyndcg"] == EvaluatorType.RANKING
    assert register.metric_information["legacyndcg"] == ["rec.topk"]
    assert "legacyndcg" not in register.smaller_metrics and None not in register.smaller_metrics
