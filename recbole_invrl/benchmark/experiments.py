"""The paper's experiments as commands, each writing a CSV and a PNG.

- ``table3``: mask ablation, float/binary x L2/L0 (Table 3);
- ``fig3``: NDCG@K for K = 1..20, InvRL vs UltraGCN-MM (Fig. 3);
- ``fig4``: mask values per content dimension, one panel per modality (Fig. 4);
- ``fig5``: share of moved interactions per partition round (Fig. 5);
- ``fig6``: accuracy vs the number of environments |E| (Fig. 6);
- ``recovery``: how well M3 and M4 recover a test bed's planted truth, over seeds, at the
  dataset's |E| and at |E| = 2;
- ``diagnose``: what the partition, the penalty and the mask do (``diagnose.py``);
- ``fair``: InvRL against its backbone tuned on validation, with the controls that isolate
  the mask and the environments (``fair.py``).

``fig4`` and ``fig5`` read an InvRL run record (``--record``, the ``-record.json`` beside an
InvRL checkpoint) or make one by running InvRL. Every run goes through
``run_recbole_invrl``, so dataset configs, config files and ``--key=value`` overrides apply.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from recbole_invrl.compat import atomic_write  # noqa: E402
from recbole_invrl.config import Config  # noqa: E402
from recbole_invrl.data import MissingDatasetError  # noqa: E402
from recbole_invrl.data.utils import ensure_dataset_files  # noqa: E402
from recbole_invrl.model.content import layout_slices  # noqa: E402
from recbole_invrl.quick_start import run_recbole_invrl  # noqa: E402
from recbole_invrl.settings import SettingsError  # noqa: E402

TOP10 = ("precision@10", "recall@10", "ndcg@10")
INVISIBLE_GATE = 0.01  # fig4: gates below this get a mark (1% of the axis is no visible bar)
MASK_VARIANTS = (("binary", "l0", "B+L0"), ("binary", "l2", "B+L2"), ("float", "l0", "F+L0"), ("float", "l2", "F+L2"))
ENV_GRID = (1, 5, 10, 20, 30)


class Experiment:
    """Runs models for one dataset with shared overrides and writes CSV + PNG into ``out``."""

    def __init__(self, dataset: str, out: str | Path, config_dict: dict | None = None,
                 config_files: list[str] | None = None, data_folder: str | Path | None = None):
        """``data_folder``: the dataset's folder (a resolved config's ``data_path``); by
        default ``<config_dict['data_path']>/<dataset>`` if given."""
        self.dataset, self.out = dataset, Path(out)
        self.config_dict, self.config_files = dict(config_dict or {}), config_files
        if data_folder is None and "data_path" in self.config_dict:
            data_folder = Path(self.config_dict["data_path"]) / dataset
        self.data_folder = Path(data_folder) if data_folder else None
        self.out.mkdir(parents=True, exist_ok=True)

    def run(self, model: str, **overrides) -> dict[str, Any]:
        return run_recbole_invrl(model, self.dataset, config_file_list=self.config_files,
                                 config_dict={**self.config_dict, **overrides})

    def run_config(self, model: str, **overrides):
        """The config a run of ``model`` with ``overrides`` would use."""
        from recbole_invrl.config import Config

        return Config(model, self.dataset, self.config_files, {**self.config_dict, **overrides})

    def write(self, name: str, table: pd.DataFrame, figure) -> tuple[Path, Path]:
        csv, png = self.out / f"{name}.csv", self.out / f"{name}.png"
        atomic_write(str(csv), lambda tmp: table.to_csv(tmp, index=False), ".csv")
        atomic_write(str(png), lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight"), ".png")
        plt.close(figure)
        return csv, png

    def record(self, record_path: str | None) -> dict[str, Any]:
        """An InvRL run record: the given file, or a fresh InvRL run's."""
        path = record_path or self.run("InvRL")["record_path"]
        return json.loads(Path(path).read_text())


