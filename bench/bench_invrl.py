"""InvRL wall time per stage on a Tiktok-shaped synthetic set, next to UltraGCN-MM.

Generates the spurious-feature test bed with the Tiktok preset (V/A 128-d dense, text as
word ids embedded to 128-d) at ``--scale`` of the paper's size, runs InvRL with a stated
schedule and UltraGCN-MM for the same number of final epochs, and prints stage times,
per-unit times (one partition round, one mask epoch, one final epoch, one evaluation),
test NDCG@10 of both, and the mask's ROC-AUC and mean gates on the planted dimensions.

``RELEASE_SECONDS`` are per-unit times of the authors' release (github.com/nickwzk/InvRL,
its ``main.py``) on this data on a 2-core CPU machine: 13.5 s per partition round of 3
environments x 2 epochs, 18 s per mask epoch, 10 s per final-model epoch, 11 s per full
evaluation; ``release_estimate`` prices the same schedule with them.

``--backbone`` runs InvRL over another model (``invrl_backbone``) next to that model alone;
``--invariance_path forward`` makes M3 and M4 differentiate the backbone's own forward pass
(the path of graph backbones) instead of the eq. 14 closed form, so both can be timed on
UltraGCN-MM.

    python bench/bench_invrl.py [--scale 0.1] [--out bench/out] [--backbone MMGCN]
                                [--invariance_path auto|eq14|forward]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RELEASE_SECONDS = {"partition_round": 13.5, "mask_epoch": 18.0, "epoch": 10.0, "evaluation": 11.0}


def schedule(args) -> dict:
    return {
        "pretrain_epochs": args.epochs, "epochs": args.epochs, "eval_step": 1,
        "stopping_step": 10 ** 6, "invrl_iterations": args.iterations, "num_envs": args.envs,
        "partition_epochs": 2, "partition_rounds": args.rounds, "moved_threshold": 0.0,
        "mask_epochs": args.mask_epochs, "show_progress": False, "state": "WARNING",
    }


def release_estimate(s: dict) -> float:
    """The same schedule priced with the release's per-unit times (+1 test evaluation)."""
    env_epochs = s["num_envs"] * s["partition_epochs"]
    rounds = s["invrl_iterations"] * s["partition_rounds"] * env_epochs / 6  # 13.5 s = 3 x 2
    backbone_epochs = s["pretrain_epochs"] + s["epochs"]
    return (rounds * RELEASE_SECONDS["partition_round"]
            + s["invrl_iterations"] * s["mask_epochs"] * RELEASE_SECONDS["mask_epoch"]
            + backbone_epochs * (RELEASE_SECONDS["epoch"] + RELEASE_SECONDS["evaluation"])
            + RELEASE_SECONDS["evaluation"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--epochs", type=int, default=5, help="pretrain and final epochs")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--envs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--mask_epochs", type=int, default=2)
    parser.add_argument("--backbone", default="UltraGCNMM", help="invrl_backbone")
    parser.add_argument("--invariance_path", default="auto", choices=("auto", "eq14", "forward"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config must not read this script's flags

    import torch

    from recbole_invrl.data.synthetic import generate
    from recbole_invrl.invariance.truth import PlantedTruth
    from recbole_invrl.quick_start import run_recbole_invrl

    out = Path(args.out)
    name = f"bench-tiktok-{args.scale}"
    folder = out / name
    if not (folder / f"{name}.train.inter").is_file():
        generate("tiktok", args.scale, out, layout="atomic", seed=args.seed, name=name)
    counts = json.loads((folder / "truth.json").read_text())["counts"]
    plan = schedule(args)
    common = {"data_path": str(out), "checkpoint_dir": str(out / "saved")}
    label = "UltraGCN-MM" if args.backbone == "UltraGCNMM" else args.backbone

    start = time.perf_counter()
    invrl = run_recbole_invrl("InvRL", name, config_dict={
        **common, **plan, "invrl_backbone": args.backbone, "invariance_path": args.invariance_path})
    invrl_seconds = time.perf_counter() - start
    start = time.perf_counter()
    backbone = run_recbole_invrl(args.backbone, name, config_dict={**common, **plan})
    backbone_seconds = time.perf_counter() - start

    record = json.loads(Path(invrl["record_path"]).read_text())
    stages = record["stage_seconds"]
    partition = sum(v for k, v in stages.items() if k.startswith("partition"))
    mask = sum(v for k, v in stages.items() if k.startswith("mask"))
    rounds = len(record["partition"])
    final_epoch = stages["final"] / plan["epochs"]

    print(f"data: {name}: {counts['users']} users, {counts['items']} items, {counts['train']} train "
          f"interactions; modalities v_feat 128, a_feat 128, t_words (word ids -> 128)")
    print("schedule: " + ", ".join(f"{k}={plan[k]}" for k in (
        "pretrain_epochs", "epochs", "invrl_iterations", "num_envs", "partition_epochs",
        "partition_rounds", "mask_epochs")) + " (validation every epoch)"
          + f"; backbone {label}, invariance_path {args.invariance_path}")
    print(f"{'stage':<28}{'seconds':>10}")
    for key, value in stages.items():
        print(f"{key:<28}{value:>10.2f}")
    print(f"{'InvRL total (wall)':<28}{invrl_seconds:>10.2f}")
    print(f"{label + ' total (wall)':<28}{backbone_seconds:>10.2f}")
    print(f"per unit: partition round ({plan['num_envs']} envs x 2 epochs) {partition / rounds:.2f} s, "
          f"mask epoch {mask / (args.iterations * args.mask_epochs):.2f} s, "
          f"final epoch incl. validation {final_epoch:.2f} s")
    if args.backbone == "UltraGCNMM":
        estimate = release_estimate(plan)
        print(f"release on the same schedule (its per-unit times): {estimate:.1f} s -> "
              f"speed-up {estimate / invrl_seconds:.1f}x")
    mask_values = np.load(invrl["mask_path"])
    truth = PlantedTruth.load(folder, invrl["mask_fields"], counts["train"])
    scores, roles = truth.mask_scores(torch.from_numpy(mask_values)), truth.roles
    print(f"mask: ROC-AUC {scores['auc']:.3f}; mean gate invariant dims {mask_values[roles == 1].mean():.3f}, "
          f"spurious dims {mask_values[roles == 0].mean():.3f}")
    print(f"test NDCG@10: InvRL {invrl['test_result']['ndcg@10']:.4f}, "
          f"{label} {backbone['test_result']['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
