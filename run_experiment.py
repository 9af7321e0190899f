"""Run one of the paper's experiments (Table 3, Fig. 3-6) and write its CSV and PNG.

    python run_experiment.py --experiment={table3,fig3,fig4,fig5,fig6,diagnose,fair} --dataset=D
        [--out=results/D] [--record=RUN-record.json] [--truth=DIR] [--config_files="a.yaml"] [--key=value ...]
"""
from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import argparse
import sys

from recbole_invrl.benchmark.experiments import EXPERIMENTS, Experiment
from recbole_invrl.config import Config
from recbole_invrl.data import MissingDatasetError
from recbole_invrl.data.utils import ensure_dataset_files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help=", ".join(EXPERIMENTS))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", default=None, help="folder for the CSV and PNG (results/<dataset>)")
    parser.add_argument("--record", default=None, help="InvRL run record for fig4/fig5")
    parser.add_argument("--truth", default=None, help="diagnose: folder with truth.json / train_env.npy")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    args, _ = parser.parse_known_args()  # other --key=value pairs are read by RecBole's Config
    if args.experiment not in EXPERIMENTS:
        print(f"error: --experiment: unknown '{args.experiment}'; expected one of {', '.join(EXPERIMENTS)}",
              file=sys.stderr)
        return 2
    config_files = args.config_files.split() if args.config_files else None
    config = Config("InvRL", args.dataset, config_files)
    try:
        ensure_dataset_files(config)
    except MissingDatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    experiment = Experiment(args.dataset, args.out or f"results/{args.dataset}", config_files=config_files,
                            data_folder=config["data_path"])  # RecBole's data_path ends in the dataset
    extra = {"record_path": args.record} if args.experiment in ("fig4", "fig5") else {}
    if args.experiment == "diagnose":
        extra = {"truth_dir": args.truth}
    for path in EXPERIMENTS[args.experiment](experiment, **extra):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
