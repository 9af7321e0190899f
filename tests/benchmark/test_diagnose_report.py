"""The parts of ``diagnose`` that assemble its report, table and figure, on hand-built
inputs and a stub experiment (no training: each test takes well under a second; the
end-to-end runs are in ``test_diagnose.py``)."""
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from recbole_invrl.benchmark import diagnose as diag  # noqa: E402
from recbole_invrl.invariance.common import FrozenBackbone  # noqa: E402
from recbole_invrl.invariance.truth import PlantedTruth  # noqa: E402


def _report(truth_dir="/truth"):
    return {
        "dataset": "bed",
        "truth_dir": truth_dir,
        "partition": [{"iteration": 1, "round": 1, "ari": 0.1, "purity": 0.6, "moved_share": 0.5, "env_sizes": [3, 4]},
                      {"iteration": 1, "round": 2, "ari": 0.3, "purity": 0.7, "moved_share": 0.2}],
        "mask": [{"iteration": 1, "auc": 0.8, "gate_ratio": 2.0, "penalty_share": 0.25,
                  "per_modality": {"v": {"mean": 0.4}}},
                 {"iteration": 2, "auc": 0.9, "gate_ratio": 3.0, "penalty_share": 0.35,
                  "per_modality": {"v": {"mean": 0.5}}}],
        "mask_epochs": [{"iteration": 1, "epoch": 1, "penalty_share": 0.2},
                        {"iteration": 2, "epoch": 1, "penalty_share": 0.4}],
        "m4_environments": {"planted": {"num_envs": 2, "auc": 0.95, "gate_ratio": 4.0, "penalty_share": 0.3},
                            "single": {"num_envs": 1, "penalty_share": 0.0}},
        "final_ndcg@10": {"learned": 0.11, "full": 0.09},
        "planted_separability": {"auc": 0.7, "best_threshold_purity": 0.65},
    }


def test_the_figures_table_lists_every_figure_in_report_order():
    table = diag.figures_table(_report())
    assert list(table.columns) == ["section", "step", "metric", "value"]
    assert [tuple(row) for row in table.itertuples(index=False)] == [
        ("partition", "t1-r1", "ari", 0.1), ("partition", "t1-r1", "purity", 0.6),
        ("partition", "t1-r1", "moved_share", 0.5),
        ("partition", "t1-r2", "ari", 0.3), ("partition", "t1-r2", "purity", 0.7),
        ("partition", "t1-r2", "moved_share", 0.2),
        ("mask", "t1", "auc", 0.8), ("mask", "t1", "gate_ratio", 2.0), ("mask", "t1", "penalty_share", 0.25),
        ("mask", "t2", "auc", 0.9), ("mask", "t2", "gate_ratio", 3.0), ("mask", "t2", "penalty_share", 0.35),
        ("mask_epoch", "t1-e1", "penalty_share", 0.2), ("mask_epoch", "t2-e1", "penalty_share", 0.4),
        ("m4_environments", "planted", "auc", 0.95), ("m4_environments", "planted", "gate_ratio", 4.0),
        ("m4_environments", "planted", "penalty_share", 0.3), ("m4_environments", "single", "penalty_share", 0.0),
        ("final_ndcg@10", "learned", "ndcg@10", 0.11), ("final_ndcg@10", "full", "ndcg@10", 0.09),
        ("planted_separability", "pretrained spurious score", "auc", 0.7),
        ("planted_separability", "pretrained spurious score", "best_threshold_purity", 0.65),
    ]


def test_an_iteration_summary_keeps_its_scores_and_averages_the_penalty_share():
    entry = {"iteration": 2, "alpha": 0.5, "lambda": 0.1, "auc": 0.8, "gate_ratio": 1.5, "per_modality": {"v": {}},
             "mask": [0.1, 0.9], "epochs": [{"penalty_share": 0.2}, {"penalty_share": 0.5}]}
    summary = diag._iteration_summary(entry)
    assert summary == {"iteration": 2, "alpha": 0.5, "lambda": 0.1, "auc": 0.8, "gate_ratio": 1.5,
                       "per_modality": {"v": {}}, "penalty_share": pytest.approx(0.35)}
    assert diag._iteration_summary({"iteration": 1, "epochs": []}) == {"iteration": 1, "penalty_share": 0.0}


