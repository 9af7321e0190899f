import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from recbole_invrl.benchmark.diagnose import diagnose
from recbole_invrl.benchmark.experiments import Experiment
from recbole_invrl.data.synthetic import generate
from recbole_invrl.quick_start import run_recbole_invrl

REPO = Path(__file__).resolve().parents[2]
SCHEDULE = dict(pretrain_epochs=3, epochs=2, stopping_step=5, invrl_iterations=2, num_envs=2, partition_epochs=1,
                partition_rounds=2, moved_threshold=-1.0, mask_epochs=2, mask_lr=0.01, neg_num=5,
                show_progress=False, state="WARNING")


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate("tiktok", 0.005, root, layout="atomic", seed=0, name="bed")
    return root


def _my_purity(found, planted):
    total = 0
    for env in set(found.tolist()):
        total += np.bincount(planted[found == env]).max()
    return total / len(found)


def _pair_ari(a, b) -> float:
    """Adjusted Rand index from its definition: pairs together in both, in a, in b."""
    a, b = np.asarray(a), np.asarray(b)
    same_a = a[:, None] == a[None, :]
    same_b = b[:, None] == b[None, :]
    upper = np.triu(np.ones_like(same_a), k=1)
    both, in_a, in_b = (same_a & same_b & upper).sum(), (same_a & upper).sum(), (same_b & upper).sum()
    pairs = len(a) * (len(a) - 1) / 2
    expected = in_a * in_b / pairs
    return float((both - expected) / ((in_a + in_b) / 2 - expected))


