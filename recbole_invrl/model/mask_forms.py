"""How the final model's invariant representation Phi is formed from the learned mask m (M5).

The paper's Phi = m * c (eq. 4) hides a dimension only as far as the final model's
content weights are kept from scaling it back up: with Phi = m * c and W c' the
projection, W (m * c) = (W diag m) c, so a dimension at m = 0.1 costs its W column only
100 times more L2 than one at m = 1. Where the spurious signal is low-rank, a few such
dimensions let all of it through. The forms:

- ``soft``: m itself (eq. 4, the paper's and the release's form);
- ``cut``: 1 where m >= tau, else 0; tau is ``final_mask_cut``: a number, or ``otsu``, the
  threshold that best splits m into two groups (largest between-group variance, Otsu 1979);
  a constant m keeps every dimension;
- ``top``: 1 on the ``final_mask_top`` share of dimensions with the largest m (ties by
  position), else 0;
- ``sharp``: (m / max m) ** ``final_mask_sharpness``: the order of m kept, the low gates
  pushed towards 0.

``InvRLTrainer`` trains a final model on each form in ``final_mask_forms`` and keeps the one
with the best validation score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MASK_FORMS = ("soft", "cut", "top", "sharp")


def otsu_threshold(values: torch.Tensor) -> float:
    """The threshold tau that splits ``values`` into {< tau} and {>= tau} with the largest
    between-group variance w0 w1 (mu0 - mu1)^2, halfway between the two groups' nearest
    values; -inf when every value is the same (one group)."""
    ordered = values.detach().flatten().double().sort().values
    n = ordered.numel()
    if n < 2 or ordered[0] == ordered[-1]:
        return -math.inf
    k = torch.arange(1, n, dtype=torch.float64, device=ordered.device)  # size of the low group
    low_sum = ordered.cumsum(0)[:-1]
    mean_low = low_sum / k
    mean_high = (ordered.sum() - low_sum) / (n - k)
    between = (k / n) * (1 - k / n) * (mean_low - mean_high).square()
    between[ordered[1:] == ordered[:-1]] = -1.0  # a split must fall between two distinct values
    split = int(between.argmax())
    return float((ordered[split] + ordered[split + 1]) / 2)


@dataclass(frozen=True)
class MaskForm:
    """One way to turn m into the gate the final model multiplies c by."""

    name: str = "soft"
    cut: float | str = "otsu"
    top: float = 0.5
    sharpness: float = 4.0

    @classmethod
    def from_config(cls, config, name: str) -> "MaskForm":
        return cls(name, config["final_mask_cut"], config["final_mask_top"], config["final_mask_sharpness"])

    def threshold(self, mask: torch.Tensor) -> float:
        """tau of the ``cut`` form for ``mask``."""
        return otsu_threshold(mask) if self.cut == "otsu" else float(self.cut)

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        """The gate (same shape as ``mask``) that Phi = gate * c uses."""
        if self.name == "soft":
            return mask.clone()
        if self.name == "cut":
            return (mask >= self.threshold(mask)).to(mask.dtype)
        if self.name == "top":
            keep = max(1, math.ceil(self.top * mask.numel()))
            order = torch.sort(mask, descending=True, stable=True).indices
            gate = torch.zeros_like(mask)
            gate[order[:keep]] = 1.0
            return gate
        if self.name == "sharp":
            peak = mask.max()
            return (mask / peak).pow(self.sharpness) if peak > 0 else torch.zeros_like(mask)
        raise ValueError(f"final_mask_forms: unknown form {self.name!r}; expected one of {', '.join(MASK_FORMS)}")

    def describe(self, mask: torch.Tensor) -> str:
        """What the form does to ``mask``, for the log."""
        gate = self(mask)
        kept = f"{int((gate > 0).sum())}/{gate.numel()} dims kept, mean gate {float(gate.mean()):.3f}"
        if self.name == "cut":
            return f"cut at {self.threshold(mask):.4f} ({self.cut}): {kept}"
        if self.name == "top":
            return f"top {self.top:g}: {kept}"
        if self.name == "sharp":
            return f"sharpness {self.sharpness:g}: {kept}"
        return f"soft m: {kept}"
