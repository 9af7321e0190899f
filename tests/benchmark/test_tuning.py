import json
import math
from pathlib import Path

import pytest

from recbole_invrl.benchmark import runner
from recbole_invrl.benchmark.tuning import HYPER_DIR, entry_trials, trial_points
from recbole_invrl.search_space import SearchParam


@pytest.fixture
def tiny(tiny_clusters):
    return tiny_clusters


def test_a_small_grid_is_run_whole_and_a_large_space_is_sampled_without_repeats():
    grid = [SearchParam("a", "choice", (1, 2)), SearchParam("b", "choice", ("x", "y", "z"))]
    assert trial_points(grid, 6, seed=0) == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    sampled = trial_points(grid, 4, seed=0)
    assert len(sampled) == 4 and len({tuple(p.items()) for p in sampled}) == 4
    assert sampled == trial_points(grid, 4, seed=0) and all(p in trial_points(grid, 6, 0) for p in sampled)
    mixed = [SearchParam("lr", "loguniform", (math.log(1e-4), math.log(1e-2))),
             SearchParam("k", "quniform", (10, 50, 10)), SearchParam("w", "uniform", (0.0, 1.0))]
    points = trial_points(mixed, 5, seed=3)
    assert len(points) == 5
    for point in points:
        assert 1e-4 <= point["lr"] <= 1e-2 and point["k"] in (10, 20, 30, 40, 50) and 0 <= point["w"] <= 1
    assert trial_points([], 5, seed=0) == []


def test_trials_keep_the_entry_s_own_settings(tmp_path):
    (tmp_path / "InvRL.hyper").write_text("num_envs choice [2,4]\nalpha choice [0.5]\n")
    assert entry_trials("InvRL", 9, 0, tmp_path) == ["InvRL@num_envs=2@alpha=0.5", "InvRL@num_envs=4@alpha=0.5"]
    assert entry_trials("InvRL@num_envs=8", 9, 0, tmp_path) == ["InvRL@num_envs=8@alpha=0.5"]
    assert entry_trials("Pop", 9, 0, tmp_path) == ["Pop"]  # no search space: run untuned


def test_the_shared_keys_of_invrl_and_its_backbone_get_the_same_grid():
    from recbole_invrl.search_space import load_search_space

    backbone = {p.name: p.values for p in load_search_space(HYPER_DIR / "UltraGCNMM.hyper")}
    invrl = {p.name: p.values for p in load_search_space(HYPER_DIR / "InvRL.hyper")}
    assert backbone["proj_reg_weight"] == invrl["final_proj_reg_weight"]
    assert backbone["learning_rate"] == invrl["learning_rate"]


class ScoredRuns:
    """A fake run whose validation score favours one learning rate and whose test score
    favours another (``test_of`` maps the learning rate to the test score)."""

    def __init__(self, test_of):
        self.test_of, self.calls = test_of, []

    def __call__(self, spec, timeout):
        self.calls.append((spec.model, spec.seed))
        settings = dict(arg[2:].split("=") for arg in spec.all_overrides if arg.startswith("--"))
        lr = float(settings.get("learning_rate", 0.001))
        valid = {0.0005: 0.2, 0.001: 0.1, 0.005: 0.3}[lr] + (0.01 if spec.model.startswith("InvRL") else 0.0)
        test = self.test_of(lr)
        return {"status": "ok", "error": None, "wall_seconds": 1.0, "best_valid_score": valid,
                "test_result": {"precision@10": test, "recall@10": test, "ndcg@10": test}}


@pytest.mark.parametrize("test_of", [lambda lr: lr, lambda lr: 1.0 - 100 * lr])
def test_tuning_chooses_on_validation_and_a_test_score_never_moves_a_choice(tiny, tmp_path, test_of):
    runs = ScoredRuns(test_of)
    argv = ["--dataset=tiny", f"--data_path={tiny}", "--models=UltraGCNMM,InvRL", "--seeds=1,2",
            "--out=out", "--tune=9", "--epochs=1"]
    assert runner.main(argv, run_fn=runs) == 0
    trials = [model for model, seed in runs.calls if seed == 1]
    assert len(trials) == 18  # nine trials each, on the first seed
    invrl_trials = [t for t in trials if t.startswith("InvRL")]  # nine of its 27 points
    chosen = {"UltraGCNMM": "UltraGCNMM@proj_reg_weight=0.01@learning_rate=0.005",  # its whole grid ran
              "InvRL": next(t for t in invrl_trials if "learning_rate=0.005" in t)}  # first of the best
    assert [call for call in runs.calls if call[1] == 2] == [(chosen["UltraGCNMM"], 2), (chosen["InvRL"], 2)]
    rows = [json.loads(line) for line in (tmp_path / "out/runs.jsonl").read_text().splitlines()]
    assert {r["tuning_of"] for r in rows} == {"UltraGCNMM", "InvRL"}
    table = (tmp_path / "out/table.md").read_text()
    assert "tuned on validation (9 trials)" in table
    assert table.count("tuned on validation: best of 9 trials") == 2
    assert "| UltraGCN-MM (proj_reg_weight=0.01, learning_rate=0.005) |" in table
    assert "%Impv. of InvRL over UltraGCN-MM" in table  # the tuned rows compared


def test_a_search_space_key_the_model_lacks_is_refused_before_any_run(tiny, tmp_path, monkeypatch):
    from recbole_invrl.benchmark import tuning

    (tmp_path / "hyper").mkdir()
    (tmp_path / "hyper" / "Pop.hyper").write_text("no_such_key choice [1,2]\n")
    monkeypatch.setattr(tuning, "HYPER_DIR", tmp_path / "hyper")
    runs = ScoredRuns(lambda lr: lr)
    argv = ["--dataset=tiny", f"--data_path={tiny}", "--models=Pop", "--seeds=1", "--out=out", "--tune=2"]
    assert runner.main(argv, run_fn=runs) == 2 and runs.calls == []
