"""The benchmark table, shaped like Table 2 of the InvRL paper: ``table.md`` and ``table.csv``.

One row per model with the test metrics as mean ± std over seeds (std is the sample standard
deviation, ``ddof=1``; with one seed it is left blank), the mean wall seconds of a run, the
best value of each metric in bold (the second best underlined), crashed runs with their error,
and a final row "%Impv. of InvRL over UltraGCN-MM".

Input rows are the records of ``runs.jsonl`` (see ``runner.py``): dicts with ``model``,
``seed``, ``status`` (``"ok"`` or ``"crashed"``), ``test_result`` (RecBole's
``{"ndcg@10": ...}``), ``wall_seconds`` and ``error``. When a (model, seed) appears more than
once, the last record wins (a crashed run that was retried).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from recbole_invrl.benchmark.render import csv_table, markdown_table

# (column label, key in RecBole's result dict)
Metric = tuple[str, str]
DEFAULT_METRICS: tuple[Metric, ...] = (
    ("P@10", "precision@10"),
    ("R@10", "recall@10"),
    ("N@10", "ndcg@10"),
)
# Top-k metrics RecBole 1.2.1 registers; the table takes only these.
TOPK_METRICS = {"precision": "P", "recall": "R", "ndcg": "N", "hit": "Hit", "mrr": "MRR", "map": "MAP"}
METRIC_ALIASES = {short.lower(): name for name, short in TOPK_METRICS.items()}
DISPLAY_NAMES = {"UltraGCNMM": "UltraGCN-MM"}
IMPROVED_MODEL, BASE_MODEL = "InvRL", "UltraGCNMM"
IMPROVEMENT_LABEL = f"%Impv. of {IMPROVED_MODEL} over {DISPLAY_NAMES[BASE_MODEL]}"
DIGITS = 4
MAX_NOTE_CHARS = 300


def parse_metrics(text: str | Sequence[str] | None) -> list[Metric]:
    """``"P@10,R@10,N@10"`` (or ``Precision@10``, ``ndcg@20``, ``Hit@5`` ...) -> columns.

    Raises ``ValueError`` naming the first entry that is not a RecBole top-k metric at a
    positive k."""
    if text is None:
        return list(DEFAULT_METRICS)
    items = text.split(",") if isinstance(text, str) else list(text)
    metrics: list[Metric] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, sep, k = item.partition("@")
        name = METRIC_ALIASES.get(name.lower(), name.lower())
        if not sep or name not in TOPK_METRICS or not k.isdigit() or int(k) <= 0:
            raise ValueError(
                f"unknown metric '{item}': expected NAME@K with NAME one of "
                f"{', '.join(sorted(TOPK_METRICS))} (or P, R, N) and K a positive integer"
            )
        metric = (f"{TOPK_METRICS[name]}@{int(k)}", f"{name}@{int(k)}")
        if metric not in metrics:
            metrics.append(metric)
    if not metrics:
        raise ValueError("no metric given")
    return metrics


def display_name(model: str) -> str:
    """``UltraGCNMM`` -> ``UltraGCN-MM``; an entry with overrides, ``InvRL@invrl_backbone=VBPR``,
    -> ``InvRL (invrl_backbone=VBPR)``."""
    model, *pairs = model.split("@")
    name = DISPLAY_NAMES.get(model, model)
    return f"{name} ({', '.join(pairs)})" if pairs else name


def latest_rows(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The last record of every (model, seed), in order of first appearance."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        latest[(row["model"], int(row["seed"]))] = row
    return latest


@dataclass
class ModelSummary:
    """One table row: a model's metrics over the seeds that finished."""

    model: str
    seeds_ok: list[int] = field(default_factory=list)
    crashed: list[tuple[int, str]] = field(default_factory=list)  # (seed, error)
    mean: dict[str, float | None] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)
    seconds: float | None = None  # mean wall seconds of the finished runs
    tuned_from: str | None = None  # the entry this one was chosen for (run_benchmark.py --tune)
    tuning: str = ""  # how it was chosen, for the Note column

    @property
    def name(self) -> str:
        return display_name(self.model)

    def note(self) -> str:
        """``crashed (seeds 2020, 2021): ValueError: ...``, one entry per distinct error."""
        by_error: dict[str, list[int]] = {}
        for seed, error in self.crashed:
            by_error.setdefault(error, []).append(seed)
        parts = []
        for error, seeds in by_error.items():
            label = "seed" if len(seeds) == 1 else "seeds"
            parts.append(f"crashed ({label} {', '.join(map(str, seeds))}): {error}")
        return "; ".join([self.tuning, *parts] if self.tuning else parts)


