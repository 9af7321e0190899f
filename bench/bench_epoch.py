"""The plugin's models beside RecBole's LightGCN: seconds per training epoch and peak memory.

Each model trains in its own child process (so peak RSS is its own) on the same dataset
and split, with its own yaml's batch size unless ``--batch_size`` sets one for all.
Also times negative sampling (batches of 512 unless set): RecBole's dataloader duplicating each
positive row per negative (``train_neg_sample_args.sample_num = neg_num``) against
UltraGCN-MM's on-device ``torch.randint`` draw, over one epoch of the same batches.

    python bench/bench_epoch.py [--dataset ml-100k-mm] [--epochs 3] [--batch_size N] [--models A,B]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def build(model: str, dataset: str, batch_size: int, extra: dict | None = None):
    from recbole.utils import init_seed

    from recbole_invrl import allocator
    from recbole_invrl.config import Config
    from recbole_invrl.data import create_dataset, data_preparation

    batch = {"train_batch_size": batch_size} if batch_size else {}
    config = Config(model, dataset, config_dict={
        **batch, "show_progress": False, "state": "WARNING", **(extra or {})})
    allocator.apply_config(config)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, _ = data_preparation(config, data)
    return config, train, valid


def child_train(model_name: str, dataset: str, epochs: int, batch_size: int) -> dict:
    from recbole_invrl.utils import get_model, get_trainer

    config, train, valid = build(model_name, dataset, batch_size)
    model = get_model(model_name)(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train, epoch)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    trainer.evaluate(valid, load_best_model=False)
    return {
        "model": model_name,
        "epoch_seconds": seconds,
        "eval_seconds": time.perf_counter() - start,
        "batches": len(train),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_sampling(dataset: str, batch_size: int, neg_num: int) -> dict:
    batch_size = batch_size or 512
    import torch

    config, recbole_train, _ = build("BPR", dataset, batch_size, {
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": neg_num}})
    start = time.perf_counter()
    rows = sum(len(batch) for batch in recbole_train)
    recbole_seconds = time.perf_counter() - start

    config, train, _ = build("UltraGCNMM", dataset, batch_size)
    n_items = train._dataset.item_num
    start = time.perf_counter()
    for batch in train:
        torch.randint(1, n_items, (len(batch), neg_num), device=config["device"])
    device_seconds = time.perf_counter() - start
    return {"recbole_rows": rows, "recbole_seconds": recbole_seconds,
            "device_seconds": device_seconds}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k-mm")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=0, help="0: each model's own")
    parser.add_argument("--neg_num", type=int, default=50)
    parser.add_argument("--models", default="UltraGCNMM,UltraGCN,VBPR,DUIF,MMGCN,GRCN,LATTICE,FREEDOM,LightGCN")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config must not read this script's flags
    if args.child:
        kind, *rest = args.child
        if kind == "sampling":
            print(json.dumps(child_sampling(args.dataset, args.batch_size, args.neg_num)))
        else:
            print(json.dumps(child_train(kind, args.dataset, args.epochs, args.batch_size)))
        return
    common = [f"--dataset={args.dataset}", f"--epochs={args.epochs}",
              f"--batch_size={args.batch_size}", f"--neg_num={args.neg_num}"]
    batch = args.batch_size or "each model's own"
    print(f"dataset {args.dataset}, batch size {batch}, {args.epochs} epochs each")
    print(f"{'model':<12} {'s/epoch (median)':>17} {'epochs (s)':>24} {'eval s':>7} {'peak RSS MB':>12}")
    for model in args.models.split(","):
        r = run_child(*common, "--child", model)
        median = sorted(r["epoch_seconds"])[len(r["epoch_seconds"]) // 2]
        epochs = " ".join(f"{s:.2f}" for s in r["epoch_seconds"])
        print(f"{model:<12} {median:>17.2f} {epochs:>24} {r['eval_seconds']:>7.2f} "
              f"{r['peak_rss_mb']:>12.0f}")
    s = run_child(*common, "--child", "sampling")
    print(f"negative sampling, {args.neg_num} per positive, one epoch: RecBole dataloader "
          f"{s['recbole_seconds']:.2f} s ({s['recbole_rows']} rows) vs on-device draw "
          f"{s['device_seconds']:.2f} s")


if __name__ == "__main__":
    main()