def mask_ablation(exp: Experiment) -> tuple[Path, Path]:
    """Table 3: InvRL with binary/float masks and L0/L2 regularisers."""
    rows = []
    for mask_type, mask_reg, label in MASK_VARIANTS:
        result = exp.run("InvRL", mask_type=mask_type, mask_reg=mask_reg)["test_result"]
        rows.append({"variant": label, **{k: result[k] for k in TOP10}})
    table = pd.DataFrame(rows)
    figure, ax = plt.subplots(figsize=(6, 3.5))
    table.set_index("variant")[list(TOP10)].plot.bar(ax=ax, rot=0, width=0.75, edgecolor="white", linewidth=2)
    ax.set(title=f"Mask variants on {exp.dataset} (test)", xlabel="mask type + regulariser", ylabel="score")
    ax.legend(["P@10", "R@10", "N@10"], loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return exp.write("table3_mask_ablation", table, figure)


def ndcg_at_k(exp: Experiment, max_k: int = 20) -> tuple[Path, Path]:
    """Fig. 3: test NDCG@K of InvRL and UltraGCN-MM for K = 1..max_k."""
    ks = list(range(1, max_k + 1))
    settings = {"metrics": ["NDCG"], "topk": ks, "valid_metric": f"NDCG@{min(10, max_k)}"}
    scores = {model: exp.run(model, **settings)["test_result"] for model in ("InvRL", "UltraGCNMM")}
    table = pd.DataFrame({"K": ks, **{m: [r[f"ndcg@{k}"] for k in ks] for m, r in scores.items()}})
    figure, ax = plt.subplots(figsize=(6, 3.5))
    for model, label in (("UltraGCNMM", "UltraGCN-MM"), ("InvRL", "InvRL")):
        ax.plot(table["K"], table[model], marker="o", label=label)
    ax.set(title=f"NDCG@K on {exp.dataset} (test)", xlabel="K", ylabel="NDCG@K")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return exp.write("fig3_ndcg_at_k", table, figure)


def mask_values(exp: Experiment, record_path: str | None = None) -> tuple[Path, Path]:
    """Fig. 4: the final mask value of every content dimension, one panel per modality.

    On the synthetic test bed (a ``truth.json`` beside the atomic files) each dimension also
    gets its planted role, invariant or spurious, as a ``role`` column and bar colour."""
    record = exp.record(record_path)
    mask, fields = record["mask"][-1]["mask"], record["mask_fields"]
    roles = planted_roles(exp.data_folder)
    rows = []
    for field, columns in layout_slices(fields):
        rows += [{"field": field, "dim": d, "mask": value} for d, value in enumerate(mask[columns])]
    table = pd.DataFrame(rows)
    if roles:
        table["role"] = [roles.get((f, d), "") for f, d in zip(table["field"], table["dim"])]
    figure, axes = plt.subplots(len(fields), 1, figsize=(7, 2.2 * len(fields)), squeeze=False,
                                constrained_layout=True)
    for ax, (field, _) in zip(axes[:, 0], fields):
        part = table[table["field"] == field]
        for role, shown in part.groupby("role") if roles else [("", part)]:  # invariant, then spurious
            label = f"{role or 'no planted role'} (mean {shown['mask'].mean():.3f})" if roles else None
            ax.bar(shown["dim"], shown["mask"], width=0.8, color=ROLE_COLOURS[role], label=label)
        # a gate near 0 draws no visible bar: mark it, so it is not read as missing
        zeros = part[part["mask"] < INVISIBLE_GATE]
        ax.plot(zeros["dim"], zeros["mask"], "x", color="black", markersize=4,
                label=f"m < {INVISIBLE_GATE:g}" if len(zeros) else None)
        ax.set(ylim=(-0.05, 1.25), ylabel="m", title=field)  # room above 1 for the legend
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if roles or len(zeros):
            ax.legend(loc="upper right", fontsize="small", ncol=3)
    axes[-1, 0].set_xlabel("content dimension")
    figure.suptitle(f"Invariant mask on {exp.dataset}")
    return exp.write("fig4_mask_values", table, figure)


ROLE_COLOURS = {"": "tab:blue", "invariant": "tab:green", "spurious": "tab:red"}


def planted_roles(data_folder: Path | None) -> dict[tuple[str, int], str]:
    """(field, dim) -> "invariant" / "spurious" from the test bed's ``truth.json``; {} elsewhere."""
    truth_file = data_folder / "truth.json" if data_folder else None
    if truth_file is None or not truth_file.is_file():
        return {}
    roles = {}
    for field, info in json.loads(truth_file.read_text())["modalities"].items():
        for role in ("invariant", "spurious"):
            roles.update({(field, d): role for d in info.get(f"{role}_dims", [])})
    return roles


def moved_share(exp: Experiment, record_path: str | None = None) -> tuple[Path, Path]:
    """Fig. 5: share of interactions moved at each partition round."""
    table = pd.DataFrame(exp.record(record_path)["partition"])[["iteration", "round", "moved_share"]]
    table.insert(0, "partition_round", range(1, len(table) + 1))
    figure, ax = plt.subplots(figsize=(6, 3.5))
    for iteration, part in table.groupby("iteration"):
        ax.plot(part["partition_round"], part["moved_share"], marker="o", label=f"iteration {iteration}")
    ax.set(title=f"Moved interactions on {exp.dataset}", xlabel="partition round", ylabel="moved share")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return exp.write("fig5_moved_share", table, figure)


def num_envs(exp: Experiment, grid: tuple[int, ...] = ENV_GRID) -> tuple[Path, Path]:
    """Fig. 6: test accuracy of InvRL against |E|."""
    rows = []
    for envs in grid:
        result = exp.run("InvRL", num_envs=envs)["test_result"]
        rows.append({"num_envs": envs, **{k: result[k] for k in TOP10}})
    table = pd.DataFrame(rows)
    figure, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in zip(TOP10, ("P@10", "R@10", "N@10")):
        ax.plot(table["num_envs"], table[key], marker="o", label=label)
    ax.set(title=f"InvRL vs |E| on {exp.dataset} (test)", xlabel="|E|", ylabel="score")
    ax.set_xticks(list(grid))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return exp.write("fig6_num_envs", table, figure)


RECOVERY_SEEDS = (2020, 2021, 2022)


def recovery(exp: Experiment, seeds: tuple[int, ...] = RECOVERY_SEEDS) -> tuple[Path, Path]:
    """M3 and M4 against the planted truth: for every seed and |E| in (the dataset's, 2),
    the last partition round's ARI and purity, the final mask's ROC-AUC and gate ratio,
    the penalty's mean share of m's gradient in the last iteration, and test NDCG@10."""
    dataset_envs = exp.run_config("InvRL")["num_envs"]
    rows = []
    for num_envs_ in dict.fromkeys((dataset_envs, 2)):
        for seed in seeds:
            result = exp.run("InvRL", num_envs=num_envs_, seed=seed)
            record = json.loads(Path(result["record_path"]).read_text())
            last_round, last_mask = record["partition"][-1], record["mask"][-1]
            if "ari" not in last_round or "auc" not in last_mask:
                raise ValueError(f"recovery: no planted truth for {exp.dataset} (truth.json and train_env.npy "
                                 "in the dataset folder or truth_dir)")
            rows.append({"num_envs": num_envs_, "seed": seed, "ari": last_round["ari"],
                         "purity": last_round["purity"], "mask_auc": last_mask["auc"],
                         "gate_ratio": last_mask["gate_ratio"],
                         "penalty_share": sum(e["penalty_share"] for e in last_mask["epochs"]) / len(last_mask["epochs"]),
                         "ndcg@10": result["test_result"]["ndcg@10"]})
    table = pd.DataFrame(rows)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.5), constrained_layout=True)
    for ax, keys in zip(axes, (("ari", "purity"), ("mask_auc",), ("ndcg@10",))):
        summary = table.groupby("num_envs")[list(keys)].agg(["mean", "std"])
        positions = range(len(summary))
        for k, key in enumerate(keys):
            ax.bar([p + 0.35 * k for p in positions], summary[(key, "mean")], width=0.3,
                   yerr=summary[(key, "std")].fillna(0), capsize=3, label=key)
        ax.set_xticks([p + 0.175 * (len(keys) - 1) for p in positions], [f"|E| = {e}" for e in summary.index])
        ax.set(title=", ".join(keys) + f" ({len(seeds)} seeds)")
        ax.legend(loc="lower right")
    figure.suptitle(f"Recovery of the planted truth on {exp.dataset}")
    return exp.write("recovery", table, figure)


