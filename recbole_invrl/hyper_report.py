"""What ``run_hyper.py`` writes: one record per trial, RecBole's result text and the
trial tables (CSV and Markdown, through ``benchmark.render``), each rewritten atomically."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from recbole.trainer import HyperTuning
from recbole.utils.utils import dict2str

from recbole_invrl.benchmark.render import csv_table, markdown_table
from recbole_invrl.compat import write_text_atomic
from recbole_invrl.search_space import override_text

STATUS_OK, STATUS_FAILED = "ok", "failed"


@dataclass
class TrialRecord:
    """What one trial gave."""

    number: int
    params: dict[str, Any]
    status: str = STATUS_FAILED
    valid_score: float | None = None
    best_valid_result: dict[str, float] | None = None
    test_result: dict[str, float] | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class OutputPaths:
    """Where a search writes: the RecBole-style text file, the tables and the trials' files."""

    text: Path

    @property
    def csv(self) -> Path:
        return self.text.with_suffix(".csv")

    @property
    def markdown(self) -> Path:
        return self.text.with_suffix(".md")

    @property
    def trials_dir(self) -> Path:
        return self.text.with_suffix(".trials")


def export_text(records: Sequence[TrialRecord], best: TrialRecord | None) -> str:
    """RecBole's ``export_result`` text, failed trials with their error, the best trial last."""
    blocks = []
    for record in records:
        head = HyperTuning.params2str(record.params)
        if record.status == STATUS_OK:
            blocks.append(f"{head}\nValid result:\n{dict2str(record.best_valid_result or {})}\n"
                          f"Test result:\n{dict2str(record.test_result or {})}\n")
        else:
            blocks.append(f"{head}\nFailed: {record.error}\n")
    if best is not None:
        blocks.append(f"Best trial {best.number}: {HyperTuning.params2str(best.params)}\n")
    elif records:
        blocks.append(f"No best trial: all {len(records)} trials failed.\n")
    return "\n".join(blocks)


def table_rows(records: Sequence[TrialRecord], best: TrialRecord | None, valid_metric: str,
               digits: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and one row per trial, ``best`` marked; scores rounded to ``digits`` if given."""
    def number(value: float | None) -> str:
        if value is None:
            return ""
        return repr(value) if digits is None else f"{value:.{digits}f}"

    param_names = list(dict.fromkeys(n for r in records for n in r.params))
    metrics = list(dict.fromkeys(m for r in records for m in (r.test_result or {})))
    header = ["trial", "best", "status", *param_names, f"valid {valid_metric}",
              *(f"test {m}" for m in metrics), "seconds", "error"]
    rows = []
    for r in records:
        test = r.test_result or {}
        rows.append([str(r.number), "best" if r is best else "", r.status,
                     *(override_text(r.params[n]) if n in r.params else "" for n in param_names),
                     number(r.valid_score), *(number(test.get(m)) for m in metrics),
                     f"{r.seconds:.1f}", r.error or ""])
    return header, rows


def write_outputs(paths: OutputPaths, records: Sequence[TrialRecord], best: TrialRecord | None,
                  valid_metric: str, title: str) -> None:
    """Rewrite the text file and the two tables, each atomically."""
    csv_text = csv_table(*table_rows(records, best, valid_metric))
    header, rows = table_rows(records, best, valid_metric, digits=4)
    rows = [[f"**{c}**" if row[1] == "best" and c else c for c in row] for row in rows]
    markdown = markdown_table(header, rows, title)
    for path, text in ((paths.text, export_text(records, best)), (paths.csv, csv_text),
                       (paths.markdown, markdown)):
        write_text_atomic(text, path)
