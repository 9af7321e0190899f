import json
from pathlib import Path

import numpy as np
import pytest

from recbole_invrl.benchmark.fair import BACKBONE_GRID, FairComparison
from recbole_invrl.benchmark.tuning import choose_on_validation


def test_the_choice_follows_validation_where_test_disagrees():
    trials = [{"best_valid_score": 0.30, "test_result": {"ndcg@10": 0.10}, "name": "a"},
              {"best_valid_score": 0.20, "test_result": {"ndcg@10": 0.90}, "name": "b"},
              {"best_valid_score": 0.30, "test_result": {"ndcg@10": 0.50}, "name": "c"}]
    assert choose_on_validation(trials)["name"] == "a"  # first of equals, whatever the test says
    assert choose_on_validation(trials, bigger=False)["name"] == "b"
    with pytest.raises(ValueError):
        choose_on_validation([])


class FakeExperiment:
    """Scores as functions of the settings; the test scores run against the validation ones."""

    def __init__(self, out: Path, test_of, invrl_final_l2=0.1):
        self.dataset, self.out, self.data_folder = "fake", out, None
        self.test_of, self.calls, self.invrl_final_l2 = test_of, [], invrl_final_l2

    def run_config(self, model, **overrides):
        return {"final_proj_reg_weight": self.invrl_final_l2}

    def run(self, model, **overrides):
        self.calls.append((model, overrides))
        reg = overrides.get("proj_reg_weight", 0.0)
        valid = {0.01: 0.10, 0.1: 0.30, 1.0: 0.20}.get(reg, 0.25)
        result = {"best_valid_score": valid, "test_result": {"ndcg@10": self.test_of(reg, overrides["seed"])}}
        if model == "InvRL":
            mask_path, record_path = self.out / "m.npy", self.out / "r.json"
            np.save(mask_path, np.linspace(0, 1, 6).astype(np.float32))
            record_path.write_text(json.dumps({"final_form": "cut", "partition": [], "mask_fields": [["v", 6]]}))
            result.update(mask_path=str(mask_path), record_path=str(record_path))
        return result


@pytest.mark.parametrize("test_of", [lambda reg, seed: reg, lambda reg, seed: 1.0 - reg])
def test_the_backbone_setting_is_chosen_on_validation_and_test_scores_cannot_move_it(tmp_path, test_of):
    exp = FakeExperiment(tmp_path, test_of)
    FairComparison(exp, seeds=(1, 2)).run()
    backbone = [o for m, o in exp.calls if m == "UltraGCNMM"]
    assert [o["proj_reg_weight"] for o in backbone] == [*BACKBONE_GRID, 0.1]  # grid on seed 1, then 0.1
    assert [o["seed"] for o in backbone] == [1, 1, 1, 2]
    rows = [json.loads(line) for line in (tmp_path / "fair.jsonl").read_text().splitlines()]
    roles = [r["role"] for r in rows]
    assert roles.count("invrl") == 2 and roles.count("full") == 2 and roles.count("shuffled") == 2
    assert roles.count("single_env") == 2 and "oracle" not in roles  # no planted truth here
    table = (tmp_path / "fair.md").read_text()
    assert "| 0.1 (chosen) | 0.3000 |" in table


def test_controls_use_the_learned_mask_and_invrl_s_own_final_settings(tmp_path):
    exp = FakeExperiment(tmp_path, lambda reg, seed: 0.1)
    masks = {}
    real_run = exp.run

    def run(model, **overrides):
        if "fixed_mask" in overrides:
            masks[len(masks)] = np.load(overrides["fixed_mask"])
        return real_run(model, **overrides)

    exp.run = run
    FairComparison(exp, seeds=(7,)).run()
    learned = np.linspace(0, 1, 6).astype(np.float32)
    np.testing.assert_array_equal(masks[0], np.ones(6))
    np.testing.assert_array_equal(np.sort(masks[1]), learned)  # the same values on other dims
    assert not np.array_equal(masks[1], learned)
    controls = [(m, o) for m, o in exp.calls if m == "InvRL"]
    # only the mask (or |E|) differs from InvRL's own run: every other setting is the same
    assert [sorted(set(o) - {"seed"}) for _, o in controls] == [["final_proj_reg_weight"], [], ["fixed_mask"],
                                                               ["fixed_mask"], ["num_envs"]]
    assert controls[0][1]["final_proj_reg_weight"] == list(BACKBONE_GRID)  # the backbone's grid


