"""GPU check: UltraGCN-MM and a short InvRL schedule on a Kwai-shaped synthetic set.

Prints, per model: time per training epoch, time per full-sort evaluation, InvRL's stage
times, peak GPU memory (``torch.cuda.max_memory_allocated``), test NDCG@10, and the number
of host synchronisations inside training steps (``torch.cuda.set_sync_debug_mode``) of the
backbone, the environment models (M3) and the mask learner (M4): 0 means no step waits for
the host. ``bench/gpu_check.sh`` runs it on a GPU machine; ``--device cpu`` runs the
same path here (no GPU figures then).

    python bench/bench_gpu.py [--scale 1.0] [--epochs 2] [--out bench/out] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

STEPS_CHECKED = 5  # training steps per model run under the sync detector


def schedule(args) -> dict[str, Any]:
    return {
        "epochs": args.epochs, "pretrain_epochs": args.epochs, "eval_step": 1, "stopping_step": 10 ** 6,
        "invrl_iterations": 1, "num_envs": args.envs, "partition_epochs": 1, "partition_rounds": 1,
        "moved_threshold": 0.0, "mask_epochs": 1, "show_progress": False, "state": "WARNING",
        "use_gpu": args.device == "cuda", "train_batch_size": args.batch_size,
    }


class Timings:
    """Wall time (device-synchronised) and peak device memory of named stages."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.stages: dict[str, list[float]] = {}
        self.peak_bytes = 0

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.stages.setdefault(name, []).append(time.perf_counter() - start)
        if self.cuda:
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated())

    def wrap(self, owner: type, method: str, name: str) -> None:
        original = getattr(owner, method)
        timings = self

        def timed(self, *args, **kwargs):
            with timings.stage(name):
                return original(self, *args, **kwargs)

        setattr(owner, method, timed)

    def summary(self) -> dict[str, Any]:
        return {name: {"calls": len(v), "mean_s": sum(v) / len(v), "total_s": sum(v)}
                for name, v in self.stages.items()}


def count_syncs(run_steps) -> int | None:
    """Host synchronisations made by ``run_steps()`` (None off CUDA, where none exist)."""
    if not torch.cuda.is_available() or not hasattr(torch.cuda, "set_sync_debug_mode"):
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_steps()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def step_syncs(trainer, train_data) -> dict[str, int | None]:
    """Sync count of STEPS_CHECKED training steps of each of InvRL's models (or the backbone)."""
    from recbole_invrl.invariance import FrozenBackbone, MaskLearner, TrainingInteractions
    from recbole_invrl.invariance.common import environment_batches
    from recbole_invrl.invariance.partition import environment_models

    model = trainer.model
    backbone = getattr(model, "backbone", model)
    device = trainer.device
    batches = [b.to(device) for _, b in zip(range(STEPS_CHECKED), train_data)]

    def backbone_steps():
        for batch in batches:
            backbone.calculate_loss(batch).backward()

    result = {"backbone step": count_syncs(backbone_steps)}
    if backbone is model:
        return result
    interactions = TrainingInteractions.from_dataset(train_data._dataset, device)
    frozen = FrozenBackbone(backbone)
    envs = torch.randint(trainer.config["num_envs"], (len(interactions),), device=device)
    num_envs = trainer.config["num_envs"]
    environments = environment_models(trainer.config["partition_models"], frozen, num_envs, model.mask, 0.1)
    learner = MaskLearner(frozen, model.mask, num_envs, 0.1)
    steps = environment_batches(envs, num_envs, trainer.config["train_batch_size"], cycle=True)[:STEPS_CHECKED]
    prepared = [(b, frozen.training_batch(interactions, b.index)) for b in steps]

    def environment_steps():
        for batch, (users, pos, neg, items) in prepared:
            environments.loss(users, pos, neg, items, batch).backward()

    def mask_steps():
        for batch, (users, pos, neg, items) in prepared:
            learner.loss(users, pos, neg, items, batch, 1.0, 0.1).total.backward()

    result["M3 environment step"] = count_syncs(environment_steps)
    result["M4 mask step"] = count_syncs(mask_steps)
    return result


