"""Small pieces the recommenders share: config checks that name the key, and the cache of
whole-catalogue item terms used by full-ranking evaluation."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def positive_int(config, key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: expected an integer >= 1, got {value!r}")
    return value


def non_negative(config, key: str, kind: type = float):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{key}: expected a number >= 0, got {value!r}")
    return kind(value)


def final_mask(mask: torch.Tensor, mask_type: str) -> torch.Tensor:
    """m as the final model uses it: the float mask, or thresholded at 0.5 when binary."""
    return (mask > 0.5).float() if mask_type == "binary" else mask


class AllItemsCache:
    """Terms computed for every item, reused while no parameter or buffer of the module has
    changed (tensor versions move on every in-place update: optimiser steps, ``load_state_dict``,
    ``set_content_mask``). Only filled outside autograd, i.e. during evaluation."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: Any = None

    def get(self, module: nn.Module, compute: Callable[[], Any]) -> Any:
        key = tuple((id(t), t._version) for t in [*module.parameters(), *module.buffers()])
        if self._key == key:
            return self._value
        value = compute()
        if not torch.is_grad_enabled():
            self._key, self._value = key, value
        return value


def distinct_items(items: torch.Tensor, dedupe: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(items to compute, index of each entry of ``items`` into them).

    On the CPU (``dedupe`` None) these are the distinct items, so each is projected once.
    On an accelerator they are the items themselves: ``torch.unique`` has a data-dependent
    output size, so the host would wait for the device at every step, which costs more
    there than projecting the duplicates. Both give the same numbers."""
    if dedupe is None:
        dedupe = items.device.type == "cpu"
    if dedupe:
        return torch.unique(items, return_inverse=True)
    flat = items.reshape(-1)
    return flat, torch.arange(len(flat), device=items.device).view(items.shape)
