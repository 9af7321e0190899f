"""``InvRLTrainer``: Algorithm 1 of the paper.

    stage 0   pretrain the UltraGCN-MM backbone on the raw content c (or load it)
    for t = 1..T:
        M3    partition the training interactions into environments (eq. 6-7)
        M4    learn the invariant mask m across the environments (eq. 8-12)
    M5/M6     a fresh UltraGCN-MM on Phi = m * c, trained and early-stopped by RecBole's
              fit loop and evaluated by RecBole's evaluator (eq. 13)

Each stage starts from its own seed (``seed + stage index``) and its result is saved to a
state file when it completes, so ``resume=True`` continues an interrupted run from the
last completed stage and ends exactly where an uninterrupted run ends.

In a multi-process run (RecBole's ``nproc``) every rank pretrains and trains the final
model under DDP; the M3 and M4 stages run on rank 0, which broadcasts the environments
and the mask, so all ranks go on with the same Phi = m * c.
"""
from __future__ import annotations

import os
from time import time
from typing import Any, Callable

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color
from tqdm import tqdm

from recbole_invrl.compat import (
    CompatTrainerMixin,
    atomic_torch_save,
    atomic_write,
    load_checkpoint,
    with_compat_mixins,
    write_json_atomic,
)
from recbole_invrl.distributed import barrier, broadcast_, is_decider
from recbole_invrl.invariance import EnvironmentModels, FrozenBackbone, MaskLearner, TrainingInteractions
from recbole_invrl.invariance.mask import learn_mask, mask_summary
from recbole_invrl.invariance.partition import environment_sizes, moved_share, train_environments
from recbole_invrl.model.general_recommender.invrl import config_with


