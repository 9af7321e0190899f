"""Hyper-parameter search with RecBole's ``HyperTuning`` (hyperopt).

    python run_hyper.py --model=InvRL --dataset=D --params_file=hyper/invrl.hyper
        [--config_files="a.yaml b.yaml"] [--algo=exhaustive|random|bayes] [--max_evals=N]
        [--early_stop=N] [--output_file=hyper_result.txt] [--timeout=SECONDS] [--key=value ...]

The search space is a file in RecBole's line format (``recbole_invrl/search_space.py``), one
parameter a line, e.g. ``num_envs choice [1,5,10,20,30]``. Other ``--key=value`` pairs are
fixed RecBole overrides given to every trial (on its command line, the highest precedence).

Outputs, rewritten atomically after every trial:

- ``OUTPUT_FILE``: RecBole's ``export_result`` format (params line, "Valid result:",
  "Test result:"), failed trials with their error, and the best trial at the end;
- ``<stem>.csv`` and ``<stem>.md``: one row per trial (params, status ok/failed, valid score,
  test metrics, seconds, error), the best trial marked (``hyper_report.py`` writes them);
- ``<stem>.trials/``: every trial's logs (``logs/trialNNN.stderr.txt``), result JSON and
  checkpoints.

Exit codes: 0 the search found a best trial; 1 every trial failed; 2 bad arguments, search
space or parameter name (nothing run); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from recbole.trainer import HyperTuning
from recbole.utils.utils import dict2str

from recbole_invrl.benchmark import child
from recbole_invrl.benchmark import plan as run_plan
from recbole_invrl.hyper_report import STATUS_OK, OutputPaths, TrialRecord, write_outputs
from recbole_invrl.shims import hyperopt_rstate
from recbole_invrl.search_space import (
    HyperError,
    SearchSpaceError,
    SearchParam,
    load_search_space,
    grid_size,
    check_param_names,
    override_text,
    params_to_overrides,
)

ALGOS = ("exhaustive", "random", "bayes")
RAY_NOTE = ("ray 2.6.3's tune.run needs pyarrow, which the pinned stack (numpy < 2) lacks; "
            "see README, 'Hyper-parameter search'")
EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

Objective = Callable[[dict[str, Any], "list[str] | None"], dict[str, Any]]


class TrialFailed(Exception):
    """A trial that did not produce results (its error is the message)."""


# --------------------------------------------------------------------------- trials

@dataclass(frozen=True)
class TrialSpec(run_plan.RunSpec):
    """A benchmark-runner run named after its trial number, so trials keep their own files."""

    trial: int = 0

    @property
    def name(self) -> str:
        return f"trial{self.trial:03d}"


@dataclass
class SubprocessObjective:
    """Runs every trial in its own child process with the benchmark runner's helpers.

    Trials run in a subprocess, not in-process as RecBole's ``objective_function`` does:
    each trial gets a fresh interpreter, so its memory (dataset, model, InvRL's environment
    models) is released when it ends, RecBole's global state (logger handlers, seeds,
    ``sys.argv``) cannot leak from one trial into the next, a hard crash (segfault, an
    out-of-memory kill, ``--timeout``) costs that trial only and is recorded with the last line
    of its stderr, and each trial keeps its full log. The price is a few seconds of start-up
    per trial, small next to training.
    """

    model: str
    dataset: str
    seed: int
    out_dir: Path
    fixed_overrides: tuple[str, ...] = ()
    timeout: float | None = None
    calls: int = field(default=0, init=False)

    def __call__(self, params: dict[str, Any], config_files: list[str] | None) -> dict[str, Any]:
        self.calls += 1
        spec = TrialSpec(self.model, self.seed, self.dataset, self.out_dir,
                         tuple(config_files or ()),
                         (*self.fixed_overrides, *params_to_overrides(params)), trial=self.calls)
        row = child.run_one_subprocess(spec, self.timeout)
        if row.get("status") != "ok":
            raise TrialFailed(f"{row.get('error')} (log: {row.get('stderr_log')})")
        result = json.loads(spec.result_path.read_text(encoding="utf-8"))
        return {"model": self.model, **result}


def _no_progress_stop(patience: int) -> Callable:
    """hyperopt ``early_stop_fn``: stop after ``patience`` trials without a better ok loss.

    (hyperopt's ``no_progress_loss`` reads the loss of failed trials, which have none.)"""

    def stop(trials, best: float | None = None, stale: int = 0):
        result = trials.trials[-1]["result"]
        loss = result.get("loss") if result.get("status") == "ok" else None
        if loss is not None and (best is None or loss < best):
            return False, [loss, 0]
        return stale + 1 >= patience, [best, stale + 1]

    return stop


def _import_hyperopt():
    """Import hyperopt without its ``pkg_resources`` deprecation warning (hyperopt 0.2.5)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import hyperopt

    return hyperopt


class InvRLHyperTuning(HyperTuning):
    """RecBole's ``HyperTuning`` with failed trials recorded (hyperopt ``STATUS_FAIL``) instead of
    ending the search, a seeded search order, ``max_evals`` as a cap on exhaustive search too,
    and one ``TrialRecord`` per trial (``records``)."""

    def __init__(self, objective: Objective, params: Sequence[SearchParam], algo: str = "exhaustive",
                 max_evals: int | None = None, early_stop: int = 10, seed: int = 2020,
                 config_files: list[str] | None = None, valid_bigger: bool = True,
                 on_trial: Callable[[TrialRecord], None] | None = None,
                 on_start: Callable[[int, dict[str, Any]], None] | None = None):
        hyperopt = _import_hyperopt()
        from recbole.trainer.hyper_tuning import exhaustive_search

        self.search_params = {p.name: p for p in params}
        space = {p.name: p.expression() for p in params}
        if algo == "exhaustive":
            suggest = partial(exhaustive_search, nbMaxSucessiveFailures=1000)
            limit = grid_size(params) if max_evals is None else min(grid_size(params), max_evals)
        else:
            suggest = {"random": hyperopt.rand.suggest, "bayes": hyperopt.tpe.suggest}[algo]
            limit = 100 if max_evals is None else max_evals
        super().__init__(objective, space=space, algo=suggest, max_evals=limit,
                         early_stop=max(early_stop, 1), fixed_config_file_list=config_files)
        self.early_stop_fn = _no_progress_stop(early_stop) if early_stop > 0 else None
        self.seed, self.valid_bigger = seed, valid_bigger
        self.on_trial, self.on_start = on_trial, on_start
        self.records: list[TrialRecord] = []
        self.best_record: TrialRecord | None = None

    def trial(self, params: dict[str, Any]) -> dict[str, Any]:
        from hyperopt import STATUS_FAIL, STATUS_OK

        params = {name: self.search_params[name].plain(v) for name, v in params.items()}
        params = {name: params[name] for name in self.search_params}  # file order
        record = TrialRecord(len(self.records) + 1, params)
        if self.on_start:
            self.on_start(record.number, params)
        start = time.time()
        try:
            result = self.objective_function(dict(params), self.fixed_config_file_list)
            record.valid_score = float(result["best_valid_score"])
            if not math.isfinite(record.valid_score):
                raise TrialFailed(f"best valid score is {record.valid_score}")
            record.best_valid_result = _plain_result(result.get("best_valid_result"))
            record.test_result = _plain_result(result.get("test_result"))
            record.status = STATUS_OK
        except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded
            message = " ".join(str(err).split())
            record.error = message if isinstance(err, TrialFailed) else (
                f"{type(err).__name__}: {message}" if message else type(err).__name__)
        record.seconds = round(time.time() - start, 3)
        self.records.append(record)
        self._update_best(record)
        if self.on_trial:
            self.on_trial(record)
        if record.status != STATUS_OK:
            return {"status": STATUS_FAIL}
        return {"status": STATUS_OK,
                "loss": -record.valid_score if self.valid_bigger else record.valid_score}

    def _update_best(self, record: TrialRecord) -> None:
        if record.status != STATUS_OK:
            return
        best = self.best_record
        if best is None or (record.valid_score > best.valid_score if self.valid_bigger
                            else record.valid_score < best.valid_score):
            self.best_record = record
            self.best_score, self.best_params = record.valid_score, record.params
            self.best_test_result = record.test_result
        self.params2result[self.params2str(record.params)] = {
            "best_valid_result": record.best_valid_result, "test_result": record.test_result}

    def run(self) -> None:
        """hyperopt's ``fmin`` over the space; stops early, at ``max_evals`` or when the grid ends."""
        hyperopt = _import_hyperopt()
        try:
            hyperopt.fmin(self.trial, self.space, algo=self.algo, max_evals=int(self.max_evals),
                          early_stop_fn=self.early_stop_fn, rstate=hyperopt_rstate(self.seed),
                          show_progressbar=False, return_argmin=False)
        except hyperopt.exceptions.AllTrialsFailed:
            pass  # reported from self.records


def _plain_result(result: dict[str, Any] | None) -> dict[str, float] | None:
    return None if result is None else {str(k): float(v) for k, v in result.items()}


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_hyper.py", allow_abbrev=False,
        description="Hyper-parameter search with RecBole's HyperTuning (hyperopt); other "
                    "--key=value pairs are RecBole overrides fixed for every trial.")
    parser.add_argument("--model", "-m", default="InvRL", help="model name (default: %(default)s)")
    parser.add_argument("--dataset", "-d", default="ml-100k-mm", help="dataset (default: %(default)s)")
    parser.add_argument("--params_file", required=True, help="search-space file")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--algo", default="exhaustive", choices=ALGOS,
                        help="exhaustive (grid; choice parameters only), random or bayes (TPE)")
    parser.add_argument("--max_evals", type=int, default=None,
                        help="at most this many trials (default: the whole grid for exhaustive, "
                             "100 otherwise)")
    parser.add_argument("--early_stop", type=int, default=10,
                        help="stop after this many trials without a better valid score "
                             "(default: %(default)s; 0: never)")
    parser.add_argument("--output_file", default="hyper_result.txt",
                        help="results file; <stem>.csv, <stem>.md and <stem>.trials/ go beside it")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which a trial is killed and recorded as failed")
    parser.add_argument("--tool", default="Hyperopt",
                        help="Hyperopt (the only one; RecBole's Ray path is not supported here)")
    return parser