def summarize(
    rows: Iterable[dict[str, Any]],
    metrics: Sequence[Metric] = DEFAULT_METRICS,
    model_order: Sequence[str] | None = None,
    tuned: dict[str, tuple[str, str]] | None = None,
) -> list[ModelSummary]:
    """Aggregate run records per model: mean and sample std of every metric over finished
    seeds, mean wall seconds, and the errors of crashed seeds.

    Models come in ``model_order`` first, then in order of first appearance. ``tuned`` maps
    an entry chosen by tuning to (the entry it was chosen for, how it was chosen)."""
    summaries: dict[str, ModelSummary] = {}
    for model in model_order or ():
        summaries.setdefault(model, ModelSummary(model))
    values: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    for (model, seed), row in latest_rows(rows).items():
        summary = summaries.setdefault(model, ModelSummary(model))
        if row.get("status") == "ok":
            summary.seeds_ok.append(seed)
            result = row.get("test_result") or {}
            for _, key in metrics:
                if result.get(key) is not None:
                    values.setdefault(model, {}).setdefault(key, []).append(float(result[key]))
            if row.get("wall_seconds") is not None:
                seconds.setdefault(model, []).append(float(row["wall_seconds"]))
        else:
            summary.crashed.append((seed, str(row.get("error") or "unknown error")))
    for model, summary in summaries.items():
        for _, key in metrics:
            xs = values.get(model, {}).get(key, [])
            summary.mean[key] = statistics.fmean(xs) if xs else None
            summary.std[key] = statistics.stdev(xs) if len(xs) > 1 else None
        xs = seconds.get(model, [])
        summary.seconds = statistics.fmean(xs) if xs else None
    for model, (source, how) in (tuned or {}).items():
        if model in summaries:
            summaries[model].tuned_from, summaries[model].tuning = source, how
    # A model named in model_order that has no record at all is left out.
    return [s for s in summaries.values() if s.seeds_ok or s.crashed]


def improvement(summaries: Sequence[ModelSummary], metrics: Sequence[Metric] = DEFAULT_METRICS
                ) -> dict[str, float | None] | None:
    """``100 * (InvRL - UltraGCN-MM) / UltraGCN-MM`` per metric, on the means; ``None`` when
    either model is missing (a metric is ``None`` where a mean is missing or the base is 0)."""
    by_model = {s.tuned_from or s.model: s for s in summaries}
    improved, base = by_model.get(IMPROVED_MODEL), by_model.get(BASE_MODEL)
    if improved is None or base is None or not improved.seeds_ok or not base.seeds_ok:
        return None
    result: dict[str, float | None] = {}
    for _, key in metrics:
        a, b = improved.mean.get(key), base.mean.get(key)
        result[key] = None if a is None or b is None or b == 0 else 100.0 * (a - b) / b
    return result


def _ranks(summaries: Sequence[ModelSummary], key: str) -> dict[str, int]:
    """1 for the best mean (ties share it, compared at the printed precision), 2 for the next."""
    values = sorted({round(s.mean[key], DIGITS) for s in summaries if s.mean.get(key) is not None},
                    reverse=True)
    ranks = {}
    for s in summaries:
        if s.mean.get(key) is not None:
            position = values.index(round(s.mean[key], DIGITS)) + 1
            if position <= 2:
                ranks[s.model] = position
    return ranks


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{DIGITS}f}" if std is None else f"{mean:.{DIGITS}f} ± {std:.{DIGITS}f}"


