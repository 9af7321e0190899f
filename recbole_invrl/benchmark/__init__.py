"""The paper's Table 2 against RecBole's zoo: ``runner`` runs every (model, seed) in its own
subprocess and records it in ``runs.jsonl``, after ``plan`` has checked the command line;
``table`` writes ``table.md`` / ``table.csv``.

Command line: ``python run_benchmark.py --dataset=D [--models=...] [--seeds=...]`` (see
``recbole_invrl.benchmark.runner``). The runner is imported lazily, so that
``python -m recbole_invrl.benchmark.runner`` does not import it twice.
"""
from recbole_invrl.benchmark.table import DEFAULT_METRICS, parse_metrics, summarize, write_table

_RUNNER_NAMES = ("DEFAULT_MODELS", "DEFAULT_SEEDS", "BenchmarkError", "RunSpec", "RunStore",
                 "main", "execute", "prepare", "run_one_subprocess")

__all__ = ["DEFAULT_METRICS", "parse_metrics", "summarize", "write_table", *_RUNNER_NAMES]


def __getattr__(name):
    if name in _RUNNER_NAMES:
        from recbole_invrl.benchmark import plan, runner

        return getattr(runner, name, None) or getattr(plan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
