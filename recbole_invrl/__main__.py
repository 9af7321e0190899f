"""``python -m recbole_invrl`` and the console commands that ``pip install`` creates.

    recbole-invrl             --model=M --dataset=D [--key=value ...]   (run_recbole_invrl.py)
    recbole-invrl-benchmark   --dataset=D [--models=...]                (run_benchmark.py)
    recbole-invrl-experiment  --experiment=E --dataset=D                (run_experiment.py)
    recbole-invrl-hyper       --model=M --dataset=D --params_file=F     (run_hyper.py)

Each sizes the thread team before anything imports torch (``recbole_invrl.threads``), then
runs its command line; all of them work from any folder (data in ``./atomic_data`` or
``--data_path``; logs, checkpoints and results in the current folder).
"""
from __future__ import annotations

import importlib
import sys

from recbole_invrl.threads import configure_threads


def _main_of(module: str) -> int:
    """``module.main()``, with the thread team sized before the module imports torch."""
    configure_threads()
    return importlib.import_module(module).main()


def run_model() -> int:
    return _main_of("recbole_invrl.cli")


def benchmark() -> int:
    return _main_of("recbole_invrl.benchmark.runner")


def experiment() -> int:
    return _main_of("recbole_invrl.benchmark.experiments")


def hyper() -> int:
    return _main_of("recbole_invrl.hyper")


if __name__ == "__main__":
    sys.exit(run_model())
