"""``diagnose``: what InvRL's invariance machinery does on a dataset, in one command.

    python run_experiment.py --experiment=diagnose --dataset=D [--data_path=P] [--truth=DIR]

Runs InvRL once with the dataset's settings, then, from the same pretrained backbone:

- M4 with three sources of environments at the same budget (``mask_epochs`` x
  ``invrl_iterations`` epochs from m = 0.5, alpha and lambda of the first iteration): the
  planted environments (with a truth), uniformly random ones (``num_envs``) and a single
  environment (where the penalty is zero);
- the final model (M6) on the learned mask, on the oracle mask (1 on the invariant and
  unlabelled dimensions, 0 on the spurious ones; with a truth), on the full content
  (m = 1), on the learned mask's values over shuffled dimensions, and on the mask M4 learns
  from a single environment above, each trained as InvRL's final model is (``fixed_mask``,
  the same ``final_mask_forms`` and final settings);
- with two planted environments and planted dimensions, how separable the environments
  are by the pretrained backbone's own score on the spurious dimensions alone,
  <p_u^(c), W (s * c_i)> with s the spurious indicator: its ROC-AUC for environment 0
  and the purity of its best two-way threshold. A partition that M3 learns from that
  backbone is not expected to beat it by much.

The planted truth (``recbole_invrl.invariance.truth``) comes from ``--truth=DIR`` or the
dataset's folder. Without one, the report keeps what needs none: environment sizes and
moved shares, the penalty's share of m's gradient, the mask per modality, and the final
model on the learned and the full mask.

Writes ``diagnose.json`` (keys in the README), ``diagnose.csv`` (one row per figure:
section, step, metric, value) and ``diagnose.png``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from recbole.utils import init_seed
from sklearn.metrics import roc_auc_score

from recbole_invrl.compat import load_weights, write_json_atomic
from recbole_invrl.data import create_dataset, data_preparation
from recbole_invrl.invariance import FrozenBackbone, TrainingInteractions
from recbole_invrl.invariance.paths import BackboneView, backbone_view, mask_learner_for
from recbole_invrl.invariance.mask import learn_mask, mask_step_size
from recbole_invrl.invariance.truth import PlantedTruth, purity
from recbole_invrl.model.general_recommender import InvRL

SETTINGS = ("num_envs", "invrl_iterations", "partition_models", "partition_start", "partition_assign",
            "partition_epochs", "partition_rounds", "mask_epochs", "mask_lr", "alpha", "mask_lambda", "mask_reg",
            "mask_model_start", "mask_type", "final_proj_reg_weight", "seed")
NDCG = "ndcg@10"


def diagnose(exp, truth_dir: str | None = None) -> tuple[Path, Path, Path]:
    """Run the diagnosis for ``exp``'s dataset and write its three files."""
    overrides = {"truth_dir": truth_dir} if truth_dir else {}
    result = exp.run("InvRL", **overrides)
    record = json.loads(Path(result["record_path"]).read_text())
    config, frozen, interactions = _pretrained_backbone(exp, overrides, result["pretrain_path"])
    truth = PlantedTruth.load(truth_dir or config["data_path"], frozen.model.content_layout, len(interactions))
    sources, single_mask = _environment_sources(config, frozen, interactions, truth)
    learned = np.load(result["mask_path"])
    controls = {"full": np.ones_like(learned), "shuffled": np.random.default_rng(config["seed"]).permutation(learned),
                "single_env": single_mask}
    report = {
        "dataset": exp.dataset,
        "truth_dir": str(truth.folder) if truth else None,
        "settings": {key: config[key] for key in SETTINGS},
        "partition": record["partition"],
        "mask": [_iteration_summary(entry) for entry in record["mask"]],
        "mask_epochs": [{"iteration": entry["iteration"], "epoch": epoch, **values}
                        for entry in record["mask"] for epoch, values in enumerate(entry["epochs"], start=1)],
        "m4_environments": sources,
        "planted_separability": _separability(frozen, interactions, truth),
        "final_ndcg@10": _final_models(exp, result, truth, overrides, controls),
        "test_result": result["test_result"],
        "record_path": result["record_path"],
    }
    json_path = exp.out / "diagnose.json"
    write_json_atomic(report, str(json_path))
    table = figures_table(report)
    csv, png = exp.write("diagnose", table, plot(report))
    return json_path, csv, png


