"""The few shims RecBole 1.2.1 needs on today's stack, each explained.

1. Checkpoints. RecBole pickles its ``Config`` (enums, ``torch.device``) into every
   checkpoint and reloads it with ``torch.load``; since torch 2.6 that load defaults to
   ``weights_only=True`` and fails, and loading with ``weights_only=False`` would run
   arbitrary code from the file. ``SafeCheckpointMixin`` saves only tensors and plain
   Python values (the config as a JSON-compatible dict) and loads with
   ``weights_only=True``. Writes go to a temporary file that is renamed into place, so an
   interrupted save never leaves a half-written checkpoint.
2. ``recbole.quick_start`` imports ray (which needs ``pkg_resources`` and numpy < 2);
   nothing here imports it: ``recbole_invrl.quick_start`` rebuilds the short pipeline.
3. RecBole's ``create_dataset`` / ``data_preparation`` unpickle saved datasets and
   dataloaders from ``checkpoint_dir``; ``recbole_invrl.data`` never does.
4. Library versions: ``recbole_invrl.shims`` (imported here) fixes what scipy >= 1.12,
   pandas 3 and hyperopt >= 0.2.7 broke in RecBole 1.2.1.
5. RecBole's distributed path assumes CUDA (NCCL, ``device_ids``); ``DistributedMixin``
   (``recbole_invrl.distributed``) makes it work on CPUs with gloo as well.
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_invrl import shims  # noqa: F401 - installs the library-version shims
from recbole_invrl.distributed import DistributedMixin, agreed_text, barrier
from recbole_invrl.optim import FusedOptimizerMixin


def plain_config(config) -> dict[str, Any]:
    """The config as JSON-compatible values (enums and devices become strings)."""
    return json.loads(json.dumps(config.final_config_dict, default=str))


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place;
    a failed or interrupted write leaves no file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp), ".pth")


def write_text_atomic(text: str, path: str | Path) -> None:
    """``text`` (UTF-8) through ``atomic_write``; the temporary file keeps ``path``'s suffix."""
    atomic_write(str(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), Path(path).suffix)


def write_json_atomic(data: dict[str, Any], path: str) -> None:
    """``data`` as indented JSON through ``atomic_write``."""
    write_text_atomic(json.dumps(data, indent=2, default=str), path)


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (``mkstemp`` files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: not readable with ``weights_only=True``, or not of
    the model it is loaded into. The message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def load_checkpoint(path: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``SafeCheckpointMixin`` (``weights_only=True``)."""
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointError(
            f"cannot load checkpoint {path} with weights_only=True: {_load_failure(err)}. "
            "Checkpoints must hold only tensors and plain Python values."
        ) from err


def _load_failure(err: Exception) -> str:
    """The reason in torch's message (its advice to load without ``weights_only`` left out)."""
    text = " ".join(str(err).split())
    reason = text.partition("WeightsUnpickler error:")[2] or text
    return reason.strip().split(". ")[0].rstrip(".")


def load_weights(module: torch.nn.Module, path: str, device: torch.device | str, key: str) -> None:
    """``module``'s weights from the checkpoint at ``path`` (a ``state_dict`` entry, as this
    plugin's checkpoints hold it); a file of another model or size is a ``CheckpointError``."""
    checkpoint = load_checkpoint(path, device)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{key}: {path} holds no state_dict; expected a checkpoint of this plugin")
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), "")
        raise CheckpointError(f"{key}: {path} is not a checkpoint of {type(module).__name__} with these sizes "
                              f"({first} {detail})") from None


class SafeCheckpointMixin:
    """Checkpoint save/resume/best-model reload for RecBole trainers, weights-only."""

    def __init__(self, config, model):
        super().__init__(config, model)
        # RecBole names checkpoints by the second; two runs started in the same second
        # (a benchmark, a test) would share one file. A random suffix keeps them apart;
        # the ranks of one distributed run agree on it (rank 0 writes, all read).
        stem, ext = os.path.splitext(self.saved_model_file)
        self.saved_model_file = agreed_text(f"{stem}-{uuid.uuid4().hex[:6]}{ext}", config)

    def _checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "config": plain_config(self.config),
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_torch_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _load_model_weights(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def resume_checkpoint(self, resume_file):
        resume_file = str(resume_file)
        self.saved_model_file = resume_file
        checkpoint = load_checkpoint(resume_file, self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"checkpoint {resume_file} was written by model "
                f"{checkpoint['config']['model']}, not {self.config['model']}"
            )
        self._load_model_weights(checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            barrier(self.config)  # rank 0 may still be writing the best checkpoint
            checkpoint_file = model_file or self.saved_model_file
            self._load_model_weights(load_checkpoint(checkpoint_file, self.device))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(
            eval_data, load_best_model=False, model_file=None, show_progress=show_progress
        )


class CompatTrainerMixin(SafeCheckpointMixin, DistributedMixin, FusedOptimizerMixin):
    """Weights-only checkpoints, CPU-capable DDP and fused Adam for a RecBole trainer."""


@lru_cache(maxsize=None)
def with_compat_mixins(trainer_class: type) -> type:
    """``trainer_class`` with ``CompatTrainerMixin`` in front (RecBole ``Trainer`` family only)."""
    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, CompatTrainerMixin):
        return trainer_class
    return type(trainer_class.__name__, (CompatTrainerMixin, trainer_class), {})