def run_model(model: str, name: str, common: dict[str, Any], device: str) -> dict[str, Any]:
    """One model run with its epochs, evaluations and stages timed."""
    from recbole.trainer import Trainer

    import recbole_invrl.quick_start as quick_start
    from recbole_invrl.trainer import InvRLTrainer

    timings = Timings(device)
    originals = {(c, m): getattr(c, m) for c, m in [(Trainer, "_train_epoch"), (Trainer, "evaluate"),
                                                    (InvRLTrainer, "partition"), (InvRLTrainer, "learn_mask")]}
    timings.wrap(Trainer, "_train_epoch", "train epoch")
    timings.wrap(Trainer, "evaluate", "full-sort evaluation")
    timings.wrap(InvRLTrainer, "partition", "M3 partition (per iteration)")
    timings.wrap(InvRLTrainer, "learn_mask", "M4 mask (per iteration)")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        result = quick_start.run_recbole_invrl(model, name, config_dict=common)
    finally:
        for (owner, method), original in originals.items():
            setattr(owner, method, original)
    wall = time.perf_counter() - start
    return {"model": model, "wall_s": wall, "stages": timings.summary(),
            "peak_gpu_mib": timings.peak_bytes / 2 ** 20 if device == "cuda" else None,
            "test_ndcg@10": result["test_result"]["ndcg@10"], "record_path": result.get("record_path")}


def sync_report(model: str, name: str, common: dict[str, Any]) -> dict[str, int | None]:
    """Build the model like a run does (1 epoch) and count syncs in its training steps."""
    from recbole.utils import init_seed

    from recbole_invrl.config import Config
    from recbole_invrl.data import create_dataset, data_preparation
    from recbole_invrl.utils import get_model, get_trainer

    config = Config(model, name, config_dict={**common, "epochs": 1, "pretrain_epochs": 1})
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    return step_syncs(trainer, train_data)


def print_report(report: dict[str, Any]) -> None:
    print(f"device: {report['device']}; data: {report['data']}")
    print(f"schedule: {report['schedule']}")
    for run in report["runs"]:
        peak = "n/a" if run["peak_gpu_mib"] is None else f"{run['peak_gpu_mib']:,.0f} MiB"
        print(f"\n== {run['model']}: wall {run['wall_s']:.1f} s, peak GPU memory {peak}, "
              f"test NDCG@10 {run['test_ndcg@10']:.4f}")
        print(f"{'stage':<32}{'calls':>6}{'mean s':>10}{'total s':>10}")
        for stage, t in run["stages"].items():
            print(f"{stage:<32}{t['calls']:>6}{t['mean_s']:>10.3f}{t['total_s']:>10.2f}")
        for step, syncs in run["syncs"].items():
            print(f"host syncs in {STEPS_CHECKED} {step}s: {'n/a (no CUDA)' if syncs is None else syncs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Kwai's size")
    parser.add_argument("--epochs", type=int, default=2, help="UltraGCN-MM, pretrain and final epochs")
    parser.add_argument("--envs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config must not read this script's flags
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no GPU (use --device cpu for a dry run)")

    from recbole_invrl.compat import write_json_atomic
    from recbole_invrl.data.synthetic import generate

    out, name = Path(args.out), f"gpu-kwai-{args.scale}"
    start = time.perf_counter()
    if not (out / name / f"{name}.train.inter").is_file():
        generate("kwai", args.scale, out, layout="atomic", seed=0, name=name)
    counts = json.loads((out / name / "truth.json").read_text())["counts"]
    common = {"data_path": str(out), "checkpoint_dir": str(out / "saved"), **schedule(args)}
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "data": f"{name}: {counts['users']:,} users, {counts['items']:,} items, {counts['train']:,} train "
                f"interactions, v_feat 2,048-d (generated in {time.perf_counter() - start:.0f} s)",
        "schedule": {k: common[k] for k in ("epochs", "pretrain_epochs", "invrl_iterations", "num_envs",
                                            "partition_epochs", "partition_rounds", "mask_epochs",
                                            "train_batch_size")},
        "runs": [],
    }
    for model in ("UltraGCNMM", "InvRL"):
        run = run_model(model, name, common, args.device)
        run["syncs"] = sync_report(model, name, common)
        report["runs"].append(run)
    print_report(report)
    if args.json:
        write_json_atomic(report, args.json)


if __name__ == "__main__":
    main()
