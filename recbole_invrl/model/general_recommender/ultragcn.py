"""UltraGCN (Mao et al., "UltraGCN: Ultra Simplification of Graph Convolutional Networks
for Recommendation", CIKM 2021): matrix factorisation trained with constraint losses that
stand in for infinite-layer graph convolution, so no message passing is run.

    score(u, i) = <e_u, e_i>

The loss is UltraGCN's L = L_O + lambda L_C + gamma L_I + L2 (paper §3.1-3.3; the InvRL
paper restates it as eq. 15-20, with gamma_C = lambda and gamma_I = gamma), shared with
UltraGCN-MM in ``recbole_invrl.model.ultragcn_objective``. The model needs no item
features, so it runs on any RecBole dataset (e.g. ml-100k).
"""
from __future__ import annotations

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_invrl.model.common import gathered_dot, positive_int
from recbole_invrl.model.ultragcn_objective import UltraGCNObjective


class UltraGCN(UltraGCNObjective, GeneralRecommender):
    """Id embeddings e_u, e_i under UltraGCN's user-item and item-item constraints."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset, shared: "UltraGCN | None" = None):
        """``shared``: another UltraGCN on the same data whose graph weights (degrees,
        neighbour table) are reused instead of recomputed."""
        super().__init__(config, dataset)
        self.embedding_size = positive_int(config, "embedding_size")
        self.init_objective(config, dataset, shared)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.normal_(self.user_embedding.weight, std=config["init_std"])
        nn.init.normal_(self.item_embedding.weight, std=config["init_std"])

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """<e_u, e_i> of B users against ``items`` of shape (B,) or (B, M)."""
        user_vectors = self.user_embedding(users)
        if items.dim() == 1:
            return (user_vectors * self.item_embedding(items)).sum(-1)
        return gathered_dot(self.item_embedding.weight, user_vectors, items)

    def predict(self, interaction):
        return self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        users = self.user_embedding(interaction[self.USER_ID])
        return (users @ self.item_embedding.weight.T).reshape(-1)