def _pair_auc(labels, values) -> float:
    """ROC-AUC as the share of (positive, negative) pairs ordered right, ties counting half."""
    labels, values = np.asarray(labels), np.asarray(values)
    pos, neg = values[labels == 1], values[labels == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def _roles(folder: Path, fields) -> np.ndarray:
    modalities = json.loads((folder / "truth.json").read_text())["modalities"]
    roles = []
    for field, width in fields:
        part = np.full(width, -1)
        part[modalities.get(field, {}).get("invariant_dims", [])] = 1
        part[modalities.get(field, {}).get("spurious_dims", [])] = 0
        roles.append(part)
    return np.concatenate(roles)


def test_diagnose_reports_figures_computed_independently(bed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = Experiment("bed", tmp_path / "out", {"data_path": str(bed), **SCHEDULE})
    json_path, csv_path, png_path = diagnose(exp)
    report = json.loads(json_path.read_text())
    record = json.loads(Path(report["record_path"]).read_text())
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the last partition, from the saved state, scored here
    planted = np.load(bed / "bed" / "train_env.npy")
    envs = _final_envs(tmp_path)
    last = report["partition"][-1]
    assert last["ari"] == pytest.approx(adjusted_rand_score(planted, envs))
    assert last["ari"] == pytest.approx(_pair_ari(planted, envs))
    assert last["purity"] == pytest.approx(_my_purity(envs, planted))
    assert len(report["partition"]) == 4

    # the final mask's ROC-AUC and gate ratio
    mask = np.array(record["mask"][-1]["mask"])
    roles = _roles(bed / "bed", record["mask_fields"])
    known = roles >= 0
    assert report["mask"][-1]["auc"] == pytest.approx(roc_auc_score(roles[known], mask[known]))
    assert report["mask"][-1]["auc"] == pytest.approx(_pair_auc(roles[known], mask[known]))
    assert report["mask"][-1]["gate_ratio"] == pytest.approx(mask[roles == 1].mean() / mask[roles == 0].mean())

    # the oracle mask's final model, trained here
    oracle = (roles != 0).astype(np.float32)
    np.save(tmp_path / "oracle.npy", oracle)
    result = run_recbole_invrl("InvRL", "bed", config_dict={"data_path": str(bed), **SCHEDULE,
                                                            "fixed_mask": str(tmp_path / "oracle.npy")})
    assert report["final_ndcg@10"]["oracle"] == pytest.approx(result["test_result"]["ndcg@10"])
    assert set(report["final_ndcg@10"]) == {"learned", "oracle", "full", "shuffled", "single_env"}
    assert report["final_ndcg@10"]["learned"] == pytest.approx(report["test_result"]["ndcg@10"])

    # M4 on three sources of environments; one environment has no penalty
    sources = report["m4_environments"]
    assert set(sources) == {"planted", "random", "single"}
    assert sources["single"]["penalty_share"] < 1e-6 < sources["planted"]["penalty_share"]  # 0 up to rounding
    assert sources["planted"]["num_envs"] == 2
    assert all(0.0 <= s["auc"] <= 1.0 for s in sources.values())

    # the penalty's share per mask epoch, from the record
    shares = [e["penalty_share"] for m in record["mask"] for e in m["epochs"]]
    assert [e["penalty_share"] for e in report["mask_epochs"]] == shares and len(shares) == 4

    table = pd.read_csv(csv_path)
    row = table[(table.section == "final_ndcg@10") & (table.step == "oracle")]
    assert float(row.value.iloc[0]) == pytest.approx(report["final_ndcg@10"]["oracle"])
    assert set(table.section) == {"partition", "mask", "mask_epoch", "m4_environments", "final_ndcg@10",
                                  "planted_separability"}
    separability = report["planted_separability"]
    assert 0.5 <= separability["best_threshold_purity"] <= 1 and 0 <= separability["auc"] <= 1


def _final_envs(folder: Path) -> np.ndarray:
    (state,) = list(Path(folder, "saved").glob("InvRL-bed-seed*.state.pth"))
    return torch.load(state, weights_only=True)["envs"].numpy()


def test_without_a_truth_it_reports_what_needs_none_and_takes_one_from_the_command_line(bed, tmp_path):
    bare = tmp_path / "data"
    shutil.copytree(bed / "bed", bare / "bed", ignore=shutil.ignore_patterns("truth.json", "train_env.npy", ".cache"))
    exp = Experiment("bed", tmp_path / "bare-out", {"data_path": str(bare), **SCHEDULE})
    report = json.loads(diagnose(exp)[0].read_text())
    assert report["truth_dir"] is None
    assert "ari" not in report["partition"][0] and "auc" not in report["mask"][0]
    assert set(report["m4_environments"]) == {"random", "single"}
    assert set(report["final_ndcg@10"]) == {"learned", "full", "shuffled", "single_env"}
    assert report["planted_separability"] == {}
    assert all("env_sizes" in p for p in report["partition"])

    overrides = [f"--{k}={v}" for k, v in SCHEDULE.items()]
    proc = subprocess.run([sys.executable, str(REPO / "run_experiment.py"), "--experiment=diagnose", "--dataset=bed",
                           f"--data_path={bare}", f"--truth={bed / 'bed'}", f"--out={tmp_path / 'cli'}", *overrides],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "cli" / "diagnose.json").read_text())
    assert report["truth_dir"] == str(bed / "bed")
    assert "ari" in report["partition"][-1] and "planted" in report["m4_environments"]


def test_diagnose_over_a_graph_backbone_takes_the_forward_path(bed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = Experiment("bed", tmp_path / "out", {"data_path": str(bed), **SCHEDULE, "invrl_backbone": "MMGCN",
                                                "embedding_size": 8, "latent_size": 16})
    report = json.loads(diagnose(exp)[0].read_text())
    sources = report["m4_environments"]
    assert set(sources) == {"planted", "random", "single"}
    assert sources["single"]["penalty_share"] < 1e-6 < sources["planted"]["penalty_share"]
    assert report["planted_separability"] == {}  # the graph model's score has no spurious part to read
    assert set(report["final_ndcg@10"]) == {"learned", "oracle", "full", "shuffled", "single_env"}
    assert "ari" in report["partition"][-1] and "auc" in report["mask"][-1]


def test_recovery_scores_every_seed_at_two_numbers_of_environments(bed, tmp_path, monkeypatch):
    from recbole_invrl.benchmark.experiments import recovery

    monkeypatch.chdir(tmp_path)
    exp = Experiment("bed", tmp_path / "out", {"data_path": str(bed), **SCHEDULE, "num_envs": 3, "invrl_iterations": 1})
    csv, png = recovery(exp, seeds=(2020, 2021))
    table = pd.read_csv(csv)
    assert list(table.columns) == ["num_envs", "seed", "ari", "purity", "mask_auc", "gate_ratio", "penalty_share",
                                   "ndcg@10"]
    assert table[["num_envs", "seed"]].values.tolist() == [[3, 2020], [3, 2021], [2, 2020], [2, 2021]]
    assert table["purity"].between(0.5, 1).all() and table["mask_auc"].between(0, 1).all()
    assert table.groupby("num_envs")["ari"].mean().nunique() == 2  # |E| changes the partition
    planted = np.load(bed / "bed" / "train_env.npy")
    assert table["purity"].min() >= np.bincount(planted).max() / len(planted) - 1e-9  # never below the trivial
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bare = tmp_path / "bare"
    shutil.copytree(bed / "bed", bare / "bed", ignore=shutil.ignore_patterns("truth.json", "train_env.npy", ".cache"))
    with pytest.raises(ValueError, match="recovery: no planted truth for bed"):
        recovery(Experiment("bed", tmp_path / "bare-out", {"data_path": str(bare), **SCHEDULE}), seeds=(2020,))


def test_planted_separability_scores_environment_0_as_the_positive_class(tmp_path, atomic_dataset, build):
    """The pretrained spurious score <p_u^(c), W (s * c_i)> is c_i's third dim (the only
    spurious dim W reads): environment 0 holds the interactions with the highest values.
    Reference: the ROC-AUC by counting pairs, and the purity of the best cut, by hand."""
    from recbole_invrl.benchmark.diagnose import _separability
    from recbole_invrl.invariance import FrozenBackbone, TrainingInteractions
    from recbole_invrl.invariance.truth import PlantedTruth
    from recbole_invrl.model.general_recommender import UltraGCNMM

    n_items = 14  # items 13 and 14 are never clicked
    spurious = np.linspace(0.1, 2.0, n_items)  # item k's spurious value rises with k
    features = np.c_[np.ones(n_items), np.ones(n_items), spurious, np.zeros(n_items)]
    train = [(u, i) for u in range(1, 5) for i in range(3, 13)]
    atomic_dataset(tmp_path, "sep", train, [(u, 1) for u in range(1, 5)], [(u, 2) for u in range(1, 5)],
                   dense={"v_feat": features})
    config, data, train_data, *_ = build("UltraGCNMM", "sep", embedding_size=2, content_size=2, gamma_i=0.0)
    model = UltraGCNMM(config, train_data._dataset)
    with torch.no_grad():
        model.user_embedding.weight.zero_()
        model.user_embedding.weight[:, 2] = 1.0  # p^(c) = e_1
        model.projection.weight.zero_()
        model.projection.weight[0, 2] = 1.0  # reads the spurious dim 2 ...
        model.projection.weight[0, 0] = 5.0  # ... and an invariant one, which s leaves out
    interactions = TrainingInteractions.from_dataset(train_data._dataset, torch.device("cpu"))
    item = data.id2token("item_id", interactions.items.numpy()).astype(int)
    # environment 0: items 8-12 (high spurious value), except item 8 of user 1; item 3 of user 2 too
    user = data.id2token("user_id", interactions.users.numpy()).astype(int)
    envs = np.where(item >= 8, 0, 1)
    envs[(user == 1) & (item == 8)] = 1
    envs[(user == 2) & (item == 3)] = 0
    truth = PlantedTruth(roles=np.array([1, 1, 0, 0]), envs=envs, folder=tmp_path)
    scores = spurious[item - 1]  # the value before normalisation orders the rows the same way
    positives, negatives = scores[envs == 0], scores[envs == 1]
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    result = _separability(FrozenBackbone(model), interactions, truth)
    assert result["auc"] == pytest.approx(np.mean(pairs))
    assert 0.85 < result["auc"] < 0.99  # mostly, not perfectly, separable: the sign shows
    best_cut = max(np.mean((scores >= t) == (envs == 0)) for t in scores)
    assert result["best_threshold_purity"] == pytest.approx(best_cut, abs=1e-9)
