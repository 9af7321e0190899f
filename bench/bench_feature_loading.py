"""Loading a Kwai-shaped float_seq item file: RecBole vs MultimodalDataset, uncached and cached.

Writes, in a temporary folder, an atomic dataset shaped like InvRL's Kwai data: an item
file with 86,483 items x a 2,048-d ``v_feat`` float_seq column (random values in (-1, 1)
written with 7 significant digits, e.g. ``-0.1234567``, about 1.9 GB) and a small
``.inter`` file. Then builds the whole dataset (``Dataset(config)``: both item and inter
files, remapping, features as tensors) once per variant, each in a fresh Python
process:

* ``recbole``: RecBole 1.2.1's ``Dataset`` (pandas' Python engine, one float() per value);
* ``ours, no cache``: ``MultimodalDataset`` with ``feature_cache: False``;
* ``ours, first load``: the same with the cache on and empty (parse, then write the cache);
* ``ours, cached``: the same again (reads the cache the previous run wrote);
* ``numpy``: the item file parsed with the libraries alone, as a replacement for the
  plugin's parser would: pandas' C reader in chunks of ``NUMPY_CHUNK_ROWS`` rows, each
  chunk's cells joined and read by numpy's text parser (``np.fromstring``). It times the
  parse only; ``first load with it`` prices the first load with this parse in place of ours.

For each it reports the seconds spent parsing the item file (``_load_feat``) and building
the whole dataset, and the peak RSS after the parse and at the end, above a process that
only imports the libraries. Every variant must produce the same ``v_feat`` tensor.

    python bench/bench_feature_loading.py            # full size: a few minutes on 2 cores
    python bench/bench_feature_loading.py --rows 5000
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASET = "kwai_bench"
KWAI_ITEMS, KWAI_DIM = 86_483, 2_048
VARIANTS = {
    "recbole": {"dataset": "recbole", "feature_cache": False},
    "ours, no cache": {"dataset": "ours", "feature_cache": False},
    "ours, first load": {"dataset": "ours", "feature_cache": True},
    "ours, cached": {"dataset": "ours", "feature_cache": True},
    "numpy": {"dataset": "numpy"},
}
NUMPY_CHUNK_ROWS = 4096


# -- the data -----------------------------------------------------------------------------


def write_dataset(folder: Path, rows: int, dim: int, seed: int = 0) -> Path:
    """``folder/kwai_bench/kwai_bench.{item,inter}``; returns the item file."""
    data = folder / DATASET
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    item = data / f"{DATASET}.item"
    with open(item, "wb") as f:
        f.write(b"item_id:token\tv_feat:float_seq\n")
        for start in range(0, rows, 1000):
            f.write(_item_lines(rng, np.arange(start, min(start + 1000, rows)), dim))
    users = rng.integers(0, max(rows // 40, 10), size=20 * max(rows // 40, 10))
    items = rng.integers(0, rows, size=len(users))
    lines = [f"{u}\t{i}" for u, i in zip(users.tolist(), items.tolist())]
    inter = "user_id:token\titem_id:token\n" + "\n".join(lines) + "\n"
    (data / f"{DATASET}.inter").write_text(inter)
    return item


def _item_lines(rng, ids: np.ndarray, dim: int) -> bytes:
    """Rows ``id<TAB>v v v ...`` with values like ``-0.1234567``, built as one byte array."""
    n = len(ids)
    cells = np.zeros((n, dim, 11), dtype=np.uint8)  # [sign] 0 . 7 digits, separator
    cells[:, :, 0] = np.where(rng.random((n, dim)) < 0.5, ord("-"), 0)  # 0: dropped below
    cells[:, :, 1], cells[:, :, 2] = ord("0"), ord(".")
    cells[:, :, 3:10] = rng.integers(0, 10, size=(n, dim, 7), dtype=np.uint8) + ord("0")
    cells[:, :, 10] = ord(" ")
    cells[:, -1, 10] = ord("\n")
    labels = np.char.encode(np.char.add(ids.astype(str), "\t"))
    label_bytes = np.frombuffer(labels.tobytes(), dtype=np.uint8).reshape(n, labels.dtype.itemsize)
    flat = np.concatenate([label_bytes, cells.reshape(n, -1)], axis=1).ravel()
    return flat[flat != 0].tobytes()


# -- one measurement (in a fresh process) ------------------------------------------------


def child(variant: str, root: Path, baseline: bool) -> dict:
    from recbole.config import Config
    from recbole.data.dataset import Dataset

    from recbole_invrl.data.dataset import MultimodalDataset

    if baseline:
        return {"maxrss_kb": _maxrss_kb()}
    settings = VARIANTS[variant]
    if settings["dataset"] == "numpy":
        return numpy_parse(root / DATASET / f"{DATASET}.item")
    config = Config(model="BPR", dataset=DATASET, config_dict={
        "data_path": str(root),
        "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "v_feat"]},
        "normalize_all": False,
        "feature_cache": settings["feature_cache"],
        "show_progress": False,
    })
    cls = Dataset if settings["dataset"] == "recbole" else MultimodalDataset
    timing = {}
    original = cls._load_feat

    def timed_load_feat(self, filepath, source):
        start = time.perf_counter()
        frame = original(self, filepath, source)
        if str(filepath).endswith(".item"):
            timing["parse_s"], timing["parse_maxrss_kb"] = time.perf_counter() - start, _maxrss_kb()
        return frame

    cls._load_feat = timed_load_feat
    start = time.perf_counter()
    dataset = cls(config)
    dataset._change_feat_format()  # what Dataset.build() does first: DataFrames -> tensors
    timing["dataset_s"] = time.perf_counter() - start
    v_feat = dataset.get_item_feature()["v_feat"].numpy()
    return {**timing, "maxrss_kb": _maxrss_kb(), "shape": list(v_feat.shape), "sha256": row_digest(v_feat)}


def row_digest(matrix: np.ndarray) -> str:
    """sha256 of the rows in a canonical order (the datasets order items by their remapped id)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    order = np.lexsort(matrix[:, :4].T[::-1])
    return hashlib.sha256(matrix[order].tobytes()).hexdigest()[:16]