def _truncate(text: str, limit: int = MAX_NOTE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seeds_cell(summary: ModelSummary) -> str:
    total = len(summary.seeds_ok) + len(summary.crashed)
    return str(total) if not summary.crashed else f"{len(summary.seeds_ok)}/{total}"


def render_markdown(summaries: Sequence[ModelSummary], metrics: Sequence[Metric] = DEFAULT_METRICS,
                    title: str | None = None) -> str:
    """The markdown table (with a title line and a legend when ``title`` is given)."""
    lines = []
    if title:
        lines += [f"# {title}", ""]
    seeds = sorted({seed for s in summaries for seed in s.seeds_ok} |
                   {seed for s in summaries for seed, _ in s.crashed})
    lines += [
        f"Test-set {', '.join(label for label, _ in metrics)}: mean ± sample std over seeds "
        f"({', '.join(map(str, seeds))}); a single seed has no std. Best in **bold**, second "
        "best <u>underlined</u>. Time: mean wall seconds of a run (data, training, test).",
        "",
    ]
    header = ["Model", *(label for label, _ in metrics), "Time (s)", "Seeds", "Note"]
    ranks = {key: _ranks(summaries, key) for _, key in metrics}
    rows = []
    for s in summaries:
        cells = [s.name]
        for _, key in metrics:
            cell = _cell(s.mean.get(key), s.std.get(key))
            rank = ranks[key].get(s.model)
            cells.append(f"**{cell}**" if rank == 1 else f"<u>{cell}</u>" if rank == 2 else cell)
        cells += ["–" if s.seconds is None else f"{s.seconds:.1f}", _seeds_cell(s), _truncate(s.note())]
        rows.append(cells)
    impv = improvement(summaries, metrics)
    if impv is not None:
        rows.append([IMPROVEMENT_LABEL, *("–" if impv[key] is None else f"{impv[key]:+.2f}%" for _, key in metrics),
                     "", "", ""])
    return "\n".join(lines) + "\n" + markdown_table(header, rows)


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None or math.isnan(value) else repr(round(value, digits))


def render_csv(summaries: Sequence[ModelSummary], metrics: Sequence[Metric] = DEFAULT_METRICS) -> str:
    """One row per model (``<label> mean``, ``<label> std`` columns, std empty for one seed),
    then the improvement row (percentages in the mean columns)."""
    header = ["model", "name", "seeds_ok", "seeds_crashed"]
    for label, _ in metrics:
        header += [f"{label} mean", f"{label} std"]
    header += ["time_s mean", "error"]
    rows = []
    for s in summaries:
        row = [s.model, s.name, " ".join(map(str, s.seeds_ok)),
               " ".join(str(seed) for seed, _ in s.crashed)]
        for _, key in metrics:
            row += [_num(s.mean.get(key)), _num(s.std.get(key))]
        row += [_num(s.seconds, 3), s.note()]
        rows.append(row)
    impv = improvement(summaries, metrics)
    if impv is not None:
        rows.append(["%Impv.", IMPROVEMENT_LABEL, "", "", *(c for _, key in metrics for c in (_num(impv[key], 4), "")),
                     "", ""])
    return csv_table(header, rows)


def write_table(
    rows: Iterable[dict[str, Any]],
    out_dir: str | Path,
    metrics: Sequence[Metric] = DEFAULT_METRICS,
    title: str | None = None,
    model_order: Sequence[str] | None = None,
    tuned: dict[str, tuple[str, str]] | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/table.md`` and ``<out_dir>/table.csv`` atomically; return their paths."""
    from recbole_invrl.compat import write_text_atomic

    summaries = summarize(list(rows), metrics, model_order, tuned)
    out_dir = Path(out_dir)
    md_path, csv_path = out_dir / "table.md", out_dir / "table.csv"
    for path, text in ((md_path, render_markdown(summaries, metrics, title)),
                       (csv_path, render_csv(summaries, metrics))):
        write_text_atomic(text, path)
    return md_path, csv_path
