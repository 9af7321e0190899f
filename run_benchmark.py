"""Benchmark RecBole's zoo and InvRL on one dataset over several seeds (the paper's Table 2).

    python run_benchmark.py --dataset=D [--models=Pop,BPR,...] [--seeds=2020,2021,2022]
        [--out=results/D] [--data_path=DIR] [--config_files="a.yaml b.yaml"]
        [--metrics=P@10,R@10,N@10] [--timeout=SECONDS] [--table_only] [--key=value ...]

Every (model, seed) runs in its own subprocess; finished runs go to <out>/runs.jsonl (a rerun
skips them and retries crashed ones), and <out>/table.md / table.csv are rewritten after each.
Exit codes: 0 all runs finished, 1 some crashed, 2 bad arguments (nothing run).
"""
from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import sys

from recbole_invrl.benchmark.runner import main

if __name__ == "__main__":
    sys.exit(main())
