"""``fair``: InvRL against its backbone at equal tuning, with the controls that isolate the mask.

    python run_experiment.py --experiment=fair --dataset=D [--out=results/D] [--key=value ...]

1. The backbone (``invrl_backbone``: UltraGCN-MM by default) is tuned on the validation
   split: every value of its regularisation key in ``BACKBONE_GRIDS`` (UltraGCN-MM: the
   paper's grid for the L2 on W) is run with the first seed, the value with the best
   validation score is kept and run with the other seeds. InvRL runs with its defaults (no
   trial of its own): it gets less tuning than the backbone, never more.
2. InvRL on every seed, then controls with InvRL's own final settings (its
   ``final_mask_forms``, ``final_proj_reg_weight`` and schedule), each through
   ``fixed_mask`` or a setting:
   - ``full``: the final model on m = 1 (the full content): the gain of the final settings;
   - ``shuffled``: the learned mask's values on randomly permuted dimensions (same values,
     same mean, random dims): the gain of a mask of that shape, not of the dims it picks;
   - ``single_env``: InvRL with one environment (|E| = 1, where the penalty is zero) at
     the same budget: the gain of a learned gate without environments;
   - ``oracle`` (with a planted truth): 1 on the invariant dims, 0 on the spurious ones.
3. Over UltraGCN-MM, InvRL once more with ``final_proj_reg_weight`` set to the backbone's grid:
   its final stage tries each value (with each form) and keeps the best on validation, so the
   key the two models share gets the same grid, chosen on the same split.

Every run is appended to ``fair.jsonl`` (``fair-<backbone>.jsonl`` for another backbone) as it ends,
and the same command run again keeps the runs it finds there and runs only the missing ones (its test result is kept for the
report, never read by a choice); ``fair.md`` is the table, written from that file after
every run, so an interrupted experiment leaves a table of what ran.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recbole_invrl.benchmark.tuning import choose_on_validation
from recbole_invrl.compat import atomic_write
from recbole_invrl.invariance.truth import PlantedTruth

BACKBONE_GRIDS = {  # backbone -> (its regularisation key, the values tried on validation)
    "UltraGCNMM": ("proj_reg_weight", (0.01, 0.1, 1.0)),
    "VBPR": ("reg_weight", (0.00001, 0.0001, 0.001)),
    "DUIF": ("reg_weight", (0.00001, 0.0001, 0.001)),
    "MMGCN": ("reg_weight", (0.00001, 0.0001, 0.001)),
    "GRCN": ("reg_weight", (0.00001, 0.0001, 0.001)),
}
BACKBONE_GRID = BACKBONE_GRIDS["UltraGCNMM"][1]
SEEDS = (2020, 2021, 2022)
METRIC = "ndcg@10"


class FairComparison:
    """Runs the comparison for one dataset through an ``Experiment`` and keeps its log."""

    def __init__(self, exp, seeds: Sequence[int] = SEEDS, grid: Sequence[float] | None = None,
                 backbone: str = "UltraGCNMM"):
        if backbone not in BACKBONE_GRIDS:
            raise ValueError(f"invrl_backbone: the fair experiment knows the grids of {', '.join(BACKBONE_GRIDS)}, "
                             f"not {backbone!r}")
        self.exp, self.seeds, self.backbone = exp, tuple(seeds), backbone
        self.key, default_grid = BACKBONE_GRIDS[backbone]
        self.grid = tuple(grid or default_grid)
        self.stem = "fair" if backbone == "UltraGCNMM" else f"fair-{backbone}"
        self.log_path = exp.out / f"{self.stem}.jsonl"
        self.rows: list[dict[str, Any]] = []
        self.finished: dict[tuple, dict[str, Any]] = {}

    def run(self) -> tuple[Path, Path]:
        if self.log_path.is_file():  # a rerun keeps what finished
            for line in self.log_path.read_text().splitlines():
                row = json.loads(line)
                self.finished[_run_key(row["role"], row["seed"], row["overrides"])] = row
        self.log_path.write_text("")
        chosen = self.tune_backbone()
        for seed in self.seeds[1:]:
            self._run("backbone", self.backbone, seed, {self.key: chosen})
        if self.backbone == "UltraGCNMM" and not self._invrl_chooses_grid():
            # the key the two share gets the same grid, chosen in the run
            for seed in self.seeds:
                self._run("invrl_final_grid", "InvRL", seed, {"final_proj_reg_weight": list(self.grid)})
        for seed in self.seeds:
            self.controls(seed, self._run("invrl", "InvRL", seed, {}))
        return self.log_path, self.write_table()

    def _invrl_chooses_grid(self) -> bool:
        """Whether InvRL's own final L2 already is the backbone's grid, chosen in the run."""
        chosen = self.exp.run_config("InvRL")["final_proj_reg_weight"]
        return isinstance(chosen, list) and sorted(chosen) == sorted(self.grid)

    def tune_backbone(self) -> float:
        """The backbone's regularisation chosen on the first seed's validation score."""
        trials = [self._run("backbone_trial", self.backbone, self.seeds[0], {self.key: value}) for value in self.grid]
        return choose_on_validation(trials)["overrides"][self.key]

    def controls(self, seed: int, invrl: dict[str, Any]) -> None:
        """The controls of one seed's InvRL run (``invrl``: its result, with its mask and record)."""
        roles = ("full", "shuffled", "oracle")
        if all(_run_key(role, seed, {}) in self.finished for role in roles):
            for role in roles:
                self._keep(self.finished[_run_key(role, seed, {})])
        else:
            if not Path(invrl.get("mask_path") or "").is_file():  # a kept run whose files are gone
                self.finished.pop(_run_key("invrl", seed, {}))
                self.rows = [r for r in self.rows if not (r["role"] == "invrl" and r["seed"] == seed)]
                invrl = self._run("invrl", "InvRL", seed, {})
            mask, truth = np.load(invrl["mask_path"]), self._truth(invrl["record_path"])
            rng = np.random.default_rng(seed)
            masks = {"full": np.ones_like(mask), "shuffled": rng.permutation(mask)}
            if truth is not None and truth.roles is not None:
                masks["oracle"] = truth.oracle_mask()
            with tempfile.TemporaryDirectory(prefix="invrl-fair-") as folder:
                for name, values in masks.items():
                    path = Path(folder) / f"{name}.npy"
                    np.save(path, values.astype(np.float32))
                    self._run(name, "InvRL", seed, {"fixed_mask": str(path)})
        self._run("single_env", "InvRL", seed, {"num_envs": 1})  # M3 then has one environment: no penalty

    def _truth(self, record_path: str) -> PlantedTruth | None:
        """The planted truth in the dataset's folder, for the layout and training size of an
        InvRL run (from its record)."""
        record = json.loads(Path(record_path).read_text())
        n_train = sum(record["partition"][0]["env_sizes"]) if record["partition"] else 0
        folder = self.exp.data_folder
        return PlantedTruth.load(folder, [tuple(f) for f in record["mask_fields"]], n_train) if folder else None

    def _run(self, role: str, model: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in overrides.items() if k != "fixed_mask"}
        row = self.finished.get(_run_key(role, seed, kept))
        if row is None:
            result = self.exp.run(model, seed=seed, **overrides)
            record = _record(result)
            row = {"role": role, "model": model, "seed": seed, "overrides": kept,
                   "best_valid_score": result["best_valid_score"], "test": result["test_result"],
                   "final_form": record.get("final_form"), "final_reg": record.get("final_proj_reg_weight"),
                   "final_regs_tried": sorted({e["final_proj_reg_weight"] for e in record.get("final") or []
                                               if "final_proj_reg_weight" in e}),
                   "mask_auc": _mask_auc(record),
                   "mask_path": result.get("mask_path"), "record_path": result.get("record_path")}
            self.finished[_run_key(role, seed, kept)] = row
        self._keep(row)
        return row

    def _keep(self, row: dict[str, Any]) -> None:
        """Add a run to the rows, the log and the table."""
        self.rows.append(row)
        with open(self.log_path, "a") as log:
            log.write(json.dumps(row) + "\n")
        self.write_table()

    def write_table(self) -> Path:
        path = self.exp.out / f"{self.stem}.md"
        text = fair_table(self.rows, self.exp.dataset, self.backbone, self.key)
        atomic_write(str(path), lambda tmp: Path(tmp).write_text(text), ".md")
        return path


