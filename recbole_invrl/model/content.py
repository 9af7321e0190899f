"""``ContentEncoder``: modality columns of the item file -> the content vector c_i.

Each ``float_seq`` modality is L2-normalised row-wise (once, at load); each ``token_seq``
modality is a bag of word ids whose learned embeddings are summed and then normalised
(the Tiktok text case, NOTES §1), computed for all items as one sparse (items x words)
count matrix times the embedding table. Modalities are concatenated in config order into
c_i of width D, and multiplied by ``content_mask`` (ones by default; InvRL sets it).
"""
from __future__ import annotations

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
        for field in self.fields:
            values = item_feat[field]
            if dataset.field2type[field] == FeatureType.FLOAT_SEQ:
                if shared is not None:
                    dense = getattr(shared, f"dense_{field}")
                else:
                    dense = F.normalize(values.float().reshape(len(values), -1), dim=1)
                self.register_buffer(f"dense_{field}", dense, persistent=False)
                self._layout.append((field, dense.shape[1]))
            else:
                n_words = dataset.num(field)
                bags = getattr(shared, f"bags_{field}") if shared is not None else word_bags(values.long(), n_words)
                self.register_buffer(f"bags_{field}", bags, persistent=False)
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

    def set_mask(self, mask: torch.Tensor) -> None:
        """Set the D-vector multiplying c_i (InvRL's m, or 1 - m)."""
        mask = torch.as_tensor(mask, dtype=self.content_mask.dtype)
        if mask.shape != self.content_mask.shape:
            raise ValueError(
                f"content_mask: expected shape ({self.dim},) for layout {self._layout}, "
                f"got {tuple(mask.shape)}"
            )
        self.content_mask.copy_(mask.to(self.content_mask.device))

    def raw(self, items: torch.Tensor) -> torch.Tensor:
        """Unmasked c_i for ``items`` (any shape) -> (*items.shape, D)."""
        parts = []
        for field, _ in self._layout:
            if field in self.word_embeddings:
                # sum of the item's word embeddings (repeats count), for all items in one
                # sparse matmul, then normalised
                bags = torch.sparse.mm(getattr(self, f"bags_{field}"), self.word_embeddings[field].weight)
                parts.append(F.embedding(items, F.normalize(bags, dim=-1)))
            else:
                parts.append(getattr(self, f"dense_{field}")[items])
        return torch.cat(parts, dim=-1)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Masked content ``content_mask * c_i`` for ``items``."""
        return self.raw(items) * self.content_mask


def word_bags(words: torch.Tensor, n_words: int) -> torch.Tensor:
    """Padded word ids (n_items, L), 0 = padding -> sparse (n_items, n_words) word counts."""
    rows = torch.arange(words.shape[0]).repeat_interleave(words.shape[1])
    cols = words.reshape(-1)
    keep = cols > 0
    indices = torch.stack([rows[keep], cols[keep]])
    counts = torch.ones(indices.shape[1])
    return torch.sparse_coo_tensor(indices, counts, (words.shape[0], n_words)).coalesce()