def numpy_parse(item: Path) -> dict:
    """The item file's v_feat through pandas' C reader and numpy's text parser."""
    import pandas as pd

    start = time.perf_counter()
    blocks = []
    for chunk in pd.read_csv(item, sep="\t", dtype=str, engine="c", chunksize=NUMPY_CHUNK_ROWS):
        cells = chunk["v_feat:float_seq"]
        blocks.append(np.fromstring(" ".join(cells), dtype=np.float32, sep=" ").reshape(len(cells), -1))
    matrix = np.concatenate(blocks)
    seconds = time.perf_counter() - start
    # RecBole's item 0 is padding: the dataset's v_feat has a zero row besides the file's
    matrix = np.concatenate([np.zeros((1, matrix.shape[1]), np.float32), matrix])
    return {"parse_s": seconds, "parse_maxrss_kb": _maxrss_kb(), "dataset_s": float("nan"),
            "maxrss_kb": _maxrss_kb(), "shape": list(matrix.shape), "sha256": row_digest(matrix)}


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def run_child(variant: str, root: Path, baseline: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--root", str(root)]
    if baseline:
        command.append("--baseline")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the report ---------------------------------------------------------------------------


def report(results: dict[str, dict], base_kb: int, rows: int, dim: int, item: Path) -> None:
    matrix_mb = rows * dim * 4 / 1e6
    print(f"\nitem file: {rows:,} rows x {dim:,} floats, {item.stat().st_size / 1e9:.2f} GB; "
          f"float32 matrix {matrix_mb:,.0f} MB; peak RSS above a process that only imports "
          f"the libraries ({base_kb / 1024:,.0f} MiB)\n")
    stock = results["recbole"]
    header = (f"{'variant':<18} {'parse s':>8} {'x':>6} {'dataset s':>10} {'x':>6} "
              f"{'parse peak MB':>14} {'/matrix':>8} {'end peak MB':>12}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        parse_mb = (r["parse_maxrss_kb"] - base_kb) * 1024 / 1e6
        end_mb = (r["maxrss_kb"] - base_kb) * 1024 / 1e6
        built = (f"{r['dataset_s']:>10.2f} {stock['dataset_s'] / r['dataset_s']:>5.1f}x"
                 if r["dataset_s"] == r["dataset_s"] else f"{'-':>10} {'':>6}")  # numpy: parse only
        print(f"{name:<18} {r['parse_s']:>8.2f} {stock['parse_s'] / r['parse_s']:>5.1f}x {built} "
              f"{parse_mb:>14,.0f} {parse_mb / matrix_mb:>7.2f}x {end_mb:>12,.0f}")
    digests = {r["sha256"] for r in results.values()}
    same = len(digests) == 1
    print(f"\nv_feat tensors identical across variants: {same} ({', '.join(sorted(digests))})")
    ours, numpy_ = results["ours, first load"], results["numpy"]
    with_numpy = ours["dataset_s"] - ours["parse_s"] + numpy_["parse_s"]
    print(f"first load: {ours['dataset_s']:.2f} s with the plugin's parser, {with_numpy:.2f} s with "
          f"the numpy parse in its place (the plugin's parser saves {1 - ours['dataset_s'] / with_numpy:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=KWAI_ITEMS, help="items (default 86,483)")
    parser.add_argument("--dim", type=int, default=KWAI_DIM, help="floats per item (default 2,048)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
        print(json.dumps(child(args.child, Path(args.root), args.baseline)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_feature_loading-") as tmp:
        start = time.perf_counter()
        item = write_dataset(Path(tmp), args.rows, args.dim)
        seconds = time.perf_counter() - start
        print(f"wrote {item} ({item.stat().st_size / 1e9:.2f} GB) in {seconds:.1f} s")
        base_kb = run_child("recbole", Path(tmp), baseline=True)["maxrss_kb"]
        results = {}
        for variant in VARIANTS:
            results[variant] = run_child(variant, Path(tmp))
            print(f"  {variant}: parse {results[variant]['parse_s']:.2f} s, "
                  f"dataset {results[variant]['dataset_s']:.2f} s", flush=True)
        report(results, base_kb, args.rows, args.dim, item)


if __name__ == "__main__":
    main()
