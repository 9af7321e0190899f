import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_invrl import hyper
from recbole_invrl.benchmark import child
from recbole_invrl.config import Config

REPO = Path(__file__).resolve().parents[1]
# A tiny InvRL schedule: every stage runs once.
TINY_INVRL = ["--epochs=1", "--pretrain_epochs=1", "--invrl_iterations=1", "--partition_epochs=1",
              "--partition_rounds=1", "--mask_epochs=1", "--neg_num=3"]


@pytest.fixture
def tiny(tiny_clusters):
    return tiny_clusters


def space(tmp_path, text, name="space.hyper"):
    path = tmp_path / name
    path.write_text(text)
    return path


def argv_for(data, params_file, *extra, model="InvRL"):
    return [f"--model={model}", "--dataset=tiny", f"--data_path={data}",
            f"--params_file={params_file}", "--output_file=out/result.txt", *extra]


class FakeObjective:
    """Stands in for the trial subprocess: scores from the params; ``fail`` picks calls that raise."""

    def __init__(self, fail=(), interrupt_at=None):
        self.fail, self.interrupt_at, self.calls = set(fail), interrupt_at, []

    def __call__(self, params, config_files):
        self.calls.append(dict(params))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if len(self.calls) in self.fail:
            raise RuntimeError(f"boom in call {len(self.calls)}")
        score = 0.1 * params.get("num_envs", 1)
        return {"model": "InvRL", "best_valid_score": score, "valid_score_bigger": True,
                "best_valid_result": {"ndcg@10": score},
                "test_result": {"recall@10": score / 2, "ndcg@10": score / 3}}


def read_table(tmp_path):
    with open(tmp_path / "out" / "result.csv") as handle:
        return list(csv.DictReader(handle))


def test_two_trial_search_on_tiny_data_writes_results(tiny, tmp_path, capsys):
    params_file = space(tmp_path, "# InvRL on tiny data\nnum_envs choice [1, 2]\n\n")
    assert hyper.main(argv_for(tiny, params_file, *TINY_INVRL)) == 0
    rows = read_table(tmp_path)
    assert [(r["trial"], r["status"], r["error"]) for r in rows] == [("1", "ok", ""), ("2", "ok", "")]
    assert sorted(r["num_envs"] for r in rows) == ["1", "2"]
    scores = [float(r["valid ndcg@10"]) for r in rows]
    best = scores.index(max(scores))  # ties: the first trial wins
    assert [r["best"] for r in rows] == ["best" if i == best else "" for i in range(2)]
    for row in rows:
        for metric in ("recall@10", "ndcg@10", "precision@10"):
            assert 0.0 <= float(row[f"test {metric}"]) <= 1.0
        assert float(row["seconds"]) > 0
        trial = json.loads((tmp_path / f"out/result.trials/results/trial00{row['trial']}.json")
                           .read_text())
        assert trial["best_valid_score"] == pytest.approx(float(row["valid ndcg@10"]))
    text = (tmp_path / "out" / "result.txt").read_text()
    assert text.count("Valid result:\n") == 2 and text.count("Test result:\n") == 2
    assert "num_envs:1\n" in text and "num_envs:2\n" in text and "Best trial " in text
    md = (tmp_path / "out" / "result.md").read_text()
    assert "| trial | best | status | num_envs | valid ndcg@10 |" in md and "**best**" in md
    assert md in capsys.readouterr().out


BAD_SPACES = [
    # (file text, line number, what the message says)
    ("num_envs choice [1, 5]\nalpha choice\n", 2, "expected NAME TYPE VALUES"),
    ("num_envs choise [1, 5]\n", 1, "unknown type 'choise' for num_envs (did you mean choice?)"),
    ("num_envs choice [1, 5\n", 1, "choice values of num_envs: expected a non-empty Python list"),
    ("num_envs choice []\n", 1, "choice values of num_envs: expected a non-empty Python list"),
    ("num_envs choice 5\n", 1, "choice values of num_envs: expected a non-empty Python list"),
    ("num_envs choice [1, 1]\n", 1, "choice value 1 of num_envs is listed twice"),
    ("x choice __import__('os').system('touch pwned')\n", 1, "choice values of x: expected"),
    ("alpha uniform 1\n", 1, "uniform values of alpha: expected LOW,HIGH"),
    ("alpha uniform 2,1\n", 1, "uniform values of alpha: expected LOW,HIGH"),
    ("num_envs quniform 1,30,0\n", 1, "quniform values of num_envs: expected LOW,HIGH,Q"),
    ("mask_lr loguniform a,b\n", 1, "loguniform values of mask_lr: expected LOW,HIGH"),
    ("num_envs choice [1]\nalpha choice [1.0]\nnum_envs choice [2]\n", 3,
     "num_envs is defined twice (first on line 1)"),
    ("# only a comment\n\n", None, "empty search space: no line NAME TYPE VALUES"),
]


