"""The paper's Table 2 against RecBole's zoo: ``runner`` runs every (model, seed) in its own
subprocess and records it in ``runs.jsonl``, after ``plan`` has checked the command line;
``table`` writes ``table.md`` / ``table.csv``.

Command line: ``python run_benchmark.py --dataset=D [--models=...] [--seeds=...]`` (see
``recbole_invrl.benchmark.runner``). The plan, the runner and the child helpers are
imported lazily, so that ``python -m recbole_invrl.benchmark.runner`` does not import the
runner twice.
"""
import importlib

from recbole_invrl.benchmark.table import DEFAULT_METRICS, parse_metrics, summarize, write_table

_LAZY_NAMES = {  # name -> the module that defines it
    **dict.fromkeys(("DEFAULT_MODELS", "DEFAULT_SEEDS", "BenchmarkError", "RunSpec", "prepare"), "plan"),
    **dict.fromkeys(("RunStore", "main", "execute"), "runner"),
    "run_one_subprocess": "child",
}

__all__ = ["DEFAULT_METRICS", "parse_metrics", "summarize", "write_table", *_LAZY_NAMES]


def __getattr__(name):
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