class _StubExperiment:
    """``run`` returns a test NDCG@10 per fixed mask (read when the run is made, as the
    masks live in a temporary folder), and remembers each call."""

    dataset = "bed"

    def __init__(self, out: Path | None = None):
        self.calls, self.out = [], out

    def run(self, model, **overrides):
        mask = np.load(overrides["fixed_mask"])
        self.calls.append((model, dict(overrides), mask))
        return {"test_result": {"ndcg@10": float(mask.sum())}}


def test_final_models_run_one_fixed_mask_each_with_the_oracle_when_there_are_roles(tmp_path):
    controls = {"full": np.ones(4, np.float32), "shuffled": np.array([0.0, 0.5, 0.25, 1.0], np.float32)}
    truth = PlantedTruth(roles=np.array([1, 0, -1, 0]), envs=None, folder=tmp_path)
    exp = _StubExperiment()
    scores = diag._final_models(exp, {"test_result": {"ndcg@10": 0.123}}, truth, {"truth_dir": "/t"}, controls)
    assert scores == {"learned": 0.123, "full": 4.0, "shuffled": 1.75, "oracle": 2.0}  # oracle: 1, 0, 1, 0
    assert [call[0] for call in exp.calls] == ["InvRL"] * 3
    assert all(call[1]["truth_dir"] == "/t" and set(call[1]) == {"truth_dir", "fixed_mask"} for call in exp.calls)
    np.testing.assert_array_equal(exp.calls[2][2], [1, 0, 1, 0])
    without_roles = PlantedTruth(roles=None, envs=np.zeros(3, np.int64), folder=tmp_path)
    for truth in (None, without_roles):
        scores = diag._final_models(_StubExperiment(), {"test_result": {"ndcg@10": 0.5}}, truth, {}, controls)
        assert set(scores) == {"learned", "full", "shuffled"}


def test_separability_needs_an_eq14_backbone_and_two_planted_environments_with_roles(tmp_path):
    frozen = object.__new__(FrozenBackbone)  # only its type is read before the truth is checked
    roles, two = np.array([1, 0]), np.array([0, 1, 1, 0])
    assert diag._separability(object(), None, PlantedTruth(roles, two, tmp_path)) == {}
    assert diag._separability(frozen, None, None) == {}
    assert diag._separability(frozen, None, PlantedTruth(None, two, tmp_path)) == {}
    assert diag._separability(frozen, None, PlantedTruth(roles, None, tmp_path)) == {}
    assert diag._separability(frozen, None, PlantedTruth(roles, np.array([0, 1, 2]), tmp_path)) == {}


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_the_figure_shows_every_panel(tmp_path):
    report = _report()
    report["m4_environments"]["single"]["auc"] = float("nan")
    figure = diag.plot(report)
    axes = figure.axes
    titles = [ax.get_title() for ax in axes]
    assert titles[:6] == ["environments per partition round", "mask per iteration", "penalty's share of m's gradient",
                          "M4 mask ROC-AUC by environments", "M4 penalty share by environments",
                          "final model test NDCG@10 by mask"]
    assert figure._suptitle.get_text() == "InvRL diagnosis on bed"
    partition = axes[0]
    assert [line.get_label() for line in partition.get_lines()] == ["ari", "purity", "moved_share"]
    assert list(partition.get_lines()[2].get_ydata()) == [0.5, 0.2]
    assert all(list(line.get_xdata()) == [1, 2] and line.get_marker() == "o" for line in partition.get_lines())
    assert partition.get_ylim() == (-0.05, 1.05) and partition.get_xlabel() == "partition round"
    mask_axis = axes[1]
    assert [line.get_label() for line in mask_axis.get_lines()] == ["ROC-AUC"]
    assert list(mask_axis.get_lines()[0].get_xdata()) == [1, 2]
    assert mask_axis.get_lines()[0].get_marker() == "o" and mask_axis.get_xlabel() == "iteration"
    twin = axes[6]
    assert list(twin.get_lines()[0].get_ydata()) == [2.0, 3.0] and twin.get_ylabel() == "mean gate invariant / spurious"
    ratio = twin.get_lines()[0]
    assert list(ratio.get_xdata()) == [1, 2] and ratio.get_label() == "gate ratio" and ratio.get_marker() == "s"
    assert matplotlib.colors.to_hex(ratio.get_color()) == matplotlib.colors.to_hex("tab:red")
    assert axes[2].get_ylabel() == "share" and axes[5].get_ylabel() == "NDCG@10"
    assert [tuple(t.xy) for t in axes[3].texts] == [(0, 0.95), (1, 0)]  # n/a sits on the axis
    shares = axes[2].get_lines()[0]
    assert list(shares.get_xdata()) == [1, 2] and list(shares.get_ydata()) == [0.2, 0.4]
    assert axes[2].get_ylim()[0] == 0 and axes[2].get_xlabel() == "mask epoch (all iterations)"
    aucs = axes[3]
    assert [p.get_height() for p in aucs.patches] == [0.95, 0]  # NaN drawn as an empty bar, labelled n/a
    assert _texts(aucs) == ["0.95", "n/a"] and aucs.get_ylabel() == "AUC"
    assert [p.get_height() for p in axes[4].patches] == [0.3, 0.0] and axes[4].get_ylabel() == "share"
    assert [p.get_height() for p in axes[5].patches] == [0.11, 0.09] and _texts(axes[5]) == ["0.11", "0.09"]
    assert [t.get_text() for t in axes[5].get_xticklabels()] == ["learned", "full"]
    matplotlib.pyplot.close(figure)


