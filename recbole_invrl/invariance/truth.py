"""Planted truth of a test bed, and how well InvRL's environments and mask recover it.

A test bed written by ``recbole_invrl.data.synthetic`` (or any dataset given files in the
same format) has, in one folder:

- ``truth.json``: ``modalities.<field>.invariant_dims`` and ``.spurious_dims``, the
  dimensions of each content field that carry preference and spurious "style";
- ``train_env.npy``: the planted environment of every training interaction, row-aligned
  with the train split (the converters keep the train file's row order, and RecBole's
  benchmark files keep it too).

The scores: the adjusted Rand index (ARI) and purity of a partition against the planted
environments, and the ROC-AUC of the mask for telling invariant (1) from spurious (0)
dimensions with the ratio of their mean gates.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, roc_auc_score

TRUTH_FILE, ENV_FILE = "truth.json", "train_env.npy"


class TruthFileError(ValueError):
    """A truth file is missing, malformed or does not fit the dataset."""


@dataclass
class PlantedTruth:
    """``roles``: per content dimension 1 (invariant), 0 (spurious) or -1 (no planted role);
    ``envs``: the planted environment of each training interaction (None if not given)."""

    roles: np.ndarray | None
    envs: np.ndarray | None
    folder: Path

    @classmethod
    def load(cls, folder: str | Path, layout: list[tuple[str, int]], n_train: int) -> "PlantedTruth | None":
        """The truth in ``folder`` for a model with content ``layout`` and ``n_train``
        training interactions; None if the folder holds neither file."""
        folder = Path(folder)
        truth_path, env_path = folder / TRUTH_FILE, folder / ENV_FILE
        if not truth_path.is_file() and not env_path.is_file():
            return None
        roles = _roles(truth_path, layout) if truth_path.is_file() else None
        envs = _envs(env_path, n_train) if env_path.is_file() else None
        return cls(roles, envs, folder)

    def partition_scores(self, envs: torch.Tensor) -> dict[str, float]:
        """{"ari", "purity"} of ``envs`` against the planted environments ({} without them)."""
        if self.envs is None:
            return {}
        found = envs.detach().cpu().numpy()
        return {"ari": float(adjusted_rand_score(self.envs, found)), "purity": purity(found, self.envs)}

    def mask_scores(self, mask: torch.Tensor) -> dict[str, float]:
        """{"auc", "gate_ratio"}: ROC-AUC of m for invariant vs spurious dimensions, and
        mean m over the invariant dims / mean m over the spurious ones ({} without roles)."""
        if self.roles is None or not ((self.roles == 1).any() and (self.roles == 0).any()):
            return {}
        values = mask.detach().cpu().numpy()
        known = self.roles >= 0
        spurious_mean = values[self.roles == 0].mean()
        return {
            "auc": float(roc_auc_score(self.roles[known], values[known])),
            "gate_ratio": float(values[self.roles == 1].mean() / spurious_mean) if spurious_mean > 0 else float("inf"),
        }

    def oracle_mask(self) -> np.ndarray:
        """1 on invariant and unlabelled dimensions, 0 on spurious ones."""
        if self.roles is None:
            raise TruthFileError(f"{self.folder / TRUTH_FILE}: no planted dimensions for an oracle mask")
        return (self.roles != 0).astype(np.float32)


def purity(found: np.ndarray, planted: np.ndarray) -> float:
    """Share of interactions in the majority planted environment of their found one."""
    planted = np.asarray(planted).astype(np.int64)
    found = np.asarray(found).astype(np.int64)
    counts = np.zeros((found.max() + 1, planted.max() + 1), dtype=np.int64)
    np.add.at(counts, (found, planted), 1)
    return float(counts.max(1).sum() / len(found))


def _roles(path: Path, layout: list[tuple[str, int]]) -> np.ndarray:
    try:
        modalities = json.loads(path.read_text())["modalities"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TruthFileError(f"{path}: expected JSON with a 'modalities' object ({err})") from None
    roles = []
    for field, width in layout:
        part = np.full(width, -1, dtype=np.int64)
        info = modalities.get(field, {}) if isinstance(modalities, dict) else {}
        for role, value in (("invariant_dims", 1), ("spurious_dims", 0)):
            dims = info.get(role, [])
            if not isinstance(dims, list) or any(not isinstance(d, int) or not 0 <= d < width for d in dims):
                raise TruthFileError(
                    f"{path}: modalities.{field}.{role}: expected a list of integers in [0, {width}) "
                    f"(the field's width in the model), got {dims!r:.80}")
            part[dims] = value
        roles.append(part)
    return np.concatenate(roles)


def _envs(path: Path, n_train: int) -> np.ndarray:
    try:
        envs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise TruthFileError(f"{path}: expected a .npy array of environment ids ({err})") from None
    if envs.ndim != 1 or len(envs) != n_train or not np.issubdtype(envs.dtype, np.integer) or (envs < 0).any():
        raise TruthFileError(
            f"{path}: expected {n_train} non-negative integers (one per training interaction, in the "
            f"train split's order), got shape {envs.shape} of {envs.dtype}")
    return envs.astype(np.int64)