def _iteration_summary(entry: dict[str, Any]) -> dict[str, Any]:
    shares = [epoch["penalty_share"] for epoch in entry["epochs"]]
    keep = ("iteration", "alpha", "lambda", "auc", "gate_ratio", "per_modality")
    return {**{k: entry[k] for k in keep if k in entry}, "penalty_share": float(np.mean(shares)) if shares else 0.0}


def _pretrained_backbone(exp, overrides: dict, pretrain_path: str):
    """The run's config, its pretrained backbone (frozen for M3/M4) and training interactions."""
    config = exp.run_config("InvRL", **overrides)
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    model = InvRL(config, train._dataset).to(config["device"])
    load_weights(model.backbone, pretrain_path, config["device"], "pretrained backbone")
    view = backbone_view(model.backbone, config["invariance_path"] or "auto")
    return config, view, TrainingInteractions.from_dataset(train._dataset, config["device"])


def _environment_sources(config, frozen: BackboneView, interactions: TrainingInteractions,
                         truth: PlantedTruth | None) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """M4 from m = 0.5 on planted, random and single environments at one budget; and the
    mask learned from the single environment."""
    n, device = len(interactions), interactions.users.device
    sources = {}
    if truth is not None and truth.envs is not None:
        sources["planted"] = torch.as_tensor(truth.envs, device=device)
    init_seed(config["seed"], config["reproducibility"])
    sources["random"] = torch.randint(config["num_envs"], (n,), device=device)
    sources["single"] = torch.zeros(n, dtype=torch.long, device=device)
    epochs = config["mask_epochs"] * config["invrl_iterations"]
    report = {}
    for name, envs in sources.items():
        init_seed(config["seed"], config["reproducibility"])
        num_envs = int(envs.max()) + 1
        learner = mask_learner_for(frozen, torch.full((frozen.model.content.dim,), 0.5, device=device), num_envs,
                                   config["mask_sigma"], config["mask_type"], config["mask_reg"],
                                   config["mask_model_start"])
        mask_lr = mask_step_size(config["mask_lr"], config["mask_travel"], envs, num_envs,
                                 config["train_batch_size"], config["mask_epochs"])
        history = learn_mask(learner, interactions, envs, epochs, config["train_batch_size"], config["learning_rate"],
                             mask_lr, config["alpha"], config["mask_lambda"])
        scores = truth.mask_scores(learner.mask) if truth else {}
        report[name] = {"num_envs": num_envs, "epochs": epochs, **scores,
                        "penalty_share": float(np.mean([h["penalty_share"] for h in history]))}
        if name == "single":
            single_mask = learner.mask.detach().cpu().numpy().astype(np.float32)
    return report, single_mask


@torch.no_grad()
def _separability(frozen: BackboneView, interactions: TrainingInteractions,
                  truth: PlantedTruth | None) -> dict[str, float]:
    """ROC-AUC and best-threshold purity of the pretrained spurious-part score for two
    planted environments ({} without them, or on the forward path, where the score has
    no spurious part of its own)."""
    if not isinstance(frozen, FrozenBackbone) or truth is None or truth.envs is None or truth.roles is None \
            or truth.envs.max() != 1:
        return {}
    spurious = torch.as_tensor(truth.roles == 0, dtype=torch.float32, device=interactions.users.device)
    weight = frozen.projection * spurious
    scores = torch.cat([
        (F.linear(frozen.content_rows(items), weight) * frozen.user_parts(users)[1]).sum(-1)
        for users, items in zip(interactions.users.split(16384), interactions.items.split(16384))
    ]).cpu().numpy()
    thresholds = np.quantile(scores, np.linspace(0.01, 0.99, 99))
    best = max(purity((scores > t).astype(np.int64), truth.envs) for t in thresholds)
    return {"auc": float(roc_auc_score(truth.envs == 0, scores)), "best_threshold_purity": best}


def _final_models(exp, result: dict, truth: PlantedTruth | None, overrides: dict,
                  controls: dict[str, np.ndarray]) -> dict[str, float]:
    """Test NDCG@10 of the final model on the learned mask, on each control mask and on the
    oracle mask."""
    scores = {"learned": result["test_result"][NDCG]}
    masks = dict(controls)
    if truth is not None and truth.roles is not None:
        masks["oracle"] = truth.oracle_mask()
    with tempfile.TemporaryDirectory(prefix="invrl-diagnose-") as folder:
        for name, mask in masks.items():
            path = Path(folder) / f"{name}-mask.npy"
            np.save(path, mask)
            scores[name] = exp.run("InvRL", fixed_mask=str(path), **overrides)["test_result"][NDCG]
    return scores


