"""CLI: ``python -m recbole_invrl.data.convert {grcn,mmrec} --src DIR --name NAME [--out DIR]``.

Exit status 0 on success, 2 with a one-line ``error: ...`` on stderr for bad input.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from .atomic import ConversionError
from .grcn import convert_grcn
from .mmrec import convert_mmrec

CONVERTERS = {"grcn": convert_grcn, "mmrec": convert_mmrec}
HELP = {
    "grcn": "GRCN/MMGCN/InvRL release folder (train.npy, val_full.npy, test_full.npy, features)",
    "mmrec": "MMRec folder (NAME.inter with x_label, image_feat.npy, text_feat.npy)",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per source layout)."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_invrl.data.convert",
        description="Convert a multimedia-recommendation data folder into RecBole atomic files.",
    )
    sub = parser.add_subparsers(dest="layout", required=True, metavar="{grcn,mmrec}")
    for layout in CONVERTERS:
        p = sub.add_parser(layout, help=HELP[layout], description=HELP[layout])
        p.add_argument("--src", required=True, help="source folder")
        p.add_argument("--name", required=True, help="dataset name (output folder and file stem)")
        p.add_argument("--out", default="atomic_data", help="output root (default: atomic_data)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; return the exit status."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warning
        try:
            summary = CONVERTERS[args.layout](
                args.src, args.name, args.out, progress=not args.quiet
            )
        except ConversionError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(summary)
    print(f"wrote {summary.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
