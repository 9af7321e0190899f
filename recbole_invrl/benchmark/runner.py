"""Benchmark runner: every (model, seed) on one dataset, each in its own subprocess.

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

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from recbole_invrl.benchmark.child import (EXIT_INTERRUPTED, child_config_dict, command_line, one_main,
                                           run_one_subprocess)
from recbole_invrl.benchmark.table import DEFAULT_METRICS, Metric, latest_rows, parse_metrics, write_table

DEFAULT_MODELS = (
    "Pop", "BPR", "LightGCN", "NGCF", "DGCF", "MacridVAE", "SGL", "UltraGCN",
    "VBPR", "DUIF", "MMGCN", "GRCN", "LATTICE", "FREEDOM", "UltraGCNMM", "InvRL",
    "InvRL@invrl_backbone=VBPR", "InvRL@invrl_backbone=MMGCN",
)
DEFAULT_SEEDS = (2020, 2021, 2022)
RUNS_FILE = "runs.jsonl"
# Config keys the runner sets itself; as overrides they would make the runs disagree.
RESERVED_KEYS = {"model": "--models", "dataset": "--dataset", "seed": "--seeds"}
EXIT_CRASHED, EXIT_USAGE = 1, 2


class BenchmarkError(Exception):
    """Bad arguments or settings: reported as ``error: ...`` with exit code 2, nothing run."""


@dataclass(frozen=True)
class RunSpec:
    """One (model, seed) run and where its files go."""

    model: str
    seed: int
    dataset: str
    out_dir: Path
    config_files: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # "--key=value" strings

    @property
    def name(self) -> str:
        return f"{file_label(self.model)}-seed{self.seed}"

    @property
    def model_class(self) -> str:
        """The model to run: the entry without its ``@key=value`` overrides."""
        return split_model_entry(self.model)[0]

    @property
    def all_overrides(self) -> tuple[str, ...]:
        """The benchmark's overrides, then the entry's own."""
        return (*self.overrides, *split_model_entry(self.model)[1])

    @property
    def result_path(self) -> Path:
        return self.out_dir / "results" / f"{self.name}.json"

    @property
    def stdout_path(self) -> Path:
        return self.out_dir / "logs" / f"{self.name}.stdout.txt"

    @property
    def stderr_path(self) -> Path:
        return self.out_dir / "logs" / f"{self.name}.stderr.txt"

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "saved" / self.name


RunFn = Callable[[RunSpec, "float | None"], dict[str, Any]]


@dataclass
class Plan:
    """What a validated command line asks for."""

    dataset: str
    models: list[str]
    seeds: list[int]
    out_dir: Path
    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=lambda: list(DEFAULT_METRICS))
    timeout: float | None = None
    table_only: bool = False
    config: Any = None  # the first model's Config (data_path, for building ml-100k-mm)

    @property
    def settings(self) -> dict[str, Any]:
        """What must agree between the runs that share one table."""
        return {"dataset": self.dataset, "config_files": list(self.config_files),
                "overrides": sorted(self.overrides)}

    def spec(self, model: str, seed: int) -> RunSpec:
        return RunSpec(model, seed, self.dataset, self.out_dir, tuple(self.config_files),
                       tuple(self.overrides))


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_benchmark.py", allow_abbrev=False,
        description="Run RecBole's zoo and InvRL on one dataset over several seeds and write "
                    "a Table-2-style table. Other --key=value pairs are RecBole overrides.")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated models (default: %(default)s)")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)),
                        help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: results/<dataset>)")
    parser.add_argument("--data_path", default=None,
                        help="folder holding <dataset>/ atomic files (default: atomic_data)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--metrics", default=None,
                        help="table columns, e.g. P@10,R@10,N@10 (the default); each must be "
                             "among the config's metrics and topk")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which a run is killed and recorded as crashed")
    parser.add_argument("--table_only", action="store_true",
                        help="only rewrite table.md/table.csv from runs.jsonl")
    return parser


def parse_command_line(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Known flags, and the RecBole overrides (``--key=value``, as RecBole's ``Config`` reads them)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(list(argv))
    overrides = parse_overrides(extras)
    for arg in overrides:
        key = override_key(arg)
        if key in RESERVED_KEYS:
            raise BenchmarkError(f"--{key}=...: set by the runner; use {RESERVED_KEYS[key]} instead")
    return args, overrides


def override_key(arg: str) -> str:
    """``--key=value`` -> ``key``."""
    return arg[2:].split("=")[0]


def parse_overrides(extras: Sequence[str], error: type[Exception] = BenchmarkError) -> list[str]:
    """The RecBole overrides among unparsed arguments: ``--key=value`` (one '=', no space),
    each key once; anything else raises ``error``."""
    overrides = []
    for arg in extras:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not sep or not key or "=" in value:
            raise error(f"unrecognised argument '{arg}': RecBole overrides are written --key=value "
                        "(one '=', no space)")
        overrides.append(arg)
    keys = [override_key(a) for a in overrides]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise error(f"override given more than once: {', '.join(duplicates)}")
    return overrides


def split_model_entry(entry: str) -> tuple[str, list[str]]:
    """``InvRL@invrl_backbone=VBPR`` -> (``InvRL``, [``--invrl_backbone=VBPR``])."""
    model, *pairs = entry.split("@")
    return model, [f"--{pair}" for pair in pairs]


def file_label(entry: str) -> str:
    """A model entry as a file-name part: ``InvRL@invrl_backbone=VBPR`` -> ``InvRL-invrl_backbone-VBPR``."""
    return re.sub(r"[@=]", "-", entry)


def canonical_model_entry(entry: str, global_overrides: Sequence[str] = ()) -> str:
    """The entry with its model's canonical name; ``BenchmarkError`` for a malformed pair, a
    key the runner sets, or a key the benchmark already overrides for every model."""
    from recbole_invrl.utils import canonical_model_name

    model, pairs = split_model_entry(entry)
    model = canonical_model_name(model.strip())
    parse_overrides(pairs)  # one '=' each, each key once
    global_keys = {override_key(arg) for arg in global_overrides}
    for pair in pairs:
        key = override_key(pair)
        if key in RESERVED_KEYS:
            raise BenchmarkError(f"--models: '{entry}': {key} is set by the runner; use {RESERVED_KEYS[key]}")
        if key in global_keys:
            raise BenchmarkError(f"--models: '{entry}': {key} is also given for every model")
    return "@".join([model, *(pair[2:] for pair in pairs)])


def _split_list(text: str) -> list[str]:
    items = []
    for item in (i.strip() for i in text.split(",")):
        if item and item not in items:
            items.append(item)
    return items


# --------------------------------------------------------------------------- validation

def dataset_is_known(dataset: str, data_folder: Path) -> bool:
    """``dataset_configs/<D>.yaml``, atomic files in ``<data_path>/<D>/``, or ml-100k-mm."""
    from recbole_invrl.config import DATASET_CONFIG_DIR
    from recbole_invrl.data import ml100k_mm

    if dataset == ml100k_mm.NAME or (DATASET_CONFIG_DIR / f"{dataset}.yaml").is_file():
        return True
    return data_folder.is_dir() and any(data_folder.glob("*.inter"))


def check_metrics(config, metrics: Sequence[Metric], model: str) -> None:
    """The config must compute every table column."""
    configured = {str(m).lower() for m in (config["metrics"] or [])}
    topk = config["topk"]
    topk = {int(k) for k in (topk if isinstance(topk, (list, tuple)) else [topk])}
    for label, key in metrics:
        name, k = key.split("@")
        if name not in configured or int(k) not in topk:
            raise BenchmarkError(
                f"metric {label} ({key}) is not computed for {model} on {config['dataset']}: "
                f"the config has metrics {config['metrics']} and topk {config['topk']}; add "
                "them to the dataset yaml or to a --config_files yaml (metrics: [Precision, "
                "Recall, NDCG], topk: [10]); --topk=[...] also works as an override, while "
                "--metrics here chooses the table's columns")


def prepare(args: argparse.Namespace, overrides: list[str]) -> Plan:
    """Validate everything a run needs before any run starts; ``BenchmarkError`` if not."""
    dataset = args.dataset.strip()
    if not dataset:
        raise BenchmarkError("--dataset is empty")
    out_dir = Path(args.out) if args.out else Path("results") / dataset
    try:
        metrics = parse_metrics(args.metrics)
    except ValueError as err:
        raise BenchmarkError(f"--metrics: {err}") from None
    seeds = []
    for item in _split_list(args.seeds):
        try:
            seeds.append(int(item))
        except ValueError:
            raise BenchmarkError(f"--seeds: '{item}' is not an integer") from None
    if not seeds:
        raise BenchmarkError("--seeds: no seed given")
    if args.timeout is not None and args.timeout <= 0:
        raise BenchmarkError("--timeout must be positive")
    config_files = args.config_files.split() if args.config_files else []
    if args.data_path:
        overrides = [*overrides, f"--data_path={Path(args.data_path).resolve()}"]

    from recbole_invrl.utils import get_model

    models = [canonical_model_entry(m, overrides) for m in _split_list(args.models)]
    models = list(dict.fromkeys(models))
    plan = Plan(dataset, models, seeds, out_dir, config_files, overrides, metrics,
                args.timeout, args.table_only)
    if args.table_only:
        return plan
    if not models:
        raise BenchmarkError("--models: no model given")
    unknown = []
    for model in models:
        try:
            get_model(split_model_entry(model)[0])
        except ValueError as err:
            unknown.append(f"'{model}' ({err})")
    if unknown:
        raise BenchmarkError(f"unknown model {'; '.join(unknown)}")
    missing_files = [f for f in config_files if not Path(f).is_file()]
    if missing_files:
        raise BenchmarkError(f"--config_files: no such file {', '.join(missing_files)}")

    from recbole_invrl.config import Config

    configs = {}
    for model in models:
        model_class, own = split_model_entry(model)
        try:
            with command_line([*overrides, *own]):
                configs[model] = Config(model_class, dataset, config_files or None,
                                        child_config_dict(seeds[0], plan.spec(model, seeds[0]).checkpoint_dir))
        except Exception as err:  # noqa: BLE001 - any config error stops the benchmark
            raise BenchmarkError(f"config of {model} on {dataset}: {type(err).__name__}: {err}") from None
    plan.config = configs[models[0]]
    data_folder = Path(plan.config["data_path"])
    if not dataset_is_known(dataset, data_folder):
        from recbole_invrl.config import DATASET_CONFIG_DIR

        raise BenchmarkError(
            f"unknown dataset '{dataset}': there is no {DATASET_CONFIG_DIR / (dataset + '.yaml')}, "
            f"no atomic files (*.inter) in {data_folder}/, and it is not the auto-built "
            "ml-100k-mm; pass --data_path=DIR with DIR/<dataset>/ holding the atomic files")
    for model, config in configs.items():
        check_metrics(config, metrics, model)
    from recbole_invrl.data import MissingDatasetError, ml100k_mm
    from recbole_invrl.data.utils import ensure_dataset_files

    if dataset != ml100k_mm.NAME:  # ml-100k-mm is built on first use (see execute)
        try:
            ensure_dataset_files(plan.config)
        except MissingDatasetError as err:
            raise BenchmarkError(str(err)) from None
    return plan


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
        order = table_order([*plan.models, *(r["model"] for r in rows)])
        md, _ = write_table(rows, plan.out_dir, plan.metrics, f"Benchmark on {plan.dataset}", order)
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
    index = 0
    for model in plan.models:
        for seed in plan.seeds:
            index += 1
            prefix = f"[{index}/{total}] {model} seed={seed}"
            if (model, seed) in done:
                log(f"{prefix}: finished before, skipped")
                continue
            log(f"{prefix}: running")
            row = dict(run_fn(plan.spec(model, seed), plan.timeout))
            row.update(model=model, seed=seed, dataset=plan.dataset, settings=plan.settings,
                       finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            store.append(row)
            rows.append(row)
            if row.get("status") == "ok":
                log(f"{prefix}: ok in {row.get('wall_seconds') or 0:.1f} s "
                    f"({_metric_summary(row, plan.metrics)})")
            else:
                log(f"{prefix}: CRASHED: {row.get('error')}")
            table()
    md = table()
    log(f"wrote {md} and {md.with_suffix('.csv')}")
    return _exit_code([r for key, r in latest_rows(rows).items()
                       if key[0] in plan.models and key[1] in plan.seeds])


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
