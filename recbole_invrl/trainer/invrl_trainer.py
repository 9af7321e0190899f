"""``InvRLTrainer``: Algorithm 1 of the paper.

    stage 0   pretrain the backbone (UltraGCN-MM) on the raw content c (or load it)
    for t = 1..T:
        M3    partition the training interactions into environments (eq. 6-7)
        M4    learn the invariant mask m across the environments (eq. 8-12)
    M5/M6     a fresh backbone model on Phi = m * c, trained and early-stopped by RecBole's
              fit loop and evaluated by RecBole's evaluator (eq. 13); with several forms of
              Phi (``final_mask_forms``: soft m, a cut of m, ...) one final model per form,
              the one with the best validation score kept (the test split is never read)

With ``fixed_mask`` (a saved ``-mask.npy``) stages 0-M4 are skipped and the final model
is trained on that mask. Where the dataset's folder (or ``truth_dir``) holds a planted
truth (``recbole_invrl.invariance.truth``), the record and the log also give the ARI and
purity of every partition round and the mask's ROC-AUC after every iteration.

Each stage starts from its own seed (``seed + stage index``) and its result is saved to a
state file when it completes, so ``resume=True`` continues an interrupted run from the
last completed stage and ends exactly where an uninterrupted run ends. The state file is
named by a hash of the settings that shape the stages (``stage_settings``), so runs with
other settings never share one, and resuming refuses a state whose settings differ.

In a multi-process run (RecBole's ``nproc``) every rank pretrains and trains the final
model under DDP; the M3 and M4 stages run on rank 0, which broadcasts the environments
and the mask, so all ranks go on with the same Phi = m * c.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from time import time
from typing import Any, Callable

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed, set_color
from tqdm import tqdm

from recbole_invrl.compat import (
    CheckpointError,
    CompatTrainerMixin,
    atomic_torch_save,
    atomic_write,
    load_checkpoint,
    load_weights,
    with_compat_mixins,
    write_json_atomic,
)
from recbole_invrl.distributed import barrier, broadcast_, is_decider
from recbole_invrl.invariance import TrainingInteractions
from recbole_invrl.invariance.mask import learn_mask, mask_step_size, mask_summary
from recbole_invrl.invariance.partition import (
    environment_sizes,
    initial_environments,
    moved_share,
    train_environments,
)
from recbole_invrl.invariance.paths import BackboneView, backbone_view, environment_models_for, mask_learner_for
from recbole_invrl.invariance.truth import PlantedTruth
from recbole_invrl.model.common import final_mask
from recbole_invrl.model.general_recommender.invrl import config_with
from recbole_invrl.model.mask_forms import MaskForm
from recbole_invrl.settings import SettingsError
from recbole_invrl.utils import best_on_validation


class InvRLTrainer(CompatTrainerMixin, Trainer):
    """Runs pretraining, T x (partition, mask) and the final model's RecBole fit."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.optimizer = self._build_optimizer(params=model.final.parameters())
        self.stage_settings = stage_settings(config)
        self.state_file = os.path.join(
            self.checkpoint_dir,
            f"InvRL-{config['dataset']}-seed{config['seed']}-{settings_key(self.stage_settings)}.state.pth",
        )
        self.decides = is_decider(config)  # rank 0 (or the only process) runs M3 and M4
        self.completed: list[str] = []
        self.envs: torch.Tensor | None = None
        self.truth: PlantedTruth | None = None
        self.record: dict[str, Any] = {
            "mask_fields": [[f, w] for f, w in model.content_layout],
            "partition": [],
            "mask": [],
            "stage_seconds": {},
            "final": [],
        }

    # ------------------------------------------------------------------ files
    @property
    def mask_file(self) -> str:
        return f"{os.path.splitext(self.saved_model_file)[0]}-mask.npy"

    @property
    def record_file(self) -> str:
        return f"{os.path.splitext(self.saved_model_file)[0]}-record.json"

    @property
    def pretrain_file(self) -> str:
        return f"{os.path.splitext(self.saved_model_file)[0]}-pretrain.pth"

    def output_files(self) -> dict[str, str | None]:
        """The files this run writes beside its checkpoint (named after it), and its state."""
        return {"mask": self.mask_file, "record": self.record_file,
                "pretrain": None if self.config["pretrained_path"] or self.config["fixed_mask"] else self.pretrain_file,
                "state": None if self.config["fixed_mask"] else self.state_file}

    # ------------------------------------------------------------------ Algorithm 1
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        n_train = len(train_data._dataset)
        if not self.config["fixed_mask"] and self.config["num_envs"] > n_train:
            raise SettingsError(f"num_envs: expected at most the {n_train} training interactions of "
                                f"{self.config['dataset']}, got {self.config['num_envs']}")
        if self.config["resume"]:
            self._restore_state()
        iterations = self.config["invrl_iterations"]
        if self.config["fixed_mask"]:
            self.model.set_mask(torch.from_numpy(load_mask(self.config["fixed_mask"], self.model.mask.numel())))
            self._log("mask", f"final model on the mask in {self.config['fixed_mask']}; stages 0-M4 skipped")
        else:
            self.truth = self._load_truth(train_data._dataset)
            self._invariance_stages(train_data, valid_data, verbose, show_progress, iterations)
        start = time()
        result = self.final_stage(train_data, valid_data, verbose, saved, show_progress, callback_fn, iterations)
        self.record["stage_seconds"]["final"] = time() - start
        self._write_mask_and_record()
        return result

    def _invariance_stages(self, train_data, valid_data, verbose: bool, show_progress: bool, iterations: int) -> None:
        """Stage 0, then T x (M3, M4) (Algorithm 1, lines 1-13)."""
        interactions = TrainingInteractions.from_dataset(train_data._dataset, self.device)
        self._stage("pretrain", 0, lambda: self.pretrain(train_data, valid_data, verbose, show_progress))
        path = self.config["invariance_path"] or "auto"
        frozen = backbone_view(self.model.backbone, path) if self.decides else None
        growth = self.config["penalty_growth"]
        for t in range(1, iterations + 1):
            self._stage(f"partition-{t}", 2 * t - 1,
                        lambda: self.partition(t, frozen, interactions, show_progress), decided=True)
            self._stage(f"mask-{t}", 2 * t, lambda: self.learn_mask(
                t, frozen, interactions, self.config["alpha"] * growth ** (t - 1),
                self.config["mask_lambda"] * growth ** (t - 1), show_progress), decided=True)
            self._share_decisions(len(interactions))

    # ------------------------------------------------------------------ stage 0
    def pretrain(self, train_data, valid_data, verbose: bool, show_progress: bool) -> None:
        """Train the backbone on the raw content with RecBole's fit loop, or load it."""
        backbone = self.model.backbone
        if self.config["pretrained_path"]:
            load_weights(backbone, self.config["pretrained_path"], self.device, "pretrained_path")
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
    def partition(self, t: int, frozen: BackboneView, interactions: TrainingInteractions, show_progress: bool) -> None:
        """Alternate environment learning (eq. 6) and interaction separation (eq. 7)."""
        num_envs = self.config["num_envs"]
        if self.envs is None:
            self.envs = initial_environments(self.config["partition_start"], frozen, interactions, num_envs)
            self._log(f"partition-{t}", f"start ({self.config['partition_start']}): {self._truth_text(self.envs)}")
        for round_ in range(1, self.config["partition_rounds"] + 1):
            models = environment_models_for(frozen, self.config["partition_models"], num_envs, self.model.mask,
                                            self.config["partition_l1_weight"])
            train_environments(models, interactions, self.envs, self.config["partition_epochs"],
                               self.config["train_batch_size"], self.config["learning_rate"],
                               self._progress(f"M3 t={t} r={round_}", show_progress))
            new_envs = models.assign(interactions, self.config["partition_assign"], self.config["partition_samples"])
            moved = moved_share(self.envs, new_envs).item()
            sizes = environment_sizes(new_envs, num_envs).tolist()
            self.envs = new_envs
            scores = self.truth.partition_scores(new_envs) if self.truth else {}
            self.record["partition"].append({"iteration": t, "round": round_, "moved_share": moved,
                                             "env_sizes": sizes, **scores})
            step = len(self.record["partition"])
            for key, value in {"moved_share": moved, **scores}.items():
                self.tensorboard.add_scalar(f"InvRL/{key}", value, step)
            self._log(f"partition-{t}", f"round {round_}: moved share {moved:.4f}, environment sizes {sizes}"
                      f"{self._truth_text(new_envs)}")
            if moved <= self.config["moved_threshold"]:
                break

    # ------------------------------------------------------------------ M4
    def learn_mask(self, t: int, frozen: BackboneView, interactions: TrainingInteractions,
                   alpha: float, lam: float, show_progress: bool) -> None:
        """Learn m across the current environments (eq. 8-12)."""
        learner = mask_learner_for(frozen, self.model.mask, self.config["num_envs"], self.config["mask_sigma"],
                                   self.config["mask_type"], self.config["mask_reg"], self.config["mask_model_start"])
        mask_lr = mask_step_size(self.config["mask_lr"], self.config["mask_travel"], self.envs,
                                 self.config["num_envs"], self.config["train_batch_size"], self.config["mask_epochs"])
        history = learn_mask(learner, interactions, self.envs, self.config["mask_epochs"],
                             self.config["train_batch_size"], self.config["learning_rate"],
                             mask_lr, alpha, lam,
                             self._progress(f"M4 t={t}", show_progress))
        self.model.set_mask(learner.mask)
        summary = mask_summary(self.model.mask, self.model.content_layout)
        scores = self.truth.mask_scores(self.model.mask) if self.truth else {}
        self.record["mask"].append({
            "iteration": t, "alpha": alpha, "lambda": lam, "mask_lr": mask_lr, "epochs": history,
            "per_modality": summary, **scores, "mask": self.model.mask.tolist(),
        })
        epochs_before = sum(len(m["epochs"]) for m in self.record["mask"][:-1])
        for epoch, values in enumerate(history, start=epochs_before + 1):
            for key, value in values.items():
                self.tensorboard.add_scalar(f"InvRL/mask/{key}", value, epoch)
        for field, stats in summary.items():
            self.tensorboard.add_scalar(f"InvRL/mask_mean/{field}", stats["mean"], t)
        for key, value in scores.items():
            self.tensorboard.add_scalar(f"InvRL/mask_{key}", value, t)
        last = history[-1] if history else {}
        terms = ", ".join(f"{key} {last[key]:.4g}" for key in ("risk", "alpha_penalty", "lambda_regulariser",
                                                               "penalty_share") if key in last)
        stats = ", ".join(f"{f} mean {s['mean']:.3f} min {s['min']:.3f} max {s['max']:.3f}" for f, s in summary.items())
        truth = "".join(f", {key} {value:.3f}" for key, value in scores.items())
        self._log(f"mask-{t}", f"alpha {alpha:.3f} lambda {lam:.3f} mask_lr {mask_lr:.4g}; last epoch: {terms}; {stats}{truth}")

    # ------------------------------------------------------------------ M5/M6
    def final_stage(self, train_data, valid_data, verbose: bool, saved: bool, show_progress: bool,
                    callback_fn, iterations: int) -> tuple[float, dict]:
        """A fresh final model on Phi = gate(m) * c for each form in ``final_mask_forms`` and
        each value of ``final_proj_reg_weight``, each fit from the same initial weights and
        seed by RecBole's loop; the candidate with the best validation score is kept (its
        weights in the model and in ``saved_model_file``). An interrupted stage leaves none of
        the candidates' checkpoints behind."""
        distinct = self._distinct_forms()
        forms = [(form, gate, reg) for reg in self.model.final_regs for form, gate in distinct]
        target_file = self.saved_model_file
        candidates = {candidate_name(form, reg): f"{os.path.splitext(target_file)[0]}-{candidate_name(form, reg)}.pth"
                      if len(forms) > 1 else target_file for form, _, reg in forms}
        try:
            outcomes = self._fit_forms(forms, candidates, train_data, valid_data, verbose, saved, show_progress,
                                       callback_fn, iterations)
        except BaseException:
            remove_files(candidates.values(), keep=target_file)
            raise
        finally:
            self.saved_model_file = target_file
        (form, reg), score, result, file, weights = self._best_outcome(outcomes)
        self.record["final_form"] = form.name
        if reg is not None:
            self.record["final_proj_reg_weight"] = reg
        if len(outcomes) > 1:
            self._keep_final(file, weights, list(candidates.values()))
            self.model.set_final_reg(reg)
            self._log("final", "validation " + ", ".join(f"{candidate_name(*c)} {s:.4f}" for c, s, *_ in outcomes)
                      + f": {candidate_name(form, reg)} kept")
        self.best_valid_score, self.best_valid_result = score, result
        return score, result

    def _fit_forms(self, forms: list[tuple[MaskForm, torch.Tensor, float | None]], candidates: dict[str, str],
                   train_data, valid_data, verbose: bool, saved: bool, show_progress: bool, callback_fn,
                   iterations: int) -> list[tuple]:
        """M6 once per (form, final L2): ((form, L2), best valid score, its result, checkpoint,
        weights if not saved)."""
        fresh = {key: value.detach().clone() for key, value in self.model.final.state_dict().items()}
        outcomes = []
        for form, gate, reg in forms:
            self.model.final.load_state_dict(fresh)
            self.model.start_final_model(form)
            self.model.set_final_reg(reg)
            self._restart_fit()
            self.saved_model_file = candidates[candidate_name(form, reg)]
            self._seed(2 * iterations + 1, train_data)
            self._log("final", f"M5/M6: a fresh {type(self.model.final).__name__} on Phi = gate * c, "
                      f"{form.describe(final_mask(self.model.mask, self.model.mask_type))}"
                      + ("" if reg is None else f", final_proj_reg_weight {reg:g}") + "; RecBole fit loop")
            score, result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
            weights = None if saved else {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            outcomes.append(((form, reg), score, result, self.saved_model_file, weights))
            self.record["final"].append({"form": form.name, "final_proj_reg_weight": reg, "valid_score": float(score),
                                         "kept_dims": int((gate > 0).sum()), "gate": gate.tolist()})
        return outcomes

    def _distinct_forms(self) -> list[tuple[MaskForm, torch.Tensor]]:
        """(form, gate) of each form in ``final_mask_forms`` whose gate no earlier form gives."""
        forms = []
        for name in mask_form_names(self.config):
            form = MaskForm.from_config(self.config, name)
            gate = self.model.final_gate(form)
            if any(torch.equal(gate, other) for _, other in forms):
                self._log("final", f"the {name} form gives the same Phi as an earlier form; not trained again")
            else:
                forms.append((form, gate))
        return forms

    def _restart_fit(self) -> None:
        """RecBole's fit state as a new trainer has it, with a fresh optimizer."""
        self.start_epoch, self.cur_step, self.train_loss_dict = 0, 0, {}
        self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
        self.best_valid_result = None
        self.optimizer = self._build_optimizer(params=self.model.final.parameters())

    def _best_outcome(self, outcomes: list) -> tuple:
        """The outcome with the best validation score (the first of equals)."""
        return best_on_validation(outcomes, lambda outcome: outcome[1], self.valid_metric_bigger)

    def _keep_final(self, file: str, weights: dict | None, candidate_files: list[str]) -> None:
        """Put the chosen form's final model in place: its best checkpoint becomes
        ``saved_model_file`` (by rename, atomic), the other forms' checkpoints go, and its
        weights become the model's."""
        if weights is not None:
            self.model.load_state_dict(weights)
            return
        if self.decides:
            os.replace(file, self.saved_model_file)
            remove_files(candidate_files, keep=file)
        barrier(self.config)
        self._load_model_weights(load_checkpoint(self.saved_model_file, self.device))

    # ------------------------------------------------------------------ planted truth
    def _load_truth(self, dataset) -> PlantedTruth | None:
        """The planted truth in ``truth_dir``, or else in the dataset's own folder."""
        folder = self.config["truth_dir"] or self.config["data_path"]
        truth = PlantedTruth.load(folder, self.model.content_layout, len(dataset.inter_feat))
        if truth is not None:
            self._log("truth", f"scoring environments and mask against the planted truth in {folder}")
        return truth

    def _truth_text(self, envs: torch.Tensor) -> str:
        if not self.truth or self.truth.envs is None:
            return ""
        scores = self.truth.partition_scores(envs)
        return f", ARI {scores['ari']:.3f}, purity {scores['purity']:.3f}"

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
            "settings": self.stage_settings,
        }
        atomic_torch_save(state, self.state_file)
        write_json_atomic(self.record, self.record_file)

    def _restore_state(self) -> None:
        if not os.path.isfile(self.state_file):
            self._log("resume", f"no state file {self.state_file} for these settings{self._other_states()}; "
                      "starting from the beginning")
            return
        try:
            state = load_checkpoint(self.state_file, self.device)
        except CheckpointError as err:
            raise CheckpointError(f"resume: {err}; delete {self.state_file} to start from the beginning, "
                                  "or run without resume=True") from None
        differing = differing_keys(state.get("settings", {}), self.stage_settings)
        if differing:
            raise SettingsError(f"resume: {self.state_file} was written with other values of "
                                f"{', '.join(differing)}; start without resume=True or restore those settings")
        self.completed, self.envs, self.record = state["completed"], state["envs"], state["record"]
        self.model.backbone.load_state_dict(state["backbone"])
        self.model.set_mask(state["mask"])
        self._log("resume", f"completed stages: {self.completed}")

    def _other_states(self) -> str:
        """How the newest state of this dataset and seed under other settings differs, if any."""
        pattern = os.path.join(self.checkpoint_dir, f"InvRL-{self.config['dataset']}-seed{self.config['seed']}-*.state.pth")
        others = sorted(glob.glob(pattern), key=os.path.getmtime)
        if not others:
            return ""
        settings = load_checkpoint(others[-1], "cpu").get("settings", {})
        return f" ({others[-1]} differs in {', '.join(differing_keys(settings, self.stage_settings)) or 'nothing'})"

    def _write_mask_and_record(self) -> None:
        if not self.decides:
            return
        mask = self.model.mask.detach().cpu().numpy()
        atomic_write(self.mask_file, lambda tmp: _save_npy(tmp, mask), ".npy")
        write_json_atomic(self.record, self.record_file)

    def extra_results(self) -> dict[str, Any]:
        """What ``run_recbole_invrl`` adds to its result (and ``--result_json``)."""
        return {"mask_path": self.mask_file, "mask_fields": self.record["mask_fields"],
                "record_path": self.record_file, "state_path": self.state_file,
                "pretrain_path": self.config["pretrained_path"] or self.pretrain_file}

    # ------------------------------------------------------------------ output
    def _log(self, stage: str, message: str) -> None:
        self.logger.info(set_color(f"[InvRL {stage}] ", "green") + message)

    @staticmethod
    def _progress(description: str, show: bool):
        if not show:
            return None
        return lambda iterable: tqdm(iterable, desc=set_color(description, "pink"), ncols=100)