def _diagnose(exp: Experiment, truth_dir: str | None = None):
    from recbole_invrl.benchmark.diagnose import diagnose

    return diagnose(exp, truth_dir)


def _fair(exp: Experiment):
    from recbole_invrl.benchmark.fair import fair

    return fair(exp)


EXPERIMENTS: dict[str, Callable[..., tuple[Path, ...]]] = {
    "table3": mask_ablation,
    "fig3": ndcg_at_k,
    "fig4": mask_values,
    "fig5": moved_share,
    "fig6": num_envs,
    "recovery": recovery,
    "diagnose": _diagnose,
    "fair": _fair,
}


def main(argv: list[str] | None = None) -> int:
    """``run_experiment.py`` / ``recbole-invrl-experiment``: one experiment on one dataset."""
    parser = argparse.ArgumentParser(description="Run one of the paper's experiments (Table 3, Fig. 3-6), the "
                                     "diagnosis or the equal-budget comparison; write its tables and figures.")
    parser.add_argument("--experiment", required=True, help=", ".join(EXPERIMENTS))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", default=None, help="folder for the CSV and PNG (results/<dataset>)")
    parser.add_argument("--record", default=None, help="InvRL run record for fig4/fig5")
    parser.add_argument("--truth", default=None, help="diagnose: folder with truth.json / train_env.npy")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    args, _ = parser.parse_known_args(argv)  # other --key=value pairs are read by RecBole's Config
    if args.experiment not in EXPERIMENTS:
        print(f"error: --experiment: unknown '{args.experiment}'; expected one of {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    config_files = args.config_files.split() if args.config_files else None
    try:
        config = Config("InvRL", args.dataset, config_files)
        ensure_dataset_files(config)
    except (MissingDatasetError, SettingsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    experiment = Experiment(args.dataset, args.out or f"results/{args.dataset}", config_files=config_files,
                            data_folder=config["data_path"])  # RecBole's data_path ends in the dataset
    extra = {"record_path": args.record} if args.experiment in ("fig4", "fig5") else {}
    if args.experiment == "diagnose":
        extra = {"truth_dir": args.truth}
    for path in EXPERIMENTS[args.experiment](experiment, **extra):
        print(f"wrote {path}")
    return 0