def _run_key(role: str, seed: int, overrides: dict[str, Any]) -> tuple:
    return role, int(seed), json.dumps(overrides, sort_keys=True)


def _record(result: dict[str, Any]) -> dict[str, Any]:
    """The InvRL run record a result or row names ({} for other models)."""
    record = result.get("record_path")
    return json.loads(Path(record).read_text()) if record and Path(record).is_file() else {}


def _mask_auc(record: dict[str, Any]) -> float | None:
    """ROC-AUC of the learned mask against the planted dims (last iteration), if scored."""
    masks = record.get("mask") or []
    return masks[-1].get("auc") if masks else None


def _by_role(rows: list[dict[str, Any]]) -> tuple[dict[str, list[dict]], dict[str, Any] | None]:
    """Rows by role, the backbone's trial chosen on validation counted as its first seed's
    ``backbone`` run; and that trial (None before any)."""
    trials = [r for r in rows if r["role"] == "backbone_trial"]
    chosen = choose_on_validation(trials) if trials else None
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["role"] != "backbone_trial" or row is chosen:
            groups.setdefault("backbone" if row is chosen else row["role"], []).append(row)
    return groups, chosen


def fair_table(rows: list[dict[str, Any]], dataset: str, backbone: str = "UltraGCNMM",
               key: str = "proj_reg_weight") -> str:
    """Test N@10 mean ± std over seeds per role, with validation scores and chosen settings."""
    from recbole_invrl.benchmark.table import display_name

    name = display_name(backbone)
    labels = {
        "backbone": f"{name}, {key} chosen on validation",
        "invrl": "InvRL (defaults)" if backbone == "UltraGCNMM" else f"InvRL over {name} (defaults)",
        "invrl_final_grid": f"InvRL, final_proj_reg_weight chosen on validation in the run (the {key} grid)",
        "full": "control: InvRL's final model on m = 1",
        "shuffled": "control: learned mask on shuffled dims",
        "single_env": "control: InvRL with one environment",
        "oracle": "oracle mask (planted truth)",
    }
    groups, chosen = _by_role(rows)
    lines = [f"# Equal-budget comparison on {dataset}", "",
             "Test NDCG@10, mean ± sample std over seeds; validation NDCG@10 beside it. "
             "Written by `python run_experiment.py --experiment=fair --dataset=" + dataset
             + ("" if backbone == "UltraGCNMM" else f" --invrl_backbone={backbone}") + "`.", "",
             "| Run | Test N@10 | Valid N@10 | Seeds | Final form (per seed) |", "|---|---|---|---|---|"]
    for role, label in labels.items():
        group = groups.get(role)
        if not group:
            continue
        test = [r["test"][METRIC] for r in group]
        valid = [r["best_valid_score"] for r in group]
        forms = ", ".join(str(r["final_form"]) + (f" @ {r['final_reg']:g}" if role == "invrl_final_grid"
                                                   and r.get("final_reg") is not None else "")
                          for r in group) if role != "backbone" else ""
        lines.append(f"| {label} | {_mean_std(test)} | {_mean_std(valid)} | {len(group)} | {forms} |")
    lines += ["", "Backbone trials (first seed; the chosen one is marked):", "",
              f"| {key} | Valid N@10 | Test N@10 |", "|---|---|---|"]
    for row in rows:
        if row["role"] == "backbone_trial":
            mark = " (chosen)" if row is chosen else ""
            lines.append(f"| {row['overrides'][key]}{mark} | {row['best_valid_score']:.4f} | "
                         f"{row['test'][METRIC]:.4f} |")
    if groups.get("invrl") and groups.get("backbone"):
        gain = np.mean([r["test"][METRIC] for r in groups["invrl"]]) / np.mean(
            [r["test"][METRIC] for r in groups["backbone"]]) - 1
        lines += ["", f"InvRL over the tuned {name}: {gain:+.1%} (means over the seeds run so far)."]
    return "\n".join(lines) + "\n"


