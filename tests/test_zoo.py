"""RecBole's graph models run through the plugin's command line on the installed stack
(their adjacency code is what newer scipy versions broke)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    clusters_dataset(tmp_path, n_users=16, n_items=24, per_user=10)
    return tmp_path


# DGCF samples max(users, items) / batches of both for its correlation loss: more batches than 1
@pytest.mark.parametrize("model, extra", [("LightGCN", []), ("NGCF", []), ("SGL", []),
                                          ("DGCF", ["--train_batch_size=32"])])
def test_recbole_graph_model_trains_and_evaluates_through_the_cli(clusters, tmp_path, model, extra):
    out = tmp_path / f"{model}.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_invrl.py"), f"--model={model}", "--dataset=clusters",
         f"--data_path={clusters}", "--epochs=1", "--use_gpu=False", "--show_progress=False",
         f"--result_json={out}", *extra],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["model"] == model
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
