"""Small pieces the recommenders share: config checks that name the key, the cache of
whole-catalogue item terms used by full-ranking evaluation, and the batched item lookup
and scoring of a training step."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
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


def check_pairwise_sampling(config, model: str) -> None:
    """``train_neg_sample_args`` of a model trained pairwise (BPR): RecBole's sampler with at
    least one negative per positive, or none (``~``), where the model draws its own."""
    args = config["train_neg_sample_args"]
    if args is None or (isinstance(args, dict) and args.get("distribution") == "none"):
        return  # no sampler (RecBole's form of ~): the model draws its negatives
    sample_num = args.get("sample_num") if isinstance(args, dict) else None
    if (
        not isinstance(args, dict)
        or args.get("distribution") not in ("uniform", "popularity")
        or isinstance(sample_num, bool)
        or not isinstance(sample_num, int)
        or sample_num < 1
    ):
        raise ValueError(
            f"train_neg_sample_args: {model} is trained pairwise (BPR): give RecBole's negative "
            "sampler, e.g. {distribution: uniform, sample_num: 1}, or ~ to draw on the device; got "
            f"{args!r}"
        )


def final_mask(mask: torch.Tensor, mask_type: str) -> torch.Tensor:
    """m as the final model uses it: the float mask, or thresholded at 0.5 when binary."""
    return (mask > 0.5).float() if mask_type == "binary" else mask


class MaskWatch:
    """Says when a table built from the content mask (a frozen kNN item graph) must be built
    again: the mask is another tensor, moved device, or was written in place with other
    values. Writing the same values back, as RecBole's best-model reload does through
    ``load_state_dict``, keeps the table. Values are compared only after a write, so a
    training step never waits on the device."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._values: torch.Tensor | None = None

    def changed(self, mask: torch.Tensor) -> bool:
        key = (id(mask), mask._version, mask.device)
        if key == self._key:
            return False
        same = self._values is not None and self._values.device == mask.device and torch.equal(self._values, mask)
        self._key, self._values = key, mask.detach().clone()
        return not same


class UnseenItemSampler(nn.Module):
    """Uniform negatives among the items a user has no training interaction with, as
    RecBole's uniform sampler draws them, but exact and on the device with no loop.

    With u's training items sorted, i_0 < i_1 < ..., t_j = i_j - 1 - j counts the unseen
    candidates (ids 1..n_items-1) below i_j, so the r-th unseen candidate (0-based) is
    r + 1 + #{j : t_j <= r}. A draw is r ~ U{0, ..., unseen_u - 1} per negative, and the
    count is one ``searchsorted`` in the (user, t) keys of every training interaction."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int):
        super().__init__()
        keys = torch.unique(users.long() * n_items + items.long())  # distinct pairs, sorted
        key_users, key_items = torch.div(keys, n_items, rounding_mode="floor"), keys % n_items
        counts = torch.bincount(key_users, minlength=n_users)
        offsets = counts.cumsum(0) - counts
        below = key_items - 1 - (torch.arange(len(keys)) - offsets[key_users])  # t_j
        self.n_items = n_items
        for name, value in {"seen_counts": counts, "offsets": offsets, "keys": key_users * n_items + below}.items():
            self.register_buffer(name, value, persistent=False)

    def forward(self, users: torch.Tensor, k: int) -> torch.Tensor:
        """(n, k) items, each uniform among the items ``users`` (n,) have not interacted with
        in training (among all items for a user who has seen every one)."""
        unseen = (self.n_items - 1 - self.seen_counts[users]).unsqueeze(1)
        every = unseen <= 0
        width = torch.where(every, self.n_items - 1, unseen)
        rank = (torch.rand(len(users), k, device=users.device, dtype=torch.float64) * width).long().clamp_max(width - 1)
        query = users.unsqueeze(1) * self.n_items + rank
        skipped = torch.searchsorted(self.keys, query, right=True) - self.offsets[users].unsqueeze(1)
        return rank + 1 + torch.where(every, 0, skipped)


class AllItemsCache(nn.Module):
    """Terms computed for every item, reused across the batches of one evaluation.

    An entry is kept only while its module stays in eval mode and none of the module's
    parameters or buffers has changed in place (tensor versions move with
    ``load_state_dict``, ``set_content_mask`` and most optimisers). It is a submodule, so
    the module's ``train()`` reaches it and drops the entry: torch's fused optimisers
    update parameters without moving their versions, and RecBole's trainers call
    ``model.train()`` before every training epoch. Only filled outside autograd."""

    def __init__(self) -> None:
        super().__init__()
        self._key: tuple | None = None
        self._value: Any = None

    def train(self, mode: bool = True) -> "AllItemsCache":
        self.clear()
        return super().train(mode)

    def clear(self) -> None:
        self._key, self._value = None, None

    def get(self, module: nn.Module, compute: Callable[[], Any]) -> Any:
        key = tuple((id(t), t._version) for t in [*module.parameters(), *module.buffers()])
        if self._key == key and not module.training:
            return self._value
        value = compute()
        if not torch.is_grad_enabled() and not module.training:
            self._key, self._value = key, value
        return value


FULL_CATALOGUE_FACTOR = 2  # a batch naming >= 2 x n_items entries covers nearly every item


def item_rows(items: torch.Tensor, n_items: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(rows, index): the items whose terms a batch computes, and where each entry of
    ``items`` (any shape) finds its row. ``rows`` None means every item, in id order (the
    index is then ``items`` itself): a batch that names the catalogue twice over or more
    (uniform negatives on a small catalogue) covers nearly every item, and computing them
    all needs no gather. Otherwise the rows come from ``distinct_items``."""
    if items.numel() >= FULL_CATALOGUE_FACTOR * n_items:
        return None, items
    return distinct_items(items, n_items)


