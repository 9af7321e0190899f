import json
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_invrl.quick_start import run_recbole_invrl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clusters(tmp_path, clusters_dataset):
    clusters_dataset(tmp_path, n_users=20, n_items=30)
    return tmp_path


@pytest.mark.parametrize("model", ["UltraGCN-MM", "BPR", "LightGCN"])
def test_plugin_and_recbole_models_run_on_the_same_data(clusters, model):
    result = run_recbole_invrl(model, "clusters", config_dict={
        "data_path": str(clusters), "epochs": 2, "show_progress": False, "neg_num": 5})
    assert result["dataset"] == "clusters"
    for split in ("best_valid_result", "test_result"):
        assert set(result[split]) == {"recall@10", "ndcg@10", "precision@10"}
        assert all(0.0 <= v <= 1.0 for v in result[split].values())
    assert Path(result["saved_model_file"]).is_file()


def test_run_script_writes_result_json(clusters, tmp_path):
    out = tmp_path / "res" / "result.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_invrl.py"), "--model=UltraGCNMM",
         "--dataset=clusters", f"--data_path={clusters}", "--epochs=1", "--neg_num=3",
         "--show_progress=False", f"--result_json={out}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["model"] == "UltraGCNMM" and result["dataset"] == "clusters"
    assert "ndcg@10" in result["test_result"] and result["wall_seconds"] > 0


def test_missing_dataset_is_a_message_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_invrl.py"), "--model=UltraGCNMM",
         "--dataset=nowhere", f"--data_path={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "dataset 'nowhere': missing" in proc.stderr and "nowhere.inter" in proc.stderr
    assert "python -m recbole_invrl.data.convert" in proc.stderr


def test_pickled_dataset_caches_are_refused(clusters):
    with pytest.raises(ValueError, match="save_dataset: not supported"):
        run_recbole_invrl("UltraGCNMM", "clusters", config_dict={
            "data_path": str(clusters), "save_dataset": True})


def test_missing_kwai_names_the_raw_files_and_the_convert_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_invrl.py"), "--model=InvRL", "--dataset=kwai",
         f"--data_path={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "v_feat.npy" in proc.stderr and "val_full.npy" in proc.stderr
    assert "python -m recbole_invrl.data.convert grcn --src RAW_DIR --name kwai" in proc.stderr
    assert not (tmp_path / "kwai").exists()  # nothing substituted or half-built


@pytest.mark.parametrize("signum, code, name", [(15, 143, "SIGTERM"), (2, 130, "SIGINT")])
def test_a_signal_during_pretraining_ends_in_one_line_and_leaves_no_checkpoint(clusters, tmp_path, signum, code, name):
    import time

    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run_recbole_invrl.py"), "--model=InvRL", "--dataset=clusters",
         f"--data_path={clusters}", "--pretrain_epochs=100000", "--stopping_step=100000", "--show_progress=False"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list((tmp_path / "saved").glob("*-pretrain.pth")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list((tmp_path / "saved").glob("*-pretrain.pth")), "pretraining never saved its best epoch"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({name}): the stage in progress left no files")
    assert "Traceback" not in err
    assert not list((tmp_path / "saved").glob("*-pretrain.pth")) and not list((tmp_path / "saved").glob("*.tmp*"))


TINY_INVRL = {"pretrain_epochs": 2, "epochs": 2, "invrl_iterations": 1, "num_envs": 2, "partition_rounds": 1,
              "partition_epochs": 1, "mask_epochs": 1, "final_proj_reg_weight": 0.1, "final_mask_forms": "soft",
              "show_progress": False}


def test_a_resumed_run_lists_only_files_that_exist(clusters):
    settings = {**TINY_INVRL, "data_path": str(clusters)}
    run_recbole_invrl("InvRL", "clusters", config_dict=settings)
    result = run_recbole_invrl("InvRL", "clusters", config_dict={**settings, "resume": True})
    outputs = result["outputs"]
    assert outputs and all(Path(path).exists() for path in outputs.values()), outputs
    assert "pretrain" not in outputs  # the resumed run pretrained nothing


def test_a_truncated_resume_state_is_one_line_that_says_to_delete_it(clusters, tmp_path):
    run_recbole_invrl("InvRL", "clusters", config_dict={**TINY_INVRL, "data_path": str(clusters)})
    (state,) = (tmp_path / "saved").glob("*.state.pth")
    state.write_bytes(state.read_bytes()[:100])
    args = [f"--{k}={v}" for k, v in TINY_INVRL.items()]
    proc = subprocess.run([sys.executable, str(REPO / "run_recbole_invrl.py"), "--model=InvRL", "--dataset=clusters",
                           f"--data_path={clusters}", "--resume=True", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    path = str(Path("saved") / state.name)
    assert last.startswith(f"error: resume: cannot load checkpoint {path} with weights_only=True"), last
    assert last.endswith(f"delete {path} to start from the beginning, or run without resume=True"), last


def test_more_environments_than_training_interactions_is_one_line(clusters, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_script", REPO / "run_recbole_invrl.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = [f"--{k}={v}" for k, v in {**TINY_INVRL, "num_envs": 1000}.items()]
    assert script.main(["--model=InvRL", "--dataset=clusters", f"--data_path={clusters}", *args]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: num_envs: expected at most the 160 training interactions of clusters, got 1000"