def test_without_a_truth_the_mask_panel_shows_the_modality_means():
    report = _report(truth_dir=None)
    report["partition"] = [{"moved_share": 0.4}, {"moved_share": 0.1}]
    report["mask"] = [{"iteration": 1, "per_modality": {"v": {"mean": 0.4}, "t": {"mean": 0.6}}},
                      {"iteration": 2, "per_modality": {"v": {"mean": 0.5}, "t": {"mean": 0.7}}}]
    figure = diag.plot(report)
    assert figure._suptitle.get_text() == "InvRL diagnosis on bed (no planted truth)"
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["moved_share"]
    lines = figure.axes[1].get_lines()
    assert [line.get_label() for line in lines] == ["v mean", "t mean"]
    assert list(lines[1].get_ydata()) == [0.6, 0.7] and list(lines[1].get_xdata()) == [1, 2]
    assert len(figure.axes) == 6  # no twin axis for the gate ratio
    matplotlib.pyplot.close(figure)


def test_diagnose_assembles_the_report_from_its_parts(tmp_path, monkeypatch):
    """The report's sections come from the run record and the parts, the controls are the
    full mask, the learned mask's values shuffled with the run's seed, and M4's
    single-environment mask; the files land in the experiment's folder."""
    learned = np.array([0.9, 0.1, 0.6, 0.3], np.float32)
    np.save(tmp_path / "mask.npy", learned)
    record = {"partition": [{"iteration": 1, "round": 1, "moved_share": 0.5}],
              "mask": [{"iteration": 1, "alpha": 1.0, "auc": 0.7, "gate_ratio": 1.4, "mask": [0.0],
                        "epochs": [{"penalty_share": 0.1, "risk": 2.0}, {"penalty_share": 0.3, "risk": 1.0}]}]}
    (tmp_path / "record.json").write_text(json.dumps(record))
    config = {key: i for i, key in enumerate(diag.SETTINGS)}
    config.update(seed=7, data_path=str(tmp_path / "data"))
    seen = {}

    class Exp:
        dataset, out = "bed", tmp_path

        def run(self, model, **overrides):
            seen["run"] = (model, overrides)
            return {"record_path": str(tmp_path / "record.json"), "pretrain_path": "pre.pth",
                    "mask_path": str(tmp_path / "mask.npy"), "test_result": {"ndcg@10": 0.2}}

        def write(self, name, table, figure):
            seen["write"] = (name, table, type(figure).__name__, figure._suptitle.get_text())
            matplotlib.pyplot.close(figure)
            return tmp_path / f"{name}.csv", tmp_path / f"{name}.png"

    class Model:
        content_layout = [("v", 4)]

    class View:
        model = Model()

    def pretrained(exp, overrides, path):
        seen["pretrained"] = (overrides, path)
        return config, View(), list(range(5))

    planted = PlantedTruth(None, None, tmp_path / "truth")

    def truth_load(folder, layout, n_train):
        seen["truth"] = (folder, layout, n_train)
        return planted if folder == "/elsewhere" else None

    single = np.array([0.2, 0.2, 0.4, 0.4], np.float32)
    monkeypatch.setattr(diag, "_pretrained_backbone", pretrained)
    monkeypatch.setattr(diag.PlantedTruth, "load", staticmethod(truth_load))

    def sources(*args):
        seen["sources"] = args
        return {"single": {"num_envs": 1, "penalty_share": 0.0}}, single

    def separability(*args):
        seen["separability"] = args
        return {"auc": 0.6}

    monkeypatch.setattr(diag, "_environment_sources", sources)
    monkeypatch.setattr(diag, "_separability", separability)

    def final(exp, result, truth, overrides, controls):
        seen["controls"] = controls
        seen["final"] = (exp, result, truth, overrides)
        return {"learned": 0.2}

    monkeypatch.setattr(diag, "_final_models", final)
    exp = Exp()
    json_path, csv, png = diag.diagnose(exp, truth_dir=None)
    assert json_path == tmp_path / "diagnose.json" and csv.name == "diagnose.csv" and png.name == "diagnose.png"
    report = json.loads(json_path.read_text())
    assert seen["run"] == ("InvRL", {}) and seen["pretrained"] == ({}, "pre.pth")
    assert seen["truth"] == (str(tmp_path / "data"), [("v", 4)], 5)
    assert report["dataset"] == "bed" and report["truth_dir"] is None
    assert report["settings"] == {key: config[key] for key in diag.SETTINGS}
    assert report["partition"] == record["partition"]
    assert report["mask"] == [{"iteration": 1, "alpha": 1.0, "auc": 0.7, "gate_ratio": 1.4,
                               "penalty_share": pytest.approx(0.2)}]
    assert report["mask_epochs"] == [{"iteration": 1, "epoch": 1, "penalty_share": 0.1, "risk": 2.0},
                                     {"iteration": 1, "epoch": 2, "penalty_share": 0.3, "risk": 1.0}]
    assert report["m4_environments"] == {"single": {"num_envs": 1, "penalty_share": 0.0}}
    assert report["planted_separability"] == {"auc": 0.6} and report["final_ndcg@10"] == {"learned": 0.2}
    assert report["test_result"] == {"ndcg@10": 0.2} and report["record_path"] == str(tmp_path / "record.json")
    controls = seen["controls"]
    assert list(controls) == ["full", "shuffled", "single_env"]
    assert controls["full"].shape == (4,) and (controls["full"] == 1).all()
    config_seen, view, interactions, truth = seen["sources"]
    assert config_seen is config and isinstance(view, View) and interactions == list(range(5)) and truth is None
    assert seen["separability"][0] is view and seen["separability"][1] == list(range(5)) and seen["separability"][2] is None
    final_exp, final_result, final_truth, final_overrides = seen["final"]
    assert final_exp is exp and final_result["pretrain_path"] == "pre.pth" and final_truth is None
    assert final_overrides == {}
    assert sorted(controls["shuffled"].tolist()) == sorted(learned.tolist())
    np.testing.assert_array_equal(controls["shuffled"], learned[np.random.default_rng(7).permutation(4)])
    np.testing.assert_array_equal(controls["single_env"], single)
    name, table, figure_type, suptitle = seen["write"]
    assert figure_type == "Figure" and suptitle == "InvRL diagnosis on bed (no planted truth)"
    assert name == "diagnose" and set(table.section) == {"partition", "mask", "mask_epoch", "m4_environments",
                                                          "final_ndcg@10", "planted_separability"}
    report = json.loads(diag.diagnose(Exp(), truth_dir="/elsewhere")[0].read_text())
    assert seen["run"] == ("InvRL", {"truth_dir": "/elsewhere"}) and seen["truth"][0] == "/elsewhere"
    assert report["truth_dir"] == str(tmp_path / "truth") and seen["sources"][3] is planted
    assert seen["separability"][2] is planted and seen["final"][2] is planted
    assert seen["final"][3] == {"truth_dir": "/elsewhere"}