def distinct_items(
    items: torch.Tensor, n_items: int, dedupe: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items to compute, index of each entry of ``items`` into them); every id is below
    ``n_items``.

    On the CPU (``dedupe`` None) these are the distinct items in ascending order, so each
    is projected once; they are found by marking a flag per item instead of sorting
    (``torch.unique``): one pass over the batch, no sort.
    On an accelerator they are the items themselves: the distinct count is data-dependent,
    so the host would wait for the device at every step, which costs more there than
    projecting the duplicates. All give the same numbers."""
    if dedupe is None:
        dedupe = items.device.type == "cpu"
    if not dedupe:
        flat = items.reshape(-1)
        return flat, torch.arange(len(flat), device=items.device).view(items.shape)
    present = torch.zeros(n_items, dtype=torch.bool, device=items.device)
    present[items] = True
    position = present.cumsum(0).sub_(1)  # rank of each present item among the distinct ones
    return present.nonzero().squeeze(1), position[items]


GATHER_CHUNK = 2**22  # values gathered at once by GatheredDot (16 MiB of float32)


class GatheredDot(torch.autograd.Function):
    """``scores[b, m] = <table[index[b, m]], vectors[b]>`` with a lean backward.

    Autograd through ``F.embedding(index, table) * vectors.unsqueeze(1)`` keeps and
    differentiates a (B, M, K) product; here the vector gradient is one weighted
    ``embedding_bag`` and the table gradient one ``index_add``, so no (B, M, K) tensor is
    kept for the backward. Wide tables (content rows) are gathered a block of rows at
    a time. The backward is built from differentiable ops, so it also works under
    ``create_graph``."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, vectors, index)
        blocks = _row_blocks(index, table.shape[1])
        if len(blocks) == 1:
            return torch.linalg.vecdot(F.embedding(index, table), vectors.unsqueeze(1))
        # every block is gathered into one buffer: a fresh (rows, M, width) tensor per block
        # leaves glibc's heap fragmented, and the process grows by about one block per block
        scores = table.new_empty(index.shape)
        gathered = table.new_empty(blocks[0].stop * index.shape[1], table.shape[1])
        for part in blocks:
            flat = index[part].reshape(-1)
            rows = torch.index_select(table, 0, flat, out=gathered[: len(flat)])
            torch.linalg.vecdot(rows.view(len(flat) // index.shape[1], index.shape[1], -1),
                                vectors[part].unsqueeze(1), out=scores[part])
        return scores

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, vectors, index = ctx.saved_tensors
        grad_table = grad_vectors = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.zeros_like(table)
            for part in _row_blocks(index, table.shape[1]):
                per_entry = grad[part].unsqueeze(-1) * vectors[part].unsqueeze(1)
                grad_table.index_add_(0, index[part].reshape(-1), per_entry.flatten(0, 1))
        if ctx.needs_input_grad[1]:
            grad_vectors = F.embedding_bag(index, table, mode="sum", per_sample_weights=grad.contiguous())
        return grad_table, grad_vectors, None


def _row_blocks(index: torch.Tensor, width: int) -> list[slice]:
    """Row blocks of ``index`` (B, M) whose gathered (rows, M, width) values stay under GATHER_CHUNK."""
    rows = max(1, GATHER_CHUNK // max(1, index.shape[1] * width))
    return [slice(start, start + rows) for start in range(0, len(index), rows)]


def gathered_dot(table: torch.Tensor, vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, M) scores <table[index[b, m]], vectors[b]> for ``index`` (B, M), ``vectors`` (B, K)."""
    return GatheredDot.apply(table, vectors, index)