def figures_table(report: dict[str, Any]) -> pd.DataFrame:
    """Every figure of the report as (section, step, metric, value) rows."""
    rows = []
    for entry in report["partition"]:
        step = f"t{entry['iteration']}-r{entry['round']}"
        for key in ("ari", "purity", "moved_share"):
            if key in entry:
                rows.append(("partition", step, key, entry[key]))
    for entry in report["mask"]:
        for key in ("auc", "gate_ratio", "penalty_share"):
            if key in entry:
                rows.append(("mask", f"t{entry['iteration']}", key, entry[key]))
    for entry in report["mask_epochs"]:
        rows.append(("mask_epoch", f"t{entry['iteration']}-e{entry['epoch']}", "penalty_share", entry["penalty_share"]))
    for source, values in report["m4_environments"].items():
        for key in ("auc", "gate_ratio", "penalty_share"):
            if key in values:
                rows.append(("m4_environments", source, key, values[key]))
    for mask, value in report["final_ndcg@10"].items():
        rows.append(("final_ndcg@10", mask, "ndcg@10", value))
    for key, value in report["planted_separability"].items():
        rows.append(("planted_separability", "pretrained spurious score", key, value))
    return pd.DataFrame(rows, columns=["section", "step", "metric", "value"])


def plot(report: dict[str, Any]):
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    _plot_partition(axes[0, 0], report["partition"])
    _plot_mask(axes[0, 1], report["mask"])
    shares = [e["penalty_share"] for e in report["mask_epochs"]]
    axes[0, 2].plot(range(1, len(shares) + 1), shares, marker="o", markersize=3)
    axes[0, 2].set(title="penalty's share of m's gradient", xlabel="mask epoch (all iterations)", ylabel="share")
    axes[0, 2].set_ylim(bottom=0)
    _bars(axes[1, 0], {k: v.get("auc", np.nan) for k, v in report["m4_environments"].items()},
          "M4 mask ROC-AUC by environments", "AUC")
    _bars(axes[1, 1], {k: v["penalty_share"] for k, v in report["m4_environments"].items()},
          "M4 penalty share by environments", "share")
    _bars(axes[1, 2], report["final_ndcg@10"], "final model test NDCG@10 by mask", "NDCG@10")
    figure.suptitle(f"InvRL diagnosis on {report['dataset']}"
                    + ("" if report["truth_dir"] else " (no planted truth)"))
    return figure


def _plot_partition(ax, partition: list[dict]) -> None:
    rounds = range(1, len(partition) + 1)
    keys = [k for k in ("ari", "purity") if partition and k in partition[0]] or ["moved_share"]
    for key in keys + (["moved_share"] if keys != ["moved_share"] else []):
        ax.plot(rounds, [p[key] for p in partition], marker="o", label=key)
    ax.set(title="environments per partition round", xlabel="partition round", ylim=(-0.05, 1.05))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()


def _plot_mask(ax, mask: list[dict]) -> None:
    iterations = [m["iteration"] for m in mask]
    if mask and "auc" in mask[0]:
        ax.plot(iterations, [m["auc"] for m in mask], marker="o", label="ROC-AUC")
        twin = ax.twinx()
        twin.plot(iterations, [m["gate_ratio"] for m in mask], marker="s", color="tab:red", label="gate ratio")
        twin.set_ylabel("mean gate invariant / spurious")
        twin.legend(loc="lower right")
    else:
        for field in mask[0]["per_modality"] if mask else []:
            ax.plot(iterations, [m["per_modality"][field]["mean"] for m in mask], marker="o", label=f"{field} mean")
    ax.set(title="mask per iteration", xlabel="iteration")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left")


def _bars(ax, values: dict[str, float], title: str, ylabel: str) -> None:
    names = list(values)
    heights = [values[n] for n in names]
    ax.bar(names, [0 if np.isnan(h) else h for h in heights], width=0.6)
    for x, h in enumerate(heights):
        ax.annotate("n/a" if np.isnan(h) else f"{h:.3g}", (x, 0 if np.isnan(h) else h),
                    ha="center", va="bottom", fontsize="small")
    ax.set(title=title, ylabel=ylabel)