@pytest.mark.parametrize("text, line, message", BAD_SPACES)
def test_a_bad_search_space_file_is_refused_before_any_trial(tiny, tmp_path, capsys, text, line,
                                                             message):
    params_file = space(tmp_path, text)
    fake = FakeObjective()
    assert hyper.main(argv_for(tiny, params_file), objective=fake) == hyper.EXIT_USAGE
    assert fake.calls == []
    where = f"{params_file}:{line}" if line else f"{params_file}"
    err = capsys.readouterr().err
    assert err.startswith(f"error: {where}: ") and message in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()


def test_a_missing_search_space_file_is_named(tiny, tmp_path, capsys):
    fake = FakeObjective()
    assert hyper.main(argv_for(tiny, tmp_path / "nope.hyper"), objective=fake) == 2
    assert fake.calls == []
    assert f"error: {tmp_path / 'nope.hyper'}: no such search-space file" in capsys.readouterr().err


@pytest.mark.parametrize("model, text, extra, message", [
    ("InvRL", "num_envs choice [1, 5]\nnum_env choice [1, 5]\n", [],
     "space.hyper:2: unknown parameter 'num_env': not a config key of InvRL on tiny; "
     "did you mean num_envs?"),
    ("UltraGCNMM", "gamma_i choice [0.0, 1.0]\nnum_envs choice [1, 5]\n", [],
     "space.hyper:2: unknown parameter 'num_envs': not a config key of UltraGCNMM on tiny"),
    ("InvRL", "num_envs choice [1, 5]\n", ["--num_envs=3"],
     "space.hyper:1: num_envs is searched here and also fixed by --num_envs=..."),
    ("InvRL", "dataset choice ['a', 'b']\n", [], "space.hyper:1: dataset cannot be searched"),
    ("InvRL", "num_envs choice [1, 5]\nalpha uniform 0.1,1\n", [],
     "space.hyper:2: alpha is uniform, but --algo=exhaustive searches a grid of choice "
     "parameters only"),
])
def test_parameter_errors_stop_the_search_before_any_trial(tiny, tmp_path, capsys, model, text,
                                                           extra, message):
    fake = FakeObjective()
    argv = argv_for(tiny, space(tmp_path, text), *extra, model=model)
    assert hyper.main(argv, objective=fake) == 2
    assert fake.calls == []
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_crashing_trial_is_recorded_and_the_next_one_still_runs(tiny, tmp_path, capsys):
    fake = FakeObjective(fail={1})
    argv = argv_for(tiny, space(tmp_path, "num_envs choice [1, 2, 3]\n"))
    assert hyper.main(argv, objective=fake) == 0
    assert len(fake.calls) == 3
    rows = read_table(tmp_path)
    assert rows[0]["status"] == "failed" and rows[0]["error"] == "RuntimeError: boom in call 1"
    assert rows[0]["valid ndcg@10"] == "" and rows[0]["test recall@10"] == ""
    assert [r["status"] for r in rows[1:]] == ["ok", "ok"]
    best = max(rows[1:], key=lambda r: float(r["valid ndcg@10"]))
    assert [r["trial"] for r in rows if r["best"] == "best"] == [best["trial"]]
    assert "Failed: RuntimeError: boom in call 1" in (tmp_path / "out/result.txt").read_text()
    assert "1 of 3 trials failed" in capsys.readouterr().err


def test_a_killed_trial_subprocess_is_recorded_and_the_search_goes_on(tiny, tmp_path, monkeypatch):
    def fake_child_command(spec):
        if spec.trial == 1:
            return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
        result = {"best_valid_score": 0.25, "best_valid_result": {"ndcg@10": 0.25},
                  "test_result": {"ndcg@10": 0.5}, "overrides": list(spec.overrides)}
        return [sys.executable, "-c", f"import pathlib; pathlib.Path({str(spec.result_path)!r})"
                                      f".write_text({json.dumps(result)!r})"]

    monkeypatch.setattr(child, "child_command", fake_child_command)
    argv = argv_for(tiny, space(tmp_path, "mask_lr choice [0.01, 0.001]\n"), "--epochs=1")
    assert hyper.main(argv) == 0
    rows = read_table(tmp_path)
    assert rows[0]["status"] == "failed"
    assert rows[0]["error"].startswith("killed by SIGKILL (out of memory?)")
    assert rows[1]["status"] == "ok" and rows[1]["best"] == "best"
    assert rows[1]["valid ndcg@10"] == "0.25" and rows[1]["test ndcg@10"] == "0.5"
    result = json.loads((tmp_path / "out/result.trials/results/trial002.json").read_text())
    assert result["overrides"][:2] == [f"--data_path={tiny}", "--epochs=1"]  # fixed ones first
    assert result["overrides"][2] == f"--mask_lr={rows[1]['mask_lr']}"


