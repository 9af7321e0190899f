"""``ContentEncoder``: modality columns of the item file -> the content vector c_i.

Each ``float_seq`` modality is L2-normalised row-wise; each ``token_seq`` modality is a
bag of word ids whose learned embeddings are summed and then normalised (the Tiktok text
case of the authors' release), computed for all items as one sparse (items x words) count matrix times
the embedding table. Modalities are concatenated in config order into c_i of width D, and
multiplied by ``content_mask`` (ones by default; InvRL sets it).

A ``float_seq`` matrix is not copied: the encoder keeps the dataset's own tensor and the
row norms (at Kwai's size the matrix is 86,483 x 2,048 floats, 0.7 GB), and divides the
rows it gathers by their norms, which gives the bits ``F.normalize`` gives.

The models never need c_i itself, only W (m * c_i): ``project`` computes it modality by
modality from the raw rows, with the mask folded into W's columns (W diag m) and each
dense block divided by the row norms after projecting, so no (items x D) content,
masked copy or normalised copy is formed in a training step.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from recbole.utils import FeatureType
from torch import nn

CONTENT_TYPES = (FeatureType.FLOAT_SEQ, FeatureType.TOKEN_SEQ)


class ContentConfigError(ValueError):
    """``content_fields`` does not match the dataset's item features."""


def resolve_content_fields(dataset, fields: list[str] | None) -> list[str]:
    """Check ``content_fields`` against the item features; ``None`` -> every modality column."""
    available = [f for f in dataset.field2type if dataset.field2source.get(f) is not None]
    item_fields = [f for f in available if _is_item_field(dataset, f)]
    modality_fields = [f for f in item_fields if dataset.field2type[f] in CONTENT_TYPES]
    if fields is None:
        fields = modality_fields
    if isinstance(fields, str):
        fields = [fields]
    if not fields:
        raise ContentConfigError(
            f"content_fields: dataset '{dataset.dataset_name}' has no float_seq or token_seq item "
            f"column to use as content (item fields loaded: {item_fields}); add modality columns "
            "to the .item file and to load_col.item"
        )
    for field in fields:
        if field not in item_fields:
            raise ContentConfigError(
                f"content_fields: '{field}' is not an item feature of dataset "
                f"'{dataset.dataset_name}' (item fields loaded: {item_fields}); check "
                "content_fields, load_col.item and the .item file header"
            )
        if dataset.field2type[field] not in CONTENT_TYPES:
            raise ContentConfigError(
                f"content_fields: '{field}' has type {dataset.field2type[field].value}; a modality "
                "column must be float_seq (dense features) or token_seq (word ids)"
            )
    return list(fields)


def _is_item_field(dataset, field: str) -> bool:
    source = dataset.field2source[field]
    return getattr(source, "value", source) in ("item", "item_id")


