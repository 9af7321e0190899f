"""Hyper-parameter search for recbole_invrl and RecBole models with RecBole's HyperTuning.

    python run_hyper.py --model=InvRL --dataset=D --params_file=hyper/invrl.hyper
        [--config_files="a.yaml b.yaml"] [--algo=exhaustive|random|bayes] [--max_evals=N]
        [--early_stop=N] [--output_file=hyper_result.txt] [--timeout=SECONDS] [--key=value ...]

Each trial runs in its own subprocess; results go to OUTPUT_FILE (RecBole's format) and to
<stem>.csv / <stem>.md (one row per trial, the best marked). See recbole_invrl/hyper.py.
Exit codes: 0 a best trial was found, 1 every trial failed, 2 bad arguments, search space or
parameter name (nothing run), 130 interrupted.
"""
from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import sys

from recbole_invrl.hyper import main

if __name__ == "__main__":
    sys.exit(main())
