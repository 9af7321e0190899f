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

import sys

from recbole_invrl.threads import configure_threads


def run_model() -> int:
    configure_threads()
    from recbole_invrl.cli import main

    return main()


def benchmark() -> int:
    configure_threads()
    from recbole_invrl.benchmark.runner import main

    return main()


def experiment() -> int:
    configure_threads()
    from recbole_invrl.benchmark.experiments import main

    return main()


def hyper() -> int:
    configure_threads()
    from recbole_invrl.hyper import main

    return main()


if __name__ == "__main__":
    sys.exit(run_model())