class ContentEncoder(nn.Module):
    """Item content c_i (eq. 4-5 act on it through ``content_mask``)."""

    def __init__(
        self,
        dataset,
        fields: list[str] | None,
        word_embedding_size: int = 128,
        shared: "ContentEncoder | None" = None,
    ):
        """``shared``: an encoder of the same data whose feature buffers are reused."""
        super().__init__()
        self.fields = resolve_content_fields(dataset, fields)
        item_feat = dataset.get_item_feature()
        self.word_embeddings = nn.ModuleDict()
        self._layout: list[tuple[str, int]] = []
        self._n_items = len(item_feat)
        for field in self.fields:
            values = item_feat[field]
            if dataset.field2type[field] == FeatureType.FLOAT_SEQ:
                if shared is not None:
                    dense, norms = getattr(shared, f"dense_{field}"), getattr(shared, f"norm_{field}")
                else:
                    dense = values.float().reshape(len(values), -1)  # the dataset's tensor
                    norms = row_norms(dense)
                self.register_buffer(f"dense_{field}", dense, persistent=False)
                self.register_buffer(f"norm_{field}", norms, persistent=False)
                self._layout.append((field, dense.shape[1]))
            else:
                n_words = dataset.num(field)
                if shared is not None:
                    bags, bags_t = getattr(shared, f"bags_{field}"), getattr(shared, f"bags_t_{field}")
                else:
                    bags, bags_t = word_bags(values.long(), n_words)
                self.register_buffer(f"bags_{field}", bags, persistent=False)
                self.register_buffer(f"bags_t_{field}", bags_t, persistent=False)
                self.word_embeddings[field] = nn.Embedding(
                    dataset.num(field), word_embedding_size, padding_idx=0
                )
                self._layout.append((field, word_embedding_size))
        self.register_buffer("content_mask", torch.ones(self.dim))

    @property
    def layout(self) -> list[tuple[str, int]]:
        """(field, width) of each modality, in the order they make up c_i."""
        return list(self._layout)

    @property
    def dim(self) -> int:
        return sum(width for _, width in self._layout)

    @property
    def n_items(self) -> int:
        return self._n_items

    def frozen_rows(self):
        """A function giving unmasked c_i without gradient for ``items`` (any shape; None:
        every item), with each word modality's table computed once, as the content stays
        fixed (InvRL's M3 and M4)."""
        with torch.no_grad():
            tables = {field: self.word_table(field) for field in self.word_embeddings}

        @torch.no_grad()
        def rows(items: torch.Tensor | None) -> torch.Tensor:
            if items is None:
                items = torch.arange(self.n_items, device=self.content_mask.device)
            return self.raw(items, tables)

        return rows

    def set_mask(self, mask: torch.Tensor) -> None:
        """Set the D-vector multiplying c_i (InvRL's m, or 1 - m)."""
        mask = torch.as_tensor(mask, dtype=self.content_mask.dtype)
        if mask.shape != self.content_mask.shape:
            raise ValueError(
                f"content_mask: expected shape ({self.dim},) for layout {self._layout}, "
                f"got {tuple(mask.shape)}"
            )
        self.content_mask.copy_(mask.to(self.content_mask.device))

    @contextmanager
    def gated(self, gate: torch.Tensor) -> Iterator[None]:
        """Within the block the content is ``gate * c_i``, ``gate`` a D-vector that may
        require grad (InvRL's mu, so that a model's own forward is differentiated in it);
        the stored mask is back afterwards."""
        if gate.shape != self.content_mask.shape:
            raise ValueError(f"gate: expected shape ({self.dim},) for layout {self._layout}, got {tuple(gate.shape)}")
        stored = self._buffers["content_mask"]
        self._buffers["content_mask"] = gate
        try:
            yield
        finally:
            self._buffers["content_mask"] = stored

    def raw(self, items: torch.Tensor, word_tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Unmasked c_i for ``items`` (any shape) -> (*items.shape, D), a fresh tensor.

        ``word_tables``: precomputed ``word_table(field)`` results to gather from."""
        parts = []
        for field, _ in self._layout:
            if field in self.word_embeddings:
                table = word_tables[field] if word_tables else self.word_table(field)
                parts.append(F.embedding(items, table))
            else:
                parts.append(self.dense_rows(field, items))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def dense_rows(self, field: str, items: torch.Tensor) -> torch.Tensor:
        """Normalised rows of a float_seq modality: gathered, then divided in place."""
        return getattr(self, f"dense_{field}")[items].div_(getattr(self, f"norm_{field}")[items])

    def word_table(self, field: str) -> torch.Tensor:
        """Every item's normalised sum of its word embeddings (repeats count), (n_items, width)."""
        weight = self.word_embeddings[field].weight
        bags = BagSum.apply(weight, getattr(self, f"bags_{field}"), getattr(self, f"bags_t_{field}"))
        return F.normalize(bags, dim=-1)

    def project(
        self,
        items: torch.Tensor | None,
        weight: torch.Tensor,
        word_tables: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``raw(items) @ weight.T`` for ``weight`` (K, D), built modality by modality
        (dense rows are divided by their norms after projecting) -> (*items.shape, K).
        ``items`` None: every item, (n_items, K), with no rows gathered."""
        out = None
        for field, columns in layout_slices(self._layout):
            block = weight[:, columns]
            if field in self.word_embeddings:
                table = word_tables[field] if word_tables else self.word_table(field)
                part = (table if items is None else F.embedding(items, table)) @ block.T
            else:
                dense, norms = getattr(self, f"dense_{field}"), getattr(self, f"norm_{field}")
                if items is not None:
                    dense, norms = dense[items], norms[items]
                part = (dense @ block.T) / norms
            out = part if out is None else out + part
        return out

    def modality_mask(self, index: int) -> tuple[str, torch.Tensor]:
        """(field, its slice of ``content_mask``) of modality ``index`` in the layout."""
        field, columns = layout_slices(self._layout)[index]
        return field, self.content_mask[columns]

    def projected_modality(self, index: int, weight: torch.Tensor) -> torch.Tensor:
        """W (m * c_i) of modality ``index`` alone for every item, (n_items, K), with
        ``weight`` (K, width): a dense modality is projected straight from the dataset's
        matrix and divided by its row norms after, so no (n_items, width) copy is formed,
        forward or backward."""
        field, mask = self.modality_mask(index)
        weight = weight * mask
        if field in self.word_embeddings:
            return self.word_table(field) @ weight.T
        return (getattr(self, f"dense_{field}") @ weight.T) / getattr(self, f"norm_{field}")

    def projected(self, items: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
        """W (m * c_i) = (W diag m) c_i for the projection ``weight`` (K, D); ``items``
        None: every item."""
        return self.project(items, weight * self.content_mask)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Masked content ``content_mask * c_i`` for ``items`` (masked in place: ``raw``
        returns a fresh tensor, so no (items, D) temporary is added)."""
        return self.raw(items).mul_(self.content_mask)


def layout_slices(layout: list[tuple[str, int]]) -> list[tuple[str, slice]]:
    """(field, its slice of c_i) for each (field, width) of a content layout, in order."""
    slices, start = [], 0
    for field, width in layout:
        slices.append((field, slice(start, start + width)))
        start += width
    return slices


def row_norms(matrix: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(n, 1) L2 norms of the rows, clamped at ``eps``: exactly ``F.normalize``'s divisor."""
    return matrix.norm(2.0, 1, keepdim=True).clamp_min(eps)


def word_bags(words: torch.Tensor, n_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded word ids (n_items, L), 0 = padding -> the (n_items, n_words) word counts
    and their transpose, both sparse CSR (the transpose serves the backward pass)."""
    rows = torch.arange(words.shape[0]).repeat_interleave(words.shape[1])
    cols = words.reshape(-1)
    keep = cols > 0
    indices = torch.stack([rows[keep], cols[keep]])
    counts = torch.ones(indices.shape[1])
    shape = (words.shape[0], n_words)
    with warnings.catch_warnings():  # "sparse CSR support is in beta" / invariant checks
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(indices, counts, shape, check_invariants=True).coalesce()
        return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()


class BagSum(torch.autograd.Function):
    """``bags @ weight`` for fixed sparse CSR ``bags``; the gradient is ``bags.T @ grad``
    with the transpose built once, which is faster than torch's COO matmul
    (``bench/bench_step.py`` times both)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bags: torch.Tensor, bags_t: torch.Tensor) -> torch.Tensor:
        ctx.bags_t = bags_t
        return bags @ weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.bags_t @ grad, None, None

