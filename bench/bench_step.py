"""Training-step figures behind the README's "Speed settings" and its step budget.

On the bench_invrl data (the Tiktok-shaped test bed at ``--scale``, generated if missing),
with UltraGCN-MM's defaults (batch 512, 50 negatives, 10 neighbours), prints:

1. the time of one Adam step over UltraGCN-MM's parameters: RecBole's Adam as it builds
   it, and the same with ``fused=True`` (``fused_optimizer``);
2. a training epoch and its minor page faults with glibc's default malloc thresholds and
   with ``keep_freed_memory``, each in a fresh process, alternating ``--runs`` times;
3. the word-bag sum forward + backward: torch's COO sparse matmul against the CSR matrix
   with the transposed-CSR backward (``BagSum``);
4. the mean time of a training step, and the rate of its content projection (every
   item, word tables precomputed) next to a 2048 x 2048 matmul on the same cores.

    python bench/bench_step.py [--scale 0.1] [--out bench/out] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEPS = 200  # optimiser steps and bag sums timed per variant


def build(out: Path, name: str, extra: dict | None = None):
    """(config, train data, model, trainer) of UltraGCN-MM on the bench data."""
    from recbole.utils import init_seed

    from recbole_invrl.config import Config
    from recbole_invrl.data import create_dataset, data_preparation
    from recbole_invrl.utils import get_model, get_trainer

    config = Config("UltraGCNMM", name, config_dict={
        "data_path": str(out), "checkpoint_dir": str(out / "saved"), "show_progress": False,
        "state": "WARNING", **(extra or {})})
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("UltraGCNMM")(config, train._dataset)
    return config, train, model, get_trainer(config["MODEL_TYPE"], "UltraGCNMM")(config, model)


def per_call_ms(run, repeats: int = STEPS) -> float:
    for _ in range(3):
        run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats * 1000


def adam_steps(model) -> dict[str, float]:
    import torch

    from recbole_invrl.optim import fused_copy

    for p in model.parameters():
        p.grad = torch.randn_like(p)
    plain = torch.optim.Adam(model.parameters(), lr=1e-3)
    return {"RecBole's Adam": per_call_ms(plain.step), "fused": per_call_ms(fused_copy(
        torch.optim.Adam(model.parameters(), lr=1e-3)).step)}


def bag_sums(model) -> dict[str, float]:
    import torch

    from recbole_invrl.model.content import BagSum

    encoder = model.content
    field = next(iter(encoder.word_embeddings))
    weight = encoder.word_embeddings[field].weight
    bags, bags_t = getattr(encoder, f"bags_{field}"), getattr(encoder, f"bags_t_{field}")
    coo = bags.to_sparse_coo()
    return {
        "COO sparse.mm": per_call_ms(lambda: torch.sparse.mm(coo, weight).sum().backward()),
        "CSR + transposed-CSR backward": per_call_ms(lambda: BagSum.apply(weight, bags, bags_t).sum().backward()),
    }


def step_split(config, train, model, trainer) -> dict[str, float]:
    """Mean ms of a training step, and GFLOP/s of the content projection vs a big matmul."""
    import torch

    trainer._train_epoch(train, 0)  # warm up
    start = time.perf_counter()
    trainer._train_epoch(train, 1)
    step_ms = (time.perf_counter() - start) / len(train) * 1000
    weight = model.projection.weight.detach()
    encoder = model.content
    with torch.no_grad():  # the word tables precomputed: the projection's GEMMs alone
        tables = {field: encoder.word_table(field) for field in encoder.word_embeddings}
        project_ms = per_call_ms(lambda: encoder.project(None, weight, tables), 50)
    flop = 2 * model.n_items * model.content.dim * weight.shape[0]
    square = torch.randn(2048, 2048)
    square_ms = per_call_ms(lambda: square @ square, 20)
    return {"step ms": step_ms, "projection GFLOP/s": flop / project_ms / 1e6,
            "2048^2 matmul GFLOP/s": 2 * 2048**3 / square_ms / 1e6}


def child_epochs(out: Path, name: str, keep: bool) -> dict:
    from recbole_invrl.allocator import keep_freed_memory

    applied = keep_freed_memory() if keep else False
    _, train, _, trainer = build(out, name, {"keep_freed_memory": keep})
    rows = []
    for epoch in range(3):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        trainer._train_epoch(train, epoch)
        rows.append((time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return {"applied": applied, "epochs": rows}


def allocator_runs(out: Path, name: str, runs: int) -> dict[str, list]:
    results: dict[str, list] = {"glibc defaults": [], "keep_freed_memory": []}
    for _ in range(runs):
        for label, keep in (("glibc defaults", "0"), ("keep_freed_memory", "1")):
            done = subprocess.run([sys.executable, __file__, "--child", keep, "--out", str(out), "--name", name],
                                  capture_output=True, text=True, check=True)
            results[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config must not read this script's flags
    out = Path(args.out)
    if args.child is not None:
        print(json.dumps(child_epochs(out, args.name, args.child == "1")))
        return
    from recbole_invrl.data.synthetic import generate

    name = f"bench-tiktok-{args.scale}"
    if not (out / name / f"{name}.train.inter").is_file():
        generate("tiktok", args.scale, out, layout="atomic", seed=args.seed, name=name)
    config, train, model, trainer = build(out, name, {"keep_freed_memory": False})
    print(f"data: {name}, {model.n_items - 1} items, {len(train)} batches of {config['train_batch_size']}")
    for label, ms in adam_steps(model).items():
        print(f"Adam step, {label:<32}{ms:8.2f} ms")
    for label, ms in bag_sums(model).items():
        print(f"word-bag sum fwd+bwd, {label:<32}{ms:8.2f} ms")
    for label, runs in allocator_runs(out, name, args.runs).items():
        seconds = [s for r in runs for s, _ in r["epochs"][1:]]  # the first epoch warms up
        faults = [f for r in runs for _, f in r["epochs"][1:]]
        print(f"epoch with {label:<20} median {statistics.median(seconds):.2f} s, "
              f"median {statistics.median(faults):,.0f} minor faults (epochs 2-3 of {args.runs} runs)")
    from recbole_invrl.allocator import keep_freed_memory

    keep_freed_memory()
    for label, value in step_split(config, train, model, trainer).items():
        print(f"{label:<28}{value:10.1f}")


if __name__ == "__main__":
    main()
