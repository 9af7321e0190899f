import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_invrl.benchmark.experiments import (
    Experiment, mask_ablation, mask_values, moved_share, ndcg_at_k, num_envs,
)

REPO = Path(__file__).resolve().parents[2]
TINY = dict(pretrain_epochs=1, epochs=1, invrl_iterations=2, partition_epochs=1,
            partition_rounds=2, moved_threshold=-1.0, mask_epochs=1, num_envs=2, neg_num=3,
            show_progress=False, state="WARNING")


@pytest.fixture
def experiment(tmp_path, atomic_dataset, clustered):
    train, valid, test, item_cluster = clustered(n_users=16, n_items=24)
    features = np.c_[np.eye(2)[item_cluster], np.random.default_rng(0).random((24, 2))]
    atomic_dataset(tmp_path, "tiny", train, valid, test, dense={"v_feat": features, "a_feat": features[:, :3]})
    return Experiment("tiny", tmp_path / "results", {"data_path": str(tmp_path), **TINY})


@pytest.fixture(scope="module")
def bed_folder(tmp_path_factory):
    from recbole_invrl.data.synthetic import generate

    root = tmp_path_factory.mktemp("bed")
    generate("tiktok", 0.005, root, layout="atomic", seed=0, name="bed")
    return root


@pytest.fixture
def bed(bed_folder, tmp_path):
    """The tiny spurious-feature test bed, where no variant saturates the metrics (on the
    toy clusters every one reaches NDCG 1.0)."""
    return Experiment("bed", tmp_path / "results", {"data_path": str(bed_folder), **TINY, "epochs": 3,
                                                    "mask_epochs": 2, "mask_lr": 0.05})


def _check(paths, columns, rows):
    csv, png = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(csv)
    assert list(table.columns) == columns and len(table) == rows
    return table


def test_table3_mask_ablation(bed):
    table = _check(mask_ablation(bed), ["variant", "precision@10", "recall@10", "ndcg@10"], 4)
    assert list(table["variant"]) == ["B+L0", "B+L2", "F+L0", "F+L2"]
    # each row is its own run: a float and a binary mask give the final model other content
    assert table.drop(columns="variant").drop_duplicates().shape[0] > 1


def test_fig3_ndcg_at_k(experiment):
    table = _check(ndcg_at_k(experiment, max_k=5), ["K", "InvRL", "UltraGCNMM"], 5)
    assert list(table["K"]) == [1, 2, 3, 4, 5] and table[["InvRL", "UltraGCNMM"]].ge(0).all().all()


def test_fig4_and_fig5_from_one_run_record(experiment):
    record_path = experiment.run("InvRL")["record_path"]
    mask = _check(mask_values(experiment, record_path), ["field", "dim", "mask"], 4 + 3)
    assert list(mask["field"]) == ["v_feat"] * 4 + ["a_feat"] * 3
    record = json.loads(Path(record_path).read_text())
    np.testing.assert_allclose(mask["mask"], record["mask"][-1]["mask"])
    moved = _check(moved_share(experiment, record_path),
                   ["partition_round", "iteration", "round", "moved_share"], 4)
    assert list(moved["iteration"]) == [1, 1, 2, 2]


def test_fig4_marks_the_planted_roles_of_the_test_bed(experiment, tmp_path):
    record_path = experiment.run("InvRL")["record_path"]
    modalities = {"v_feat": {"invariant_dims": [0, 1], "spurious_dims": [2, 3]},
                  "a_feat": {"invariant_dims": [2], "spurious_dims": [0]}}
    (tmp_path / "tiny" / "truth.json").write_text(json.dumps({"modalities": modalities}))
    table = _check(mask_values(experiment, record_path), ["field", "dim", "mask", "role"], 4 + 3)
    assert list(table["role"].fillna("")) == ["invariant"] * 2 + ["spurious"] * 2 + ["spurious", "", "invariant"]


def test_fig6_num_envs(bed):
    table = _check(num_envs(bed, grid=(1, 3)), ["num_envs", "precision@10", "recall@10", "ndcg@10"], 2)
    assert list(table["num_envs"]) == [1, 3]
    assert not table.iloc[0, 1:].equals(table.iloc[1, 1:])  # |E| changes the environments, the mask, the scores


def test_cli_rejects_an_unknown_experiment_or_dataset(tmp_path):
    for args, message in ((["--experiment=fig9", "--dataset=ml-100k-mm"], "unknown 'fig9'"),
                          (["--experiment=fig3", "--dataset=kwai", f"--data_path={tmp_path}"], "dataset 'kwai': missing")):
        proc = subprocess.run([sys.executable, str(REPO / "run_experiment.py"), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()
