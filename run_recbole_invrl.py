"""Run a recbole_invrl model or any RecBole model with RecBole's command-line habits.

    python run_recbole_invrl.py --model=InvRL --dataset=kwai [--config_files="a.yaml b.yaml"]
        [--key=value ...] [--result_json=PATH]
        [--nproc=N [--world_size=W --ip=HOST --port=P --group_offset=K]]

``--nproc=2`` trains with 2 processes through RecBole's distributed path (DDP; gloo on CPU).
The same command line: ``python -m recbole_invrl`` and ``recbole-invrl`` (recbole_invrl/cli.py).
"""
from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import sys

from recbole_invrl.cli import main

if __name__ == "__main__":
    sys.exit(main())