def test_on_a_tiny_planted_bed_invrl_beats_its_final_model_on_the_full_content(tmp_path):
    """The whole experiment on a bed with planted spurious dims (200 users, 400 items, three
    64-d modalities): the learned mask, cut where it splits, lifts the final model well
    above the same final model on m = 1, and every control ran with InvRL's settings."""
    from recbole_invrl.benchmark.experiments import Experiment
    from recbole_invrl.data.synthetic import generate

    generate("dense3", 0.2, tmp_path, layout="atomic", seed=0, name="bed")
    schedule = {"data_path": str(tmp_path), "show_progress": False, "state": "WARNING", "pretrain_epochs": 15,
                "epochs": 10, "stopping_step": 10, "invrl_iterations": 2, "num_envs": 3, "partition_epochs": 2,
                "partition_rounds": 2, "mask_epochs": 10, "neg_num": 20, "final_proj_reg_weight": 0.01}
    exp = Experiment("bed", tmp_path / "out", config_dict=schedule, data_folder=tmp_path / "bed")
    FairComparison(exp, seeds=(2020,), grid=(0.01,)).run()
    rows = {row["role"]: row for row in map(json.loads, (tmp_path / "out/fair.jsonl").read_text().splitlines())}
    assert set(rows) == {"backbone_trial", "invrl", "full", "shuffled", "single_env", "oracle", "invrl_final_grid"}
    ndcg = {role: row["test"]["ndcg@10"] for role, row in rows.items()}
    assert ndcg["invrl"] > 1.3 * ndcg["full"] and ndcg["oracle"] > 1.3 * ndcg["full"]
    assert rows["invrl"]["final_form"] == "cut"



@pytest.mark.parametrize("invrl_l2, grid_runs", [(0.1, 2), (list(BACKBONE_GRID), 0), ([0.01, 0.1], 2)])
def test_invrl_runs_over_the_backbone_grid_once_more_only_where_its_default_is_not_that_grid(
        tmp_path, invrl_l2, grid_runs):
    exp = FakeExperiment(tmp_path, lambda reg, seed: 0.1, invrl_final_l2=invrl_l2)
    FairComparison(exp, seeds=(1, 2)).run()
    grid = [o for m, o in exp.calls if m == "InvRL" and o.get("final_proj_reg_weight") == list(BACKBONE_GRID)]
    assert len(grid) == grid_runs
    roles = [json.loads(line)["role"] for line in (tmp_path / "fair.jsonl").read_text().splitlines()]
    assert roles.count("invrl_final_grid") == grid_runs and roles.count("invrl") == 2


def test_a_rerun_keeps_the_finished_runs_and_runs_only_the_missing_ones(tmp_path):
    exp = FakeExperiment(tmp_path, lambda reg, seed: 0.1)
    FairComparison(exp, seeds=(1, 2)).run()
    first = len(exp.calls)
    lines = (tmp_path / "fair.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["role"] != "invrl_final_grid"]
    (tmp_path / "fair.jsonl").write_text("\n".join(kept) + "\n")  # as if that role had not run yet
    FairComparison(exp, seeds=(1, 2)).run()
    assert [model for model, _ in exp.calls[first:]] == ["InvRL", "InvRL"]  # the two missing runs only
    assert sorted(exp.calls[first:], key=str) == sorted(
        [("InvRL", {"seed": s, "final_proj_reg_weight": list(BACKBONE_GRID)}) for s in (1, 2)], key=str)
    assert len((tmp_path / "fair.jsonl").read_text().splitlines()) == len(lines)


def test_the_summary_row_takes_the_chosen_trial_as_the_backbone_s_first_seed(tmp_path):
    from recbole_invrl.benchmark.fair import fair_summary

    exp = FakeExperiment(tmp_path, lambda reg, seed: {0.01: 0.5, 0.1: 0.2, 1.0: 0.9}.get(reg, 0.1) + 0.01 * seed)
    FairComparison(exp, seeds=(1, 2)).run()
    row = fair_summary([tmp_path / "fair.jsonl"]).splitlines()[2].split(" | ")
    # backbone: the chosen trial (0.1, valid best; test 0.21) and seed 2 at 0.1 (0.22); InvRL 0.11 and 0.12
    assert row[1] == "0.2150 ± 0.0071" and row[2] == "0.1150 ± 0.0071"
    assert row[8] == "-46.5%" and row[9] == "–" and row[10] == "–"  # vs backbone; final L2 and AUC unrecorded


@pytest.mark.parametrize("rows, shown", [
    ([{"final_regs_tried": [0.01, 0.1, 1.0], "final_reg": 0.01}, {"final_regs_tried": [0.01, 0.1, 1.0],
                                                                   "final_reg": 1.0}], "on valid of 0.01, 0.1, 1"),
    ([{"final_regs_tried": [0.1], "final_reg": 0.1}, {"final_reg": 0.1}], "0.1"),
    ([{"final_reg": 1.0}, {"final_reg": 0.01}], "0.01, 1"),
    ([{}], "–"),
])
def test_the_summary_says_how_invrl_s_final_l2_was_set(rows, shown):
    from recbole_invrl.benchmark.fair import _final_l2

    assert _final_l2(rows) == shown


def test_a_rerun_keeps_every_finished_control_when_there_is_an_oracle(tmp_path, monkeypatch):
    from recbole_invrl.invariance.truth import PlantedTruth

    truth = PlantedTruth(roles=np.array([1, 1, 1, 0, 0, 0]), envs=None, folder=tmp_path)
    monkeypatch.setattr(FairComparison, "_truth", lambda self, record_path: truth)
    exp = FakeExperiment(tmp_path, lambda reg, seed: 0.1)
    FairComparison(exp, seeds=(1, 2)).run()
    before = (tmp_path / "fair.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["role"] == "oracle" for line in before) == 2
    calls = len(exp.calls)
    FairComparison(exp, seeds=(1, 2)).run()
    assert len(exp.calls) == calls  # nothing ran again
    assert sorted((tmp_path / "fair.jsonl").read_text().splitlines()) == sorted(before)
