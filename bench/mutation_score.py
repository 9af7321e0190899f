"""Mutation score of the method's core, module by module.

    python bench/mutation_score.py                       # every core module
    python bench/mutation_score.py --modules invariance/truth.py model/content.py
    python bench/mutation_score.py --output docs/mutation-table.md --survivors survivors.txt

Needs ``mutmut`` (a development tool, not a package dependency: ``pip install mutmut==3.8.1``).

Each module is mutated on its own, against only the test files that mirror it (``MODULES``
below), so one run stays short. mutmut 3.8.1 reads its configuration from ``setup.cfg``
(``[mutmut]``) or ``pyproject.toml`` in its working directory and works in a ``mutants/``
folder there; so every module runs in a scratch copy of the project (a temporary directory,
outside the git work tree) that holds its own ``setup.cfg``. The project's files are never
edited: the run leaves the tree as it was, apart from the report files asked for.

The table: mutants (all mutants mutmut generated), killed (a selected test failed),
timeout (the tests did not finish within mutmut's limit: the mutant was noticed), survived
(every selected test passed), other (no test reached the mutated function, segfault,
suspicious, not checked). score % = (killed + timeout) / mutants.

``--output`` writes the table (markdown) and ``--survivors`` the surviving mutants' names
and diffs; both are written to a temporary file beside the target and then ``os.replace``d.

``--workdir DIR`` keeps the scratch projects (``cd DIR/<module> && mutmut browse``);
``--resume`` then re-runs only the mutants not yet detected there, against the current
tests, and ``--report-only`` tabulates the verdicts kept there without running anything.
See docs/mutation.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "recbole_invrl"

# module (relative to recbole_invrl/) -> the test files that mirror it (those missing are skipped)
MODULES: dict[str, list[str]] = {
    "invariance/partition.py": ["tests/invariance/test_partition.py"],
    "invariance/mask.py": ["tests/invariance/test_mask.py"],
    "invariance/truth.py": ["tests/invariance/test_truth.py"],
    "invariance/forward_path.py": ["tests/invariance/test_forward_path.py"],
    "invariance/common.py": ["tests/invariance/test_invariance_common.py"],
    "invariance/backbone.py": ["tests/invariance/test_backbone.py"],
    "invariance/paths.py": ["tests/invariance/test_paths.py", "tests/invariance/test_forward_path.py"],
    "model/ultragcn_objective.py": ["tests/model/test_ultragcn_objective.py",
                                    "tests/model/general_recommender/test_ultragcn.py"],
    "model/common.py": ["tests/model/test_common.py"],
    "model/content.py": ["tests/model/test_content.py"],
    "model/mask_forms.py": ["tests/model/test_mask_forms.py"],
    # the backbones InvRL runs over: their eq. 14 parts (invariance_parts) or forward parts
    # (forward_parts), with the model tests and the invariance tests that take those paths
    "model/general_recommender/ultragcn_mm.py": ["tests/model/general_recommender/test_ultragcn_mm.py",
                                                 "tests/invariance/test_backbone.py",
                                                 "tests/invariance/test_forward_path.py"],
    "model/general_recommender/vbpr.py": ["tests/model/general_recommender/test_vbpr.py",
                                          "tests/invariance/test_backbone.py"],
    "model/general_recommender/duif.py": ["tests/model/general_recommender/test_duif.py",
                                          "tests/invariance/test_backbone.py"],
    "model/general_recommender/mmgcn.py": ["tests/model/general_recommender/test_mmgcn.py",
                                           "tests/invariance/test_forward_path.py"],
    "model/general_recommender/grcn.py": ["tests/model/general_recommender/test_grcn.py",
                                          "tests/invariance/test_forward_path.py"],
    "evaluator/legacy_ndcg.py": ["tests/evaluator/test_legacy_ndcg.py"],
    # test_diagnose.py's end-to-end runs train InvRL several times (minutes per mutant): the
    # mutation run takes the report's parts and the one test of it that builds no experiment
    "benchmark/diagnose.py": ["tests/benchmark/test_diagnose_report.py",
                              "tests/benchmark/test_diagnose.py::"
                              "test_planted_separability_scores_environment_0_as_the_positive_class"],
    "benchmark/table.py": ["tests/benchmark/test_table.py"],
    "data/convert/atomic.py": ["tests/data/test_convert_atomic.py", "tests/data/test_convert_grcn.py",
                               "tests/data/test_convert_mmrec.py"],
    "data/convert/grcn.py": ["tests/data/test_convert_grcn.py"],
    "data/convert/mmrec.py": ["tests/data/test_convert_mmrec.py"],
    "data/convert/safe_pickle.py": ["tests/data/test_safe_pickle.py"],
    "data/convert/__main__.py": ["tests/data/test_convert_main.py", "tests/data/test_convert_grcn.py"],
}

# copied into the scratch project: what the tests import or run
COPY = [PACKAGE, "tests", "dataset_configs", "setup.py", "run_experiment.py",
        "run_recbole_invrl.py", "run_benchmark.py", "run_hyper.py"]

DETECTED = ("killed", "timeout")
HEADER = ("module", "mutants", "killed", "survived", "timeout/other", "score %", "seconds")


def setup_cfg(module: str, tests: list[str]) -> str:
    def lines(values):
        return "\n".join(f"    {v}" for v in values)

    return (
        "[mutmut]\n"
        f"source_paths =\n{lines([f'{PACKAGE}/{module}'])}\n"
        f"pytest_add_cli_args_test_selection =\n{lines(tests)}\n"
        f"pytest_add_cli_args =\n{lines(['-p', 'no:cacheprovider'])}\n"
        f"also_copy =\n{lines(COPY)}\n"
        "use_git_change_detection = false\n"
    )


def scratch_project(root: Path, module: str, tests: list[str]) -> None:
    root.mkdir(parents=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, root / name)
    (root / "setup.cfg").write_text(setup_cfg(module, tests))


def classify(results_text: str) -> dict[str, list[str]]:
    by_status: dict[str, list[str]] = {}
    for line in results_text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            by_status.setdefault(status.strip(), []).append(name)
    return by_status


def run_module(module: str, tests: list[str], workdir: Path, max_children: int, log,
               resume: bool = False, report_only: bool = False,
               want_diffs: bool = True) -> tuple[dict[str, list[str]], float, str]:
    tests = [t for t in tests if (REPO / t.partition("::")[0]).exists()]
    if not tests:
        raise SystemExit(f"{module}: none of its test files exist ({MODULES[module]})")
    root = workdir / module.replace("/", "__").removesuffix(".py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    recheck: list[str] = []
    if report_only:
        pass
    elif resume and (root / "mutants").is_dir():
        # the mutants and their verdicts stay; the tests are refreshed, and every mutant not
        # yet detected (survived, no tests, not checked, ...) is run again
        shutil.copytree(REPO / "tests", root / "tests", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        same_selection = (root / "setup.cfg").read_text() == setup_cfg(module, tests)
        (root / "setup.cfg").write_text(setup_cfg(module, tests))
        before = classify(subprocess.run(mutmut + ["results", "--all", "true"], cwd=root, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout)
        # another test selection makes mutmut drop every verdict: then all mutants run again
        recheck = sorted(n for status, names in before.items() if status not in DETECTED for n in names
                         ) if same_selection else []
    else:
        if root.exists():
            shutil.rmtree(root)
        scratch_project(root, module, tests)
    start = time.monotonic()
    if report_only:
        if not (root / "mutants").is_dir():
            raise SystemExit(f"{module}: no earlier run in {root}")
        proc = subprocess.CompletedProcess([], 0, stdout="")
    else:
        proc = subprocess.run(mutmut + ["run", "--max-children", str(max_children), *recheck], cwd=root,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = None if report_only else time.monotonic() - start
    log.write(f"===== {module} ({' '.join(tests)}): mutmut run exit {proc.returncode}\n{proc.stdout}\n")
    results = subprocess.run(mutmut + ["results", "--all", "true"], cwd=root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    by_status = classify(results.stdout)
    if "could not find any test case for any mutant" in proc.stdout:
        pass  # nothing mutmut mutates here (decorated functions, dataclass fields): no mutants
    elif proc.returncode != 0 or not by_status:
        print(f"{module}: mutmut run failed (exit {proc.returncode}); see the log\n"
              + proc.stdout[-2000:], file=sys.stderr)
    diffs = []
    for name in sorted(by_status.get("survived", [])) if want_diffs else ():
        shown = subprocess.run(mutmut + ["show", name], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        diffs.append(shown.stdout.rstrip())
    return by_status, seconds, "\n\n".join(diffs)


def row(module: str, by_status: dict[str, list[str]], seconds: float) -> tuple:
    total = sum(len(v) for v in by_status.values())
    killed = len(by_status.get("killed", []))
    survived = len(by_status.get("survived", []))
    detected = sum(len(by_status.get(s, [])) for s in DETECTED)
    other = total - killed - survived
    score = f"{100.0 * detected / total:.1f}" if total else "–"
    return (module, total, killed, survived, other, score, "–" if seconds is None else f"{seconds:.0f}")


def markdown(rows: list[tuple]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(MODULES),
                        help="modules relative to recbole_invrl/ (default: all of %(default)s)")
    parser.add_argument("--output", type=Path, help="write the table (markdown) here")
    parser.add_argument("--survivors", type=Path, help="write the surviving mutants' diffs here")
    parser.add_argument("--workdir", type=Path,
                        help="scratch folder for the per-module projects (default: a temporary "
                             "directory, removed at the end); kept when given, for mutmut show/browse")
    parser.add_argument("--resume", action="store_true",
                        help="with --workdir: keep each module's mutants and verdicts from an earlier "
                             "run there, refresh the tests, and run again only the mutants not yet "
                             "detected (a module without an earlier run starts afresh)")
    parser.add_argument("--report-only", action="store_true",
                        help="with --workdir: run nothing, tabulate the verdicts of the earlier runs there")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    if (args.resume or args.report_only) and args.workdir is None:
        parser.error("--resume and --report-only need --workdir")
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown modules {unknown}; known: {list(MODULES)}")

    keep = args.workdir is not None
    workdir = args.workdir.resolve() if keep else Path(tempfile.mkdtemp(prefix="mutation-score-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows, survivors = [], []
    totals = dict.fromkeys(("total", "killed", "survived", "other", "detected"), 0)
    start = time.monotonic()
    try:
        with open(workdir / "mutmut.log", "a") as log:
            for module in args.modules:
                by_status, seconds, diffs = run_module(module, MODULES[module], workdir,
                                                       args.max_children, log, args.resume, args.report_only,
                                                       want_diffs=args.survivors is not None)
                r = row(module, by_status, seconds)
                rows.append(r)
                print("  ".join(str(c) for c in r), flush=True)
                totals["total"] += r[1]
                totals["killed"] += r[2]
                totals["survived"] += r[3]
                totals["other"] += r[4]
                totals["detected"] += sum(len(by_status.get(s, [])) for s in DETECTED)
                if diffs:
                    survivors.append(f"##### {module}\n\n{diffs}\n")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = totals["total"]
    score = f"{100.0 * totals['detected'] / total:.1f}" if total else "–"
    rows.append(("total", total, totals["killed"], totals["survived"], totals["other"],
                 score, "–" if args.report_only else f"{time.monotonic() - start:.0f}"))
    table = markdown(rows)
    print()
    print(table, end="")
    if args.output:
        write_atomic(args.output, table)
    if args.survivors:
        write_atomic(args.survivors, "\n".join(survivors))
    if keep:
        print(f"\nscratch projects kept in {workdir} (cd there/<module> && mutmut browse)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