# Settings that leave stages 0-M4 as they are: the final model's, outputs, logging, devices.
NOT_SHAPING_STAGES = frozenset({
    "epochs", "final_proj_reg_weight", "final_mask_forms", "final_mask_cut", "final_mask_top",
    "final_mask_sharpness", "resume", "fixed_mask", "truth_dir", "metrics", "topk",
    "valid_metric_bigger", "metric_decimal_place", "loss_decimal_place", "eval_batch_size", "show_progress",
    "state", "verbose", "checkpoint_dir", "log_wandb", "wandb_project", "gpu_id", "use_gpu", "device",
    "local_rank", "offset", "ip", "port", "ddp_timeout", "worker", "feature_cache", "feature_cache_dir",
    "keep_freed_memory", "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path",
    "missing_data_hint", "config_files", "result_json",
})


def stage_settings(config) -> dict[str, str]:
    """The settings that shape stages 0-M4 (all but ``NOT_SHAPING_STAGES``), as text."""
    return {key: json.dumps(value, sort_keys=True, default=str)
            for key, value in sorted(config.final_config_dict.items()) if key not in NOT_SHAPING_STAGES}


def remove_files(paths, keep: str) -> None:
    """Remove every file of ``paths`` that exists, but ``keep``."""
    for path in paths:
        if path != keep and os.path.exists(path):
            os.remove(path)


def candidate_name(form: MaskForm, reg: float | None) -> str:
    """A final-stage candidate as a file-name part: ``cut`` or ``cut-reg0.01``."""
    return form.name if reg is None else f"{form.name}-reg{reg:g}"


def mask_form_names(config) -> list[str]:
    """``final_mask_forms`` as a list of form names."""
    names = config["final_mask_forms"] or ["soft"]
    return [names] if isinstance(names, str) else list(names)


def differing_keys(saved: dict[str, str], current: dict[str, str]) -> list[str]:
    return sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))


def settings_key(settings: dict[str, str]) -> str:
    """A short hash of ``stage_settings``: runs that differ in them keep separate states."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:10]


def load_mask(path: str, size: int) -> np.ndarray:
    """A saved mask (``-mask.npy``): ``size`` floats in [0, 1]."""
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"fixed_mask: cannot read {path} as a .npy array ({err})") from None
    if mask.shape != (size,) or not np.issubdtype(mask.dtype, np.floating) or not np.isfinite(mask).all() \
            or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"fixed_mask: {path}: expected {size} floats in [0, 1] (one per content dimension), "
                         f"got shape {mask.shape} of {mask.dtype}")
    return mask.astype(np.float32)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, array)

