"""What a benchmark command line asks for: the model entries (``Model@key=value``), the
seeds, the RecBole overrides and the files, checked before any run starts (``prepare``),
as a ``Plan`` of ``RunSpec`` runs. ``runner`` carries the plan out."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from recbole_invrl.benchmark.child import child_config_dict, command_line
from recbole_invrl.benchmark.table import DEFAULT_METRICS, Metric, parse_metrics

DEFAULT_MODELS = (
    "Pop", "BPR", "LightGCN", "NGCF", "DGCF", "MacridVAE", "SGL", "UltraGCN",
    "VBPR", "DUIF", "MMGCN", "GRCN", "LATTICE", "FREEDOM", "UltraGCNMM", "InvRL",
    "InvRL@invrl_backbone=VBPR", "InvRL@invrl_backbone=MMGCN",
)
DEFAULT_SEEDS = (2020, 2021, 2022)
# Config keys the runner sets itself; as overrides they would make the runs disagree.
RESERVED_KEYS = {"model": "--models", "dataset": "--dataset", "seed": "--seeds"}


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
    tune: int = 0  # trials per model entry, chosen on validation (0: no tuning)

    @property
    def settings(self) -> dict[str, Any]:
        """What must agree between the runs that share one table."""
        settings = {"dataset": self.dataset, "config_files": list(self.config_files),
                    "overrides": sorted(self.overrides)}
        return {**settings, "tune": self.tune} if self.tune else settings

    @property
    def valid_bigger(self) -> bool:
        return bool(self.config["valid_metric_bigger"]) if self.config is not None else True

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
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="give every model N trials over hyper/<Model>.hyper on the first seed, "
                             "keep the best on validation and run it on every seed (0: no tuning)")
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


def check_search_space(model: str, config, overrides: Sequence[str]) -> None:
    """A model's ``hyper/<Model>.hyper`` must parse and name only keys of its config that the
    command line does not fix."""
    from recbole_invrl.benchmark.tuning import space_file
    from recbole_invrl.search_space import HyperError, check_param_names, load_search_space

    path = space_file(model)
    if path is None:
        return
    try:
        check_param_names(load_search_space(path), list(config.final_config_dict),
                          [override_key(arg) for arg in overrides], path, model)
    except HyperError as err:
        raise BenchmarkError(f"--tune: {err}") from None


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
    if args.tune < 0:
        raise BenchmarkError(f"--tune: expected a number of trials >= 0, got {args.tune}")
    config_files = args.config_files.split() if args.config_files else []
    if args.data_path:
        overrides = [*overrides, f"--data_path={Path(args.data_path).resolve()}"]

    from recbole_invrl.utils import get_model

    models = [canonical_model_entry(m, overrides) for m in _split_list(args.models)]
    models = list(dict.fromkeys(models))
    plan = Plan(dataset, models, seeds, out_dir, config_files, overrides, metrics,
                args.timeout, args.table_only, tune=args.tune)
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
        if plan.tune:
            check_search_space(model, config, overrides)
    from recbole_invrl.data import MissingDatasetError, ml100k_mm
    from recbole_invrl.data.utils import ensure_dataset_files

    if dataset != ml100k_mm.NAME:  # ml-100k-mm is built on first use (see execute)
        try:
            ensure_dataset_files(plan.config)
        except MissingDatasetError as err:
            raise BenchmarkError(str(err)) from None
    return plan