class InvRLTrainer(CompatTrainerMixin, Trainer):
    """Runs pretraining, T x (partition, mask) and the final model's RecBole fit."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.optimizer = self._build_optimizer(params=model.final.parameters())
        stem = os.path.splitext(self.saved_model_file)[0]
        self.mask_file, self.record_file = f"{stem}-mask.npy", f"{stem}-record.json"
        self.pretrain_file = f"{stem}-pretrain.pth"
        self.state_file = os.path.join(
            self.checkpoint_dir, f"InvRL-{config['dataset']}-seed{config['seed']}.state.pth"
        )
        self.decides = is_decider(config)  # rank 0 (or the only process) runs M3 and M4
        self.completed: list[str] = []
        self.envs: torch.Tensor | None = None
        self.record: dict[str, Any] = {
            "mask_fields": [[f, w] for f, w in model.content_layout],
            "partition": [],
            "mask": [],
            "stage_seconds": {},
        }

    # ------------------------------------------------------------------ Algorithm 1
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.config["resume"]:
            self._restore_state()
        interactions = TrainingInteractions.from_dataset(train_data._dataset, self.device)
        self._stage("pretrain", 0, lambda: self.pretrain(train_data, valid_data, verbose, show_progress))
        frozen = FrozenBackbone(self.model.backbone) if self.decides else None
        growth = self.config["penalty_growth"]
        iterations = self.config["invrl_iterations"]
        for t in range(1, iterations + 1):
            self._stage(f"partition-{t}", 2 * t - 1,
                        lambda: self.partition(t, frozen, interactions, show_progress), decided=True)
            self._stage(f"mask-{t}", 2 * t, lambda: self.learn_mask(
                t, frozen, interactions, self.config["alpha"] * growth ** (t - 1),
                self.config["mask_lambda"] * growth ** (t - 1), show_progress), decided=True)
            self._share_decisions(len(interactions))
        self.model.start_final_model()
        self._seed(2 * iterations + 1, train_data)
        self._log("final", "M5/M6: fresh UltraGCN-MM on Phi = m * c, RecBole fit loop")
        start = time()
        result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        self.record["stage_seconds"]["final"] = time() - start
        self._write_mask_and_record()
        return result

    # ------------------------------------------------------------------ stage 0
    def pretrain(self, train_data, valid_data, verbose: bool, show_progress: bool) -> None:
        """Train the backbone on the raw content with RecBole's fit loop, or load it."""
        backbone = self.model.backbone
        if self.config["pretrained_path"]:
            backbone.load_state_dict(load_checkpoint(self.config["pretrained_path"], self.device)["state_dict"])
            self._log("pretrain", f"loaded backbone from {self.config['pretrained_path']}")
            return
        config = config_with(self.config, epochs=self.config["pretrain_epochs"])
        trainer = with_compat_mixins(Trainer)(config, backbone)
        trainer.saved_model_file = self.pretrain_file
        trainer.fit(train_data, valid_data, verbose=verbose, saved=True, show_progress=show_progress)
        barrier(self.config)  # rank 0 writes the best checkpoint; every rank reloads it
        trainer._load_model_weights(load_checkpoint(self.pretrain_file, self.device))
        self._log("pretrain", f"backbone trained, best kept: {self.pretrain_file}")

    # ------------------------------------------------------------------ M3
    def partition(self, t: int, frozen: FrozenBackbone, interactions: TrainingInteractions, show_progress: bool) -> None:
        """Alternate environment learning (eq. 6) and interaction separation (eq. 7)."""
        num_envs = self.config["num_envs"]
        if self.envs is None:  # interactions start in uniformly random environments
            self.envs = torch.randint(num_envs, (len(interactions),), device=self.device)
        for round_ in range(1, self.config["partition_rounds"] + 1):
            models = EnvironmentModels(frozen, num_envs, self.model.mask, self.config["partition_l1_weight"]).to(self.device)
            train_environments(models, interactions, self.envs, self.config["partition_epochs"],
                               self.config["train_batch_size"], self.config["learning_rate"],
                               self._progress(f"M3 t={t} r={round_}", show_progress))
            new_envs = models.assign(interactions)
            moved = moved_share(self.envs, new_envs).item()
            sizes = environment_sizes(new_envs, num_envs).tolist()
            self.envs = new_envs
            self.record["partition"].append({"iteration": t, "round": round_, "moved_share": moved, "env_sizes": sizes})
            self.tensorboard.add_scalar("InvRL/moved_share", moved, len(self.record["partition"]))
            self._log(f"partition-{t}", f"round {round_}: moved share {moved:.4f}, environment sizes {sizes}")
            if moved <= self.config["moved_threshold"]:
                break

    # ------------------------------------------------------------------ M4
    def learn_mask(self, t: int, frozen: FrozenBackbone, interactions: TrainingInteractions,
                   alpha: float, lam: float, show_progress: bool) -> None:
        """Learn m across the current environments (eq. 8-12)."""
        learner = MaskLearner(frozen, self.model.mask, self.config["num_envs"], self.config["mask_sigma"],
                              self.config["mask_type"], self.config["mask_reg"])
        history = learn_mask(learner, interactions, self.envs, self.config["mask_epochs"],
                             self.config["train_batch_size"], self.config["learning_rate"],
                             self.config["mask_lr"], alpha, lam,
                             self._progress(f"M4 t={t}", show_progress))
        self.model.set_mask(learner.mask)
        summary = mask_summary(self.model.mask, self.model.content_layout)
        self.record["mask"].append({
            "iteration": t, "alpha": alpha, "lambda": lam,
            "risk_penalty_per_epoch": [list(h) for h in history],
            "per_modality": summary, "mask": self.model.mask.tolist(),
        })
        for field, stats in summary.items():
            self.tensorboard.add_scalar(f"InvRL/mask_mean/{field}", stats["mean"], t)
        stats = ", ".join(f"{f} mean {s['mean']:.3f} min {s['min']:.3f} max {s['max']:.3f}" for f, s in summary.items())
        self._log(f"mask-{t}", f"alpha {alpha:.3f} lambda {lam:.3f}; {stats}")

    # ------------------------------------------------------------------ state
    def _stage(self, name: str, index: int, run: Callable[[], None], decided: bool = False) -> None:
        """Run a stage unless a resumed state has it; a ``decided`` stage runs on rank 0 only."""
        if name in self.completed:
            self._log(name, "already completed (resumed)")
            return
        self._seed(index)
        start = time()
        if self.decides or not decided:
            run()
        self.record["stage_seconds"][name] = time() - start
        self.completed.append(name)
        self._save_state()

    def _seed(self, index: int, train_data=None) -> None:
        """Every stage starts from its own seed, so a resumed run repeats it exactly
        (offset by the rank, like RecBole's model seed, so ranks draw their own negatives)."""
        init_seed(self.config["seed"] + index + self.config["local_rank"], self.config["reproducibility"])
        if train_data is not None:
            train_data.generator.manual_seed(self.config["seed"] + index)

    def _share_decisions(self, n_interactions: int) -> None:
        """Every rank takes rank 0's environments and mask (no-op in one process)."""
        if self.envs is None:
            self.envs = torch.zeros(n_interactions, dtype=torch.long, device=self.device)
        broadcast_(self.envs, self.config)
        broadcast_(self.model.mask, self.config)

    def _save_state(self) -> None:
        if not self.decides:
            return
        state = {
            "completed": list(self.completed),
            "envs": self.envs,
            "mask": self.model.mask.detach().clone(),
            "backbone": self.model.backbone.state_dict(),
            "record": self.record,
        }
        atomic_torch_save(state, self.state_file)
        write_json_atomic(self.record, self.record_file)

    def _restore_state(self) -> None:
        if not os.path.isfile(self.state_file):
            self._log("resume", f"no state file {self.state_file}; starting from the beginning")
            return
        state = load_checkpoint(self.state_file, self.device)
        self.completed, self.envs, self.record = state["completed"], state["envs"], state["record"]
        self.model.backbone.load_state_dict(state["backbone"])
        self.model.set_mask(state["mask"])
        self._log("resume", f"completed stages: {self.completed}")

    def _write_mask_and_record(self) -> None:
        if not self.decides:
            return
        mask = self.model.mask.detach().cpu().numpy()
        atomic_write(self.mask_file, lambda tmp: _save_npy(tmp, mask), ".npy")
        write_json_atomic(self.record, self.record_file)

    def extra_results(self) -> dict[str, Any]:
        """What ``run_recbole_invrl`` adds to its result (and ``--result_json``)."""
        return {"mask_path": self.mask_file, "mask_fields": self.record["mask_fields"],
                "record_path": self.record_file}

    # ------------------------------------------------------------------ output
    def _log(self, stage: str, message: str) -> None:
        self.logger.info(set_color(f"[InvRL {stage}] ", "green") + message)

    @staticmethod
    def _progress(description: str, show: bool):
        if not show:
            return None
        return lambda iterable: tqdm(iterable, desc=set_color(description, "pink"), ncols=100)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, array)