def test_m4_runs_on_planted_random_and_single_environments_with_the_run_s_settings(build, atomic_dataset, tmp_path):
    """Each source is learned from m = 0.5 at mask_epochs x invrl_iterations epochs, seeded
    alike; the single-environment mask is the one M4 gives with these settings (the mask
    module run here with them), and one environment leaves the penalty no share."""
    import torch
    from recbole.utils import init_seed

    from recbole_invrl.invariance import FrozenBackbone, MaskLearner, TrainingInteractions
    from recbole_invrl.invariance.mask import learn_mask, mask_step_size
    from recbole_invrl.model.general_recommender import UltraGCNMM

    rng = np.random.default_rng(0)
    features = rng.normal(size=(10, 4))
    train = [(u, int(i)) for u in range(1, 9) for i in rng.choice(np.arange(3, 11), 4, replace=False)]
    atomic_dataset(tmp_path, "src", train, [(u, 1) for u in range(1, 9)], [(u, 2) for u in range(1, 9)],
                   dense={"v_feat": features})
    cfg, _, train_data, *_ = build("UltraGCNMM", "src", embedding_size=2, content_size=2, neg_num=2, gamma_i=0.0)
    model = UltraGCNMM(cfg, train_data._dataset)
    with torch.no_grad():  # a backbone whose content part matters (the default init is near 0)
        model.user_embedding.weight.normal_(generator=torch.Generator().manual_seed(1))
    frozen = FrozenBackbone(model)
    interactions = TrainingInteractions.from_dataset(train_data._dataset, torch.device("cpu"))
    n = len(interactions)
    config = {"seed": 3, "reproducibility": True, "num_envs": 3, "mask_epochs": 1, "invrl_iterations": 2,
              "mask_sigma": 0.02, "mask_type": "float", "mask_reg": "l2_half", "mask_model_start": "random",
              "mask_lr": "auto", "mask_travel": 0.3, "train_batch_size": 16, "learning_rate": 0.01, "alpha": 2.0,
              "mask_lambda": 0.2}
    planted = np.arange(n) % 2
    truth = PlantedTruth(roles=np.array([1, 0, 1, 0]), envs=planted, folder=tmp_path)
    report, single_mask = diag._environment_sources(config, frozen, interactions, truth)
    assert list(report) == ["planted", "random", "single"]
    assert [report[k]["num_envs"] for k in report] == [2, 3, 1] and all(r["epochs"] == 2 for r in report.values())
    assert report["single"]["penalty_share"] < 1e-6 < report["planted"]["penalty_share"]  # 0 up to rounding
    assert set(report["planted"]) == {"num_envs", "epochs", "auc", "gate_ratio", "penalty_share"}

    init_seed(3, True)
    learner = MaskLearner(frozen, torch.full((4,), 0.5), 1, 0.02, "float", "l2_half", "random")
    zeros = torch.zeros(n, dtype=torch.long)
    step = mask_step_size("auto", 0.3, zeros, 1, 16, 1)
    learn_mask(learner, interactions, zeros, 2, 16, 0.01, step, 2.0, 0.2)
    expected = learner.mask.detach().numpy()
    assert single_mask.dtype == np.float32
    np.testing.assert_allclose(single_mask, expected, rtol=0, atol=1e-7)
    assert not np.allclose(single_mask, 0.5)  # m moved
    pairs = [(a > b) + 0.5 * (a == b) for a in single_mask[[0, 2]] for b in single_mask[[1, 3]]]
    assert report["single"]["auc"] == pytest.approx(np.mean(pairs))
    assert report["single"]["gate_ratio"] == pytest.approx(single_mask[[0, 2]].mean() / single_mask[[1, 3]].mean())
    without, _ = diag._environment_sources(config, frozen, interactions, None)
    assert list(without) == ["random", "single"] and "auc" not in without["single"]
