"""Run a recbole_invrl model or any RecBole model with RecBole's command-line habits.

    python run_recbole_invrl.py --model=InvRL --dataset=kwai [--config_files="a.yaml b.yaml"]
        [--key=value ...] [--result_json=PATH]
        [--nproc=N [--world_size=W --ip=HOST --port=P --group_offset=K]]

``--nproc=2`` trains with 2 processes through RecBole's distributed path (DDP; gloo on CPU).
"""
from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import argparse
import sys

from recbole_invrl.data import MissingDatasetError
from recbole_invrl.compat import write_json_atomic
from recbole_invrl.quick_start import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", "-m", default="UltraGCNMM", help="model name")
    parser.add_argument("--dataset", "-d", default="ml-100k-mm", help="dataset name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--result_json", default=None, help="also write the results here")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    parser.add_argument("--world_size", type=int, default=-1, help="processes in all (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    parser.add_argument("--port", default="5678", help="port of the rank-0 machine")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    args, _ = parser.parse_known_args()  # other --key=value pairs are read by Config
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    try:
        result = run(args.model, args.dataset, config_file_list=config_files, nproc=args.nproc,
                     world_size=args.world_size, ip=args.ip, port=args.port,
                     group_offset=args.group_offset)
    except MissingDatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.result_json and result is not None:
        write_json_atomic(result, args.result_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