def parse_command_line(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Known flags and the fixed RecBole overrides; ``HyperError`` for anything malformed."""
    args, extras = build_parser().parse_known_args(list(argv))  # argparse exits 2 itself
    if args.tool.lower() != "hyperopt":
        raise HyperError(f"--tool={args.tool}: only --tool=Hyperopt is supported; {RAY_NOTE}")
    overrides = run_plan.parse_overrides(extras, HyperError)
    if args.max_evals is not None and args.max_evals < 1:
        raise HyperError("--max_evals must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise HyperError("--timeout must be positive")
    return args, overrides


@dataclass
class SearchPlan:
    """A validated search: what to search, the config it was checked against, where results go."""

    model: str
    dataset: str
    params_file: Path
    params: list[SearchParam]
    config: Any
    algo: str
    max_evals: int | None
    early_stop: int
    paths: OutputPaths
    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    timeout: float | None = None

    @property
    def valid_metric(self) -> str:
        return str(self.config["valid_metric"]).lower()

    @property
    def title(self) -> str:
        return (f"Hyper-parameter search: {self.model} on {self.dataset} "
                f"({self.algo}, {self.params_file})")


def prepare(args: argparse.Namespace, overrides: list[str]) -> SearchPlan:
    """Check the model, dataset, config files, search space and parameter names; no trial runs."""
    from recbole_invrl.config import Config
    from recbole_invrl.utils import canonical_model_name, get_model

    model = canonical_model_name(args.model.strip())
    try:
        get_model(model)
    except ValueError as err:
        raise HyperError(f"unknown model '{args.model}' ({err})") from None
    dataset = args.dataset.strip()
    if not dataset:
        raise HyperError("--dataset is empty")
    config_files = args.config_files.split() if args.config_files else []
    missing = [f for f in config_files if not Path(f).is_file()]
    if missing:
        raise HyperError(f"--config_files: no such file {', '.join(missing)}")
    params = load_search_space(args.params_file)
    if args.algo == "exhaustive":
        continuous = [p for p in params if p.kind != "choice"]
        if continuous:
            p = continuous[0]
            raise SearchSpaceError(
                args.params_file, f"{p.name} is {p.kind}, but --algo=exhaustive searches a grid "
                                  "of choice parameters only; use --algo=random or --algo=bayes, "
                                  "or write it as a choice", p.line)
    try:
        with child.command_line(overrides):
            config = Config(model, dataset, config_files or None)
    except Exception as err:  # noqa: BLE001 - any config error stops the search
        raise HyperError(f"config of {model} on {dataset}: {type(err).__name__}: {err}") from None
    fixed = [a[2:].split("=")[0] for a in overrides]
    check_param_names(params, list(config.final_config_dict), fixed, args.params_file,
                      f"{model} on {dataset}")
    _check_dataset(config, dataset)
    return SearchPlan(model, dataset, Path(args.params_file), params, config, args.algo,
                      args.max_evals, args.early_stop, OutputPaths(Path(args.output_file)),
                      config_files, overrides, args.timeout)


def _check_dataset(config, dataset: str) -> None:
    """The dataset's files must exist (ml-100k-mm is built here, once, before the trials)."""
    from recbole_invrl.data import MissingDatasetError
    from recbole_invrl.data.utils import ensure_dataset_files

    data_folder = Path(config["data_path"])
    if not run_plan.dataset_is_known(dataset, data_folder):
        raise HyperError(f"unknown dataset '{dataset}': no dataset_configs/{dataset}.yaml and no "
                         f"atomic files (*.inter) in {data_folder}/; pass --data_path=DIR")
    try:
        ensure_dataset_files(config)
    except MissingDatasetError as err:
        raise HyperError(str(err)) from None


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={override_text(v)}" for k, v in params.items())


def search(plan: SearchPlan, objective: Objective | None = None,
           log: Callable[[str], None] | None = None) -> InvRLHyperTuning:
    """Run the search of ``plan``, rewriting its outputs after every trial."""
    log = log or (lambda text: print(text, flush=True))
    objective = objective or SubprocessObjective(
        plan.model, plan.dataset, int(plan.config["seed"]), plan.paths.trials_dir,
        tuple(plan.overrides), plan.timeout)
    tuner: InvRLHyperTuning | None = None

    def started(number: int, params: dict[str, Any]) -> None:
        log(f"[trial {number}/{tuner.max_evals}] {_describe(params)}: running")

    def finished(record: TrialRecord) -> None:
        prefix = f"[trial {record.number}/{tuner.max_evals}]"
        if record.status == STATUS_OK:
            log(f"{prefix} ok in {record.seconds:.1f} s (valid {plan.valid_metric} "
                f"{record.valid_score:.4f})")
        else:
            log(f"{prefix} FAILED in {record.seconds:.1f} s: {record.error}")
        write_outputs(plan.paths, tuner.records, tuner.best_record, plan.valid_metric, plan.title)

    tuner = InvRLHyperTuning(objective, plan.params, plan.algo, plan.max_evals, plan.early_stop,
                             int(plan.config["seed"]), plan.config_files or None,
                             bool(plan.config["valid_metric_bigger"]), finished, started)
    tuner.run()
    return tuner


def main(argv: Sequence[str] | None = None, objective: Objective | None = None) -> int:
    """``run_hyper.py``; ``objective`` replaces the per-trial subprocess (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_command_line(argv)
        plan = prepare(args, overrides)
        tuner = search(plan, objective)
    except HyperError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; the finished trials are in the --output_file and its tables",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    paths, records, best = plan.paths, tuner.records, tuner.best_record
    if not records:
        print("error: no trial ran", file=sys.stderr)
        return EXIT_ALL_FAILED
    print(paths.markdown.read_text(encoding="utf-8"))
    print(f"wrote {paths.text}, {paths.csv} and {paths.markdown}; trial logs in "
          f"{paths.trials_dir / 'logs'}")
    if best is None:
        print(f"error: all {len(records)} trials failed; no best parameters. First error: "
              f"{records[0].error}", file=sys.stderr)
        return EXIT_ALL_FAILED
    failed = sum(r.status != STATUS_OK for r in records)
    if failed:
        print(f"warning: {failed} of {len(records)} trials failed (see the error column)",
              file=sys.stderr)
    print(f"best params: {best.params} (trial {best.number})")
    print(f"best valid {plan.valid_metric}: {best.valid_score:.4f}")
    print(f"test result of the best: {dict2str(best.test_result or {})}")
    return EXIT_OK