def _final_l2(invrl_rows: list[dict[str, Any]]) -> str:
    """InvRL's final L2 in a data set's runs: ``on valid of [...]`` where the final stage chose it
    from several values, else the value(s) used; '–' for rows that did not record it."""
    tried = {tuple(r["final_regs_tried"]) for r in invrl_rows if r.get("final_regs_tried")}
    if any(len(values) > 1 for values in tried):
        return "on valid of " + ", ".join(f"{v:g}" for v in sorted({v for values in tried for v in values}))
    used = sorted({r["final_reg"] for r in invrl_rows if r.get("final_reg") is not None})
    return ", ".join(f"{v:g}" for v in used) or "–"


def _oracle_share(by_role: dict[str, list[float]]) -> str:
    """(InvRL - m = 1) / (oracle - m = 1) on the means; '–' where the oracle gains nothing."""
    if not all(by_role.get(role) for role in ("invrl", "full", "oracle")):
        return "–"
    full = np.mean(by_role["full"])
    oracle_gain = np.mean(by_role["oracle"]) - full
    if oracle_gain <= 0:
        return "no oracle gain"
    return f"{(np.mean(by_role['invrl']) - full) / oracle_gain:.0%}"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def fair(exp) -> tuple[Path, Path]:
    """The ``fair`` experiment over the backbone the run's ``invrl_backbone`` names: writes
    ``fair.jsonl`` and ``fair.md`` (``fair-<backbone>.*`` for a backbone other than UltraGCN-MM)."""
    backbone = exp.run_config("InvRL")["invrl_backbone"] or "UltraGCNMM"
    return FairComparison(exp, backbone=backbone).run()


