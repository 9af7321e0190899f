"""What the checks before a run cost: the run script's command line on a setting that only the
last check refuses (``content_fields`` against the ``.item`` header, after the settings, the
names, the files and the dataset's presence are checked), timed in one process.

    python bench/bench_checks.py [--dataset=ml-100k-mm] [--repeats=5]

Prints the first call (which imports RecBole's config machinery) and the median of the rest.
Builds ml-100k-mm first if it is missing (not timed).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_invrl.cli import main as cli_main  # noqa: E402


def timed_refusal(dataset: str) -> float:
    argv = [f"--dataset={dataset}", "--model=InvRL", "--content_fields=['no_such_column']"]
    saved = sys.argv
    sys.argv = ["bench_checks.py", *argv]
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code = cli_main(argv)
    finally:
        sys.argv = saved
    elapsed = time.perf_counter() - start
    if code != 2 or "content_fields" not in err.getvalue():
        raise SystemExit(f"expected the content_fields refusal, got exit {code}: {err.getvalue()!r}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from recbole_invrl.config import Config
    from recbole_invrl.data.utils import ensure_dataset_files

    ensure_dataset_files(Config("InvRL", args.dataset))  # build outside the timing
    first = timed_refusal(args.dataset)
    rest = [timed_refusal(args.dataset) for _ in range(args.repeats)]
    print(f"checks before a run ({args.dataset}, refused at the last check): first call {first:.3f} s, "
          f"then median {statistics.median(rest):.3f} s over {len(rest)} calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
