"""``MultimodalRecommender``: the base of the plugin's content models, as RecBole-GNN's
``GeneralGraphRecommender`` is the base of its graph models.

It owns what every multimodal recommender here needs and none should write again:

- the content encoder c_i (``content_fields``, ``word_embedding_size``; see
  ``recbole_invrl.model.content``), its layout (field, width) and its mask (ones, or
  InvRL's m: the model then sees m * c_i);
- the whole-catalogue tables of full ranking, computed once per evaluation and cleared
  whenever the model trains (``AllItemsCache``);
- ``predict`` and ``full_sort_predict`` over dot products of user and item vectors.

A subclass gives ``user_vectors(users)`` and ``item_vectors(items)`` (``items`` None: every
item, in id order); scores are their dot products (fold a bias in as a constant 1 on the
user side). A model whose vectors come from propagation over a graph overrides
``scoring_tables`` to propagate once and return every user's and item's vector.

To run InvRL on a model, it also implements ``invariance_parts`` (see
``recbole_invrl.invariance.backbone``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender

from recbole_invrl.model.common import AllItemsCache, UnseenItemSampler, positive_int
from recbole_invrl.model.content import ContentEncoder


class MultimodalRecommender(GeneralRecommender):
    """A ``GeneralRecommender`` that scores users against items with content c_i."""

    content_reg_key: str | None = None  # the config key of the L2 factor on content parameters

    def __init__(self, config, dataset, shared: "MultimodalRecommender | None" = None):
        """``shared``: a model on the same data whose content buffers (features, word bags)
        are reused instead of built again."""
        super().__init__(config, dataset)
        self.content = ContentEncoder(
            dataset,
            config["content_fields"],
            positive_int(config, "word_embedding_size"),
            shared=shared.content if shared is not None else None,
        )
        self._tables = AllItemsCache()

    # ----------------------------------------------------------------- content
    @property
    def content_layout(self) -> list[tuple[str, int]]:
        """(field, width) of each modality in c_i, in order."""
        return self.content.layout

    @property
    def content_mask(self) -> torch.Tensor:
        return self.content.content_mask

    def set_content_mask(self, mask: torch.Tensor) -> None:
        """Multiply c_i by ``mask`` (a D-vector) from now on."""
        self.content.set_mask(mask)

    def share_data_from(self, other: "MultimodalRecommender") -> None:
        """Point every data-derived (non-persistent) buffer at ``other``'s, e.g. after ``.to()``
        gave each of two models on the same data its own copy."""
        source_modules = dict(other.named_modules())
        for name, module in self.named_modules():
            for buffer in module._non_persistent_buffers_set:
                setattr(module, buffer, getattr(source_modules[name], buffer))

    # ----------------------------------------------------------------- vectors
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """(n, K) vectors of ``users``."""
        raise NotImplementedError

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(*items.shape, K) vectors of ``items``; None: every item, (n_items, K)."""
        raise NotImplementedError

    def scoring_tables(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(every user's vector, or None where users are looked up per batch; every item's
        vector) for full ranking."""
        return None, self.item_vectors(None)

    def table_scores(self, tables: tuple[torch.Tensor | None, torch.Tensor], users: torch.Tensor,
                     items: torch.Tensor) -> torch.Tensor:
        """Scores of ``users`` (n,) against ``items`` (n,) or (n, M) from ``scoring_tables``
        (users looked up per batch where the tables have none)."""
        user_table, item_table = tables
        user_side = self.user_vectors(users) if user_table is None else user_table[users]
        if items.dim() == 2:
            user_side = user_side.unsqueeze(1)
        return (user_side * item_table[items]).sum(-1)

    def cached_tables(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``scoring_tables``, kept across the batches of one evaluation."""
        return self._tables.get(self, self.scoring_tables)

    # ----------------------------------------------------------------- RecBole API
    def predict(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        if self.training:
            return (self.user_vectors(users) * self.item_vectors(items)).sum(-1)
        return self.table_scores(self.cached_tables(), users, items)

    def full_sort_predict(self, interaction):
        users = interaction[self.USER_ID]
        user_table, item_table = self.cached_tables()
        user_side = self.user_vectors(users) if user_table is None else user_table[users]
        return (user_side @ item_table.T).reshape(-1)


class PairwiseDotRecommender(MultimodalRecommender):
    """A ``MultimodalRecommender`` trained by BPR on dot-product scores: one negative per
    positive, from RecBole's sampler or, where the dataloader gives none (as inside InvRL),
    drawn on the device the way RecBole's uniform sampler draws it, among the items the
    user has not interacted with in training (``UnseenItemSampler``). A subclass adds its
    regulariser to ``bpr_loss``."""

    def __init__(self, config, dataset, shared: "PairwiseDotRecommender | None" = None):
        super().__init__(config, dataset, shared)
        if shared is not None:
            self.negative_sampler = shared.negative_sampler
        else:
            feat = dataset.inter_feat
            self.negative_sampler = UnseenItemSampler(feat[self.USER_ID], feat[self.ITEM_ID], self.n_users,
                                                      self.n_items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of B users against ``items`` of shape (B,) or (B, M)."""
        user_vectors = self.user_vectors(users)
        if items.dim() == 2:
            user_vectors = user_vectors.unsqueeze(1)
        return (user_vectors * self.item_vectors(items)).sum(-1)

    def sample_negatives(self, users: torch.Tensor) -> torch.Tensor:
        """(n, 1): one negative per positive of ``users``, uniform among the items the user
        has not interacted with in training."""
        return self.negative_sampler(users, 1)

    def training_items(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """[i, j] per positive -> (B, 2)."""
        return torch.cat([positives.unsqueeze(1), negatives], dim=1)

    def interaction_losses(self, scores, users, positives, negatives) -> torch.Tensor:
        """-log sigma(s_ui - s_uj) of each positive, from the scores of ``training_items``."""
        return F.softplus(scores[:, 1] - scores[:, 0])

    def bpr_loss(self, interaction) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(users, their (B, 2) training items, the batch's mean BPR loss)."""
        users = interaction[self.USER_ID]
        positives = interaction[self.ITEM_ID]
        if self.NEG_ITEM_ID in interaction:
            negatives = interaction[self.NEG_ITEM_ID].unsqueeze(1)
        else:
            negatives = self.sample_negatives(users)
        items = self.training_items(positives, negatives)  # (B, 2): one projection for both
        bpr = self.interaction_losses(self.forward(users, items), users, positives, negatives).mean()
        return users, items, bpr