SUMMARY_ROLES = (("backbone", "tuned backbone"), ("invrl", "InvRL"), ("invrl_final_grid", "InvRL, final L2 on valid"),
                 ("full", "m = 1"), ("shuffled", "shuffled mask"), ("single_env", "one environment"),
                 ("oracle", "oracle mask"))


def fair_summary(paths: Sequence[Path]) -> str:
    """One row per ``fair*.jsonl``: each role's test N@10 (mean ± std over seeds) and InvRL's
    change over the tuned backbone, for the README."""
    lines = ["| data set | " + " | ".join(label for _, label in SUMMARY_ROLES)
             + " | InvRL vs backbone | InvRL's final L2 | mask AUC | InvRL's share of the oracle's gain over m = 1 |",
             "|---" * (len(SUMMARY_ROLES) + 5) + "|"]
    for path in paths:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        by_role = {role: [r["test"][METRIC] for r in group] for role, group in _by_role(rows)[0].items()}
        cells = [_mean_std(by_role[role]) if by_role.get(role) else "–" for role, _ in SUMMARY_ROLES]
        gain = (f"{np.mean(by_role['invrl']) / np.mean(by_role['backbone']) - 1:+.1%}"
                if by_role.get("invrl") and by_role.get("backbone") else "–")
        final_l2 = _final_l2(_by_role(rows)[0].get("invrl", []))
        aucs = [auc for r in rows if r["role"] in ("invrl", "invrl_final_grid")
                for auc in [r.get("mask_auc") or _mask_auc(_record(r))] if auc is not None]
        auc = f"{min(aucs):.3f}-{max(aucs):.3f}" if aucs else "–"
        lines.append(f"| {Path(path).parent.name} ({Path(path).stem}) | " + " | ".join(cells)
                     + f" | {gain} | {final_l2} | {auc} | {_oracle_share(by_role)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m recbole_invrl.benchmark.fair results/*/fair.jsonl
    import sys

    print(fair_summary([Path(p) for p in sys.argv[1:]]), end="")
