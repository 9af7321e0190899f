"""Benchmark runner: every (model, seed) of a ``plan`` on one dataset, each in its own subprocess.

    python run_benchmark.py --dataset=D [--models=Pop,BPR,...] [--seeds=2020,2021,2022]
        [--out=results/D] [--data_path=DIR] [--config_files="a.yaml b.yaml"]
        [--metrics=P@10,R@10,N@10] [--timeout=SECONDS] [--table_only] [--key=value ...]

Every run goes through ``recbole_invrl.quick_start.run_recbole_invrl`` with the same dataset,
split, metrics, early stopping and config files; the seed is the only thing that changes
between the runs of a model. Extra ``--key=value`` pairs are RecBole config overrides given to
every run on its command line (the highest precedence, as with ``run_recbole_invrl.py``).

- Each run is a child process (``python -m recbole_invrl.benchmark.runner --one ...``), so a
  crash, a timeout or an out-of-memory kill costs that run only; it is recorded with its
  error (the last line of its stderr) and the others still run.
- Each finished run is appended to ``<out>/runs.jsonl`` at once (one JSON line, flushed and
  fsynced). A rerun of the same command keeps and skips finished (model, seed) pairs and
  retries crashed ones. Runs made with other settings (dataset, config files, overrides) in
  the same ``--out`` are refused rather than mixed into one table.
- ``--metrics`` chooses the table's columns (default ``P@10,R@10,N@10``); every model's config
  must compute them (RecBole's ``metrics`` and ``topk`` keys, set in the dataset yaml or a
  ``--config_files`` yaml; ``--topk=[10,20]`` also works as an override).
- ``<out>/table.md`` and ``<out>/table.csv`` (``table.py``) are rewritten after every run
  from all records in ``runs.jsonl``.
- A model entry may carry its own overrides, ``Model@key=value[@key=value]``: e.g.
  ``--models=VBPR,InvRL@invrl_backbone=VBPR`` puts InvRL over VBPR in the table as its own
  row beside InvRL over UltraGCN-MM. Those keys apply to that entry only.
- Child logs: ``<out>/logs/<Model>-seed<S>.stderr.txt`` / ``.stdout.txt``; result JSON:
  ``<out>/results/``; checkpoints: ``<out>/saved/<Model>-seed<S>/`` (``--checkpoint_dir=``
  overrides it).

Exit codes: 0 every run finished; 1 some run crashed (the table is still written);
2 bad arguments, unknown model/dataset/metric or missing data, nothing run; 130 interrupted.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from recbole_invrl.benchmark.child import EXIT_INTERRUPTED, one_main, run_one_subprocess
from recbole_invrl.benchmark.plan import DEFAULT_MODELS, BenchmarkError, Plan, RunFn, parse_command_line, prepare
from recbole_invrl.benchmark.table import Metric, latest_rows, write_table
from recbole_invrl.benchmark.tuning import entry_trials, tuned_choices

RUNS_FILE = "runs.jsonl"
EXIT_CRASHED, EXIT_USAGE = 1, 2


# --------------------------------------------------------------------------- runs.jsonl

class RunStore:
    """``runs.jsonl``: one JSON record per finished run, appended and fsynced at once."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["model"], row["seed"] = str(row["model"]), int(row["seed"])
            except (ValueError, KeyError, TypeError):
                print(f"warning: {self.path}:{number}: unreadable record skipped", file=sys.stderr)
                continue
            rows.append(row)
        return rows

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=str) + "\n"
        with open(self.path, "ab+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:  # a record cut short by a crash stays on its own line
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------- the benchmark

def _metric_summary(row: dict[str, Any], metrics: Sequence[Metric]) -> str:
    result = row.get("test_result") or {}
    return ", ".join(f"{label} {result[key]:.4f}" for label, key in metrics if key in result)


def table_order(entries: Sequence[str]) -> list[str]:
    """Table rows in the order of ``DEFAULT_MODELS`` (the paper's Table 2 first, InvRL last),
    an entry with overrides after its model, other models after them; ties keep their order."""
    def rank(entry: str) -> tuple[int, bool]:
        model = entry.split("@", 1)[0]
        return (DEFAULT_MODELS.index(model) if model in DEFAULT_MODELS else len(DEFAULT_MODELS), "@" in entry)

    return sorted(dict.fromkeys(entries), key=rank)


def execute(plan: Plan, run_fn: RunFn | None = None, log: Callable[[str], None] | None = None) -> int:
    """Run every pending (model, seed) of ``plan``, record it, and rewrite the table."""
    run_fn = run_fn or run_one_subprocess
    log = log or (lambda text: print(text, flush=True))
    store = RunStore(plan.out_dir / RUNS_FILE)
    rows = store.load()
    foreign = [r for r in rows if r.get("settings") != plan.settings]
    if foreign and not plan.table_only:
        raise BenchmarkError(
            f"{store.path} holds {len(foreign)} run(s) made with other settings "
            f"(e.g. {foreign[0].get('settings')}, now {plan.settings}); use another --out or "
            "remove that file")
    def table() -> Path:
        tuned = tuned_choices(rows, plan.models, plan.seeds[0], plan.valid_bigger) if plan.tune else {}
        shown = [r for r in rows if r.get("tuning_of") is None or r["model"] in tuned]
        order = table_order([*(m for m in plan.models if not plan.tune), *(r["model"] for r in shown)])
        title = f"Benchmark on {plan.dataset}" + (f", every model tuned on validation ({plan.tune} trials)"
                                                   if plan.tune else "")
        md, _ = write_table(shown, plan.out_dir, plan.metrics, title, order, tuned)
        return md

    if plan.table_only:
        if not rows:
            raise BenchmarkError(f"no runs recorded in {store.path}")
        log(f"wrote {table()}")
        return _exit_code(rows)

    done = {key for key, row in latest_rows(rows).items() if row.get("status") == "ok"}
    pending = [(m, s) for m in plan.models for s in plan.seeds if (m, s) not in done]
    total = len(plan.models) * len(plan.seeds)
    from recbole_invrl.data import ml100k_mm

    if pending and plan.dataset == ml100k_mm.NAME and plan.config is not None:
        from recbole_invrl.data.utils import ensure_dataset_files

        ensure_dataset_files(plan.config)  # build it once, before the runs
    plan.out_dir.mkdir(parents=True, exist_ok=True)

    def run(entry: str, seed: int, prefix: str, tuning_of: str | None = None) -> None:
        if (entry, seed) in done:
            log(f"{prefix}: finished before, skipped")
            return
        log(f"{prefix}: running")
        row = dict(run_fn(plan.spec(entry, seed), plan.timeout))
        row.update(model=entry, seed=seed, dataset=plan.dataset, settings=plan.settings,
                   finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if tuning_of is not None:
            row["tuning_of"] = tuning_of
        store.append(row)
        rows.append(row)
        if row.get("status") == "ok":
            log(f"{prefix}: ok in {row.get('wall_seconds') or 0:.1f} s "
                f"(valid {row.get('best_valid_score')}; {_metric_summary(row, plan.metrics)})")
        else:
            log(f"{prefix}: CRASHED: {row.get('error')}")
        table()

    ran: list[tuple[str, int]] = []
    for number, model in enumerate(plan.models, 1):
        if not plan.tune:
            for seed in plan.seeds:
                ran.append((model, seed))
                run(model, seed, f"[{len(ran)}/{total}] {model} seed={seed}")
            continue
        trials = entry_trials(model, plan.tune, plan.seeds[0])
        for trial_number, trial in enumerate(trials, 1):
            ran.append((trial, plan.seeds[0]))
            run(trial, plan.seeds[0], f"[model {number}/{len(plan.models)}, trial {trial_number}/{len(trials)}] "
                f"{trial} seed={plan.seeds[0]}", tuning_of=model)
        chosen = list(tuned_choices(rows, [model], plan.seeds[0], plan.valid_bigger))
        if not chosen:
            log(f"[model {number}/{len(plan.models)}] {model}: every trial crashed; nothing to choose")
            continue
        log(f"[model {number}/{len(plan.models)}] {model}: chosen on validation: {chosen[0]}")
        for seed in plan.seeds[1:]:
            ran.append((chosen[0], seed))
            run(chosen[0], seed, f"[model {number}/{len(plan.models)}] {chosen[0]} seed={seed}", tuning_of=model)
    md = table()
    log(f"wrote {md} and {md.with_suffix('.csv')}")
    latest = latest_rows(rows)
    return _exit_code([latest[key] for key in ran if key in latest])


def _exit_code(rows: Sequence[dict[str, Any]]) -> int:
    latest = latest_rows(rows).values()
    return EXIT_CRASHED if any(r.get("status") != "ok" for r in latest) else 0


def main(argv: Sequence[str] | None = None, run_fn: RunFn | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--one"]:
        return one_main(argv[1:])
    try:
        args, overrides = parse_command_line(argv)
        plan = prepare(args, overrides)
        code = execute(plan, run_fn)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept in runs.jsonl, rerun the same command to "
              "resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    table_md = Path(plan.out_dir) / "table.md"
    if table_md.is_file():
        print(table_md.read_text(encoding="utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(main())
