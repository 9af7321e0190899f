"""Pieces shared by M3 and M4: the training interactions on the device, and the pretrained
backbone seen with frozen id embeddings and a fixed content table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from recbole_invrl.model.common import item_rows
from recbole_invrl.model.general_recommender.ultragcn_mm import UltraGCNMM

CONTENT_TABLE_BYTES = 256 * 2**20  # FrozenBackbone keeps a content table up to this size


@dataclass
class TrainingInteractions:
    """All training (user, item) pairs as device tensors, batched without host round trips."""

    users: torch.Tensor
    items: torch.Tensor

    @classmethod
    def from_dataset(cls, dataset, device: torch.device) -> "TrainingInteractions":
        feat = dataset.inter_feat
        return cls(feat[dataset.uid_field].to(device), feat[dataset.iid_field].to(device))

    def __len__(self) -> int:
        return len(self.users)

    def batches(self, batch_size: int, shuffle: bool = True) -> Iterator[torch.Tensor]:
        """Index tensors of one epoch (shuffled with the global torch RNG of the device)."""
        n = len(self.users)
        order = torch.randperm(n, device=self.users.device) if shuffle else torch.arange(n, device=self.users.device)
        return iter(order.split(batch_size))


class FrozenBackbone:
    """The pretrained UltraGCN-MM as M3/M4 use it: id embeddings frozen, content fixed.

    ``content_rows`` gives c_i of the items asked for, without gradient, so the environment
    and mask models can gate it (1 - m, mu) and project it themselves. The word
    modalities' (n_items, width) tables are computed once here. A (n_items, D) content
    table is built when it takes at most ``table_bytes`` (the rows are then one gather);
    above that (Kwai: 86,483 x 2,048 floats, 0.7 GB) rows are gathered from the dataset's
    matrix and normalised on demand, so the features are not held twice."""

    def __init__(self, backbone: UltraGCNMM, table_bytes: int = CONTENT_TABLE_BYTES):
        self.model = backbone
        with torch.no_grad():
            encoder = backbone.content
            self.word_tables = {field: encoder.word_table(field) for field in encoder.word_embeddings}
            self.user_weight = backbone.user_embedding.weight.detach()
            self.item_weight = backbone.item_embedding.weight.detach()
            table_size = backbone.n_items * encoder.dim * self.user_weight.element_size()
            self.table = None
            if table_size <= table_bytes:
                self.table = self.content_rows(None)  # every item, computed on demand
        self.embedding_size = backbone.embedding_size

    def content_rows(self, items: torch.Tensor | None) -> torch.Tensor:
        """Unmasked c_i of ``items`` (any shape) -> (*shape, D), a fresh tensor; ``items``
        None: every item (the content table itself where there is one: read it only)."""
        if self.table is not None:
            return self.table if items is None else self.table[items]
        if items is None:
            items = torch.arange(self.model.n_items, device=self.user_weight.device)
        with torch.no_grad():
            return self.model.content.raw(items, self.word_tables)

    def content_table(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, index): ``rows[index]`` is c_i of ``items`` (any shape); the rows are
        the batch's items, each once (``item_rows``)."""
        rows, index = item_rows(items, self.model.n_items)
        return self.content_rows(rows), index

    def user_parts(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_u^(t), p_u^(c)) of eq. 14."""
        vectors = self.user_weight[users]
        return vectors[:, : self.embedding_size], vectors[:, self.embedding_size :]

    def id_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """<p_u^(t), t_i> for items (B, M)."""
        user_ids, _ = self.user_parts(users)
        return torch.linalg.vecdot(F.embedding(items, self.item_weight), user_ids.unsqueeze(1))

    def training_batch(self, interactions: TrainingInteractions, index: torch.Tensor):
        """(users, positives, negatives, items scored) for the interactions at ``index``."""
        users, positives = interactions.users[index], interactions.items[index]
        negatives = self.model.sample_negatives(len(index))
        return users, positives, negatives, self.model.training_items(positives, negatives)