def test_when_every_trial_fails_it_says_so(tiny, tmp_path, capsys):
    fake = FakeObjective(fail={1, 2})
    argv = argv_for(tiny, space(tmp_path, "num_envs choice [1, 2]\n"))
    assert hyper.main(argv, objective=fake) == hyper.EXIT_ALL_FAILED
    err = capsys.readouterr().err
    assert "error: all 2 trials failed; no best parameters" in err and "Traceback" not in err
    assert [r["status"] for r in read_table(tmp_path)] == ["failed", "failed"]
    assert "No best trial: all 2 trials failed." in (tmp_path / "out/result.txt").read_text()


def test_an_interrupted_search_keeps_the_finished_trials(tiny, tmp_path):
    fake = FakeObjective(interrupt_at=2)
    argv = argv_for(tiny, space(tmp_path, "num_envs choice [1, 2, 3]\n"))
    assert hyper.main(argv, objective=fake) == hyper.EXIT_INTERRUPTED
    assert [r["trial"] for r in read_table(tmp_path)] == ["1"]


def test_max_evals_and_early_stop_end_the_search(tiny, tmp_path):
    params_file = space(tmp_path, "num_envs choice [1, 2, 3, 4, 5, 6]\n")
    capped = FakeObjective()
    assert hyper.main(argv_for(tiny, params_file, "--max_evals=2"), objective=capped) == 0
    assert len(capped.calls) == 2 and capped.calls[0] != capped.calls[1]

    class Flat(FakeObjective):  # the same score every time: no progress after the first
        def __call__(self, params, config_files):
            return {**super().__call__({}, config_files), "best_valid_score": 0.5}

    flat = Flat()
    assert hyper.main(argv_for(tiny, params_file, "--early_stop=2"), objective=flat) == 0
    assert len(flat.calls) == 3


def test_random_search_samples_within_bounds_and_quniform_gives_ints(tiny, tmp_path):
    fake = FakeObjective()
    text = ("num_envs quniform 2,8,2\nalpha uniform 0.1,1\nmask_lr loguniform -9.2,-4.6\n"
            "mask_type choice ['float', 'binary']\n")
    argv = argv_for(tiny, space(tmp_path, text), "--algo=random", "--max_evals=4")
    assert hyper.main(argv, objective=fake) == 0
    assert len(fake.calls) == 4
    for params in fake.calls:
        assert type(params["num_envs"]) is int and params["num_envs"] in (2, 4, 6, 8)
        assert 0.1 <= params["alpha"] <= 1 and np.exp(-9.2) <= params["mask_lr"] <= np.exp(-4.6)
        assert params["mask_type"] in ("float", "binary")


def test_the_paper_grid_file_matches_section_3_1_4_and_the_config_keys(tiny):
    params = {p.name: p for p in hyper.load_search_space(REPO / "hyper" / "invrl.hyper")}
    assert {name: list(p.values) for name, p in params.items()} == {
        "num_envs": [1, 5, 10, 20, 30], "alpha": [1, 0.5, 0.1], "mask_lambda": [1, 0.5, 0.1],
        "mask_lr": [0.01, 0.001, 0.0001], "gamma_c": [2, 1, 0.1, 0.01, 0],
        "gamma_i": [2, 1, 0.1, 0.01, 0], "final_proj_reg_weight": [1, 0.1, 0.01, 0.001, 0]}
    assert hyper.grid_size(list(params.values())) == 5 * 3 * 3 * 3 * 5 * 5 * 5
    smoke = hyper.load_search_space(REPO / "hyper" / "invrl-smoke.hyper")
    assert hyper.grid_size(smoke) == 2
    config = Config("InvRL", "tiny", config_dict={"data_path": str(tiny)})
    for space_params in (list(params.values()), smoke):
        hyper.check_param_names(space_params, list(config.final_config_dict), [], "f", "InvRL")


def test_cli_bad_space_exits_2_without_a_traceback(tiny, tmp_path):
    params_file = space(tmp_path, "num_envs choice [1, 5]\nmask_lr choice 0.1,,\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_hyper.py"), *argv_for(tiny, params_file)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert f"error: {params_file}:2: choice values of mask_lr" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_ray_is_refused_with_the_reason(tiny, tmp_path, capsys):
    fake = FakeObjective()
    argv = argv_for(tiny, space(tmp_path, "num_envs choice [1, 2]\n"), "--tool=Ray")
    assert hyper.main(argv, objective=fake) == 2 and fake.calls == []
    assert "only --tool=Hyperopt is supported; ray 2.6.3's tune.run needs pyarrow" in \
        capsys.readouterr().err
