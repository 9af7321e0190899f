"""Run one of the paper's experiments (Table 3, Fig. 3-6) and write its CSV and PNG.

    python run_experiment.py --experiment={table3,fig3,fig4,fig5,fig6,diagnose,fair} --dataset=D
        [--out=results/D] [--record=RUN-record.json] [--truth=DIR] [--config_files="a.yaml"] [--key=value ...]

The same command line: ``recbole-invrl-experiment`` (``recbole_invrl.benchmark.experiments.main``).
"""
from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import sys

from recbole_invrl.benchmark.experiments import main

if __name__ == "__main__":
    sys.exit(main())
