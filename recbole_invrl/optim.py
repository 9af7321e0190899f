"""Fused Adam/AdamW for RecBole's trainers.

RecBole builds ``torch.optim.Adam(params, lr, weight_decay)``, which on a CPU runs the
update tensor by tensor (several elementwise passes each). ``fused=True`` (torch >= 2.4
on CPU and CUDA) runs the same update in one kernel per tensor (``bench/bench_step.py`` times both), with
results equal up to float rounding.
``fused_optimizer: False`` keeps RecBole's.

A fused step does not move the parameters' tensor versions: anything that caches on
versions must also be reset otherwise (``model.common.AllItemsCache`` is, by ``train()``).
"""
from __future__ import annotations

import torch

FUSABLE = (torch.optim.Adam, torch.optim.AdamW)


def fused_copy(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer (class, groups, settings) with ``fused=True``, or ``optimizer``
    itself where fusing is not possible (another class, a device or dtype without the
    fused kernel, state already built)."""
    if type(optimizer) not in FUSABLE or optimizer.state:
        return optimizer
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    try:
        return type(optimizer)(groups, fused=True)
    except (RuntimeError, ValueError):  # e.g. parameters on a device with no fused kernel
        return optimizer


class FusedOptimizerMixin:
    """Trainer mixin: RecBole's Adam/AdamW built with ``fused=True`` (``fused_optimizer``)."""

    def _build_optimizer(self, **kwargs):
        optimizer = super()._build_optimizer(**kwargs)
        return fused_copy(optimizer) if self.config["fused_optimizer"] else optimizer
