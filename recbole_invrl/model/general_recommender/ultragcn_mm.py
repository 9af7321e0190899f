"""UltraGCN-MM: the UltraGCN backbone with multimedia content (paper §2.3.5).

score(u, i) = <p_u^(t), t_i> + <p_u^(c), W c_i>                                  (eq. 14)
loss = L_O + gamma_C L_C + gamma_I L_I + L2                                         (eq. 15)

The loss (eq. 15-20, L_O and L_C folded into one weighted binary cross-entropy as in the
authors' release) is plain UltraGCN's, ``recbole_invrl.model.ultragcn_objective``; the L2
adds a factor of its own on the content parameters (W and the word embeddings).
"""
from __future__ import annotations

import torch
from recbole.utils import InputType
from torch import nn

from recbole_invrl.invariance.backbone import ForwardParts, InvarianceParts
from recbole_invrl.model.abstract_recommender import MultimodalRecommender
from recbole_invrl.model.common import gathered_dot, item_rows, non_negative, positive_int
from recbole_invrl.model.ultragcn_objective import UltraGCNObjective


class UltraGCNMM(UltraGCNObjective, MultimodalRecommender):
    """UltraGCN with a linear projection of item content (eq. 14-20)."""

    input_type = InputType.POINTWISE
    content_reg_key = "proj_reg_weight"  # InvRL's final_proj_reg_weight replaces it in the final model

    def __init__(self, config, dataset, shared: "UltraGCNMM | None" = None):
        """``shared``: another UltraGCNMM on the same data whose data-derived buffers
        (content features, degrees, neighbour table) are reused instead of recomputed."""
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        self.content_size = positive_int(config, "content_size")
        self.proj_reg_weight = non_negative(config, "proj_reg_weight", float)
        self.init_objective(config, dataset, shared)

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size + self.content_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.projection = nn.Linear(self.content.dim, self.content_size, bias=False)
        nn.init.normal_(self.user_embedding.weight, std=config["init_std"])
        nn.init.normal_(self.item_embedding.weight, std=config["init_std"])

    # ----------------------------------------------------------------- scoring
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[p_u^(t), p_u^(c)] of eq. 14."""
        return self.user_embedding(users)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """[t_i, W (m * c_i)] for each entry of ``items`` (any shape) -> (*shape, embedding
        + content size); ``items`` None: every item, with no rows gathered."""
        content = self.content.projected(items, self.projection.weight)
        ids = self.item_embedding.weight if items is None else self.item_embedding(items)
        return torch.cat([ids, content], dim=-1)

    def item_table(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors, index): ``vectors[index]`` are the vectors of ``items`` (any shape),
        each item projected once (``item_rows``)."""
        rows, index = item_rows(items, self.n_items)
        return self.item_vectors(rows), index

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (eq. 14) of B users against ``items`` of shape (B,) or (B, M)."""
        user_vectors = self.user_embedding(users)
        if items.dim() == 1:
            return (user_vectors * self.item_vectors(items)).sum(-1)
        table, index = self.item_table(items)
        return gathered_dot(table, user_vectors, index)

    # ----------------------------------------------------------------- loss
    def l2_loss(self) -> torch.Tensor:
        """Release-style L2 (UltraGCN ``norm_loss``): whole tables, separate factors for
        id embeddings and for the content parameters (projection, word embeddings)."""
        content_norm = sum(
            p.square().sum()
            for p in [self.projection.weight, *self.content.word_embeddings.parameters()]
        )
        return super().l2_loss() + 0.5 * self.proj_reg_weight * content_norm

    # ----------------------------------------------------------------- InvRL
    def invariance_parts(self) -> InvarianceParts:
        """Eq. 14 itself: s_id = <p_u^(t), t_i>, p_u^(c) the user vector's content half."""
        users = self.user_embedding.weight.detach()
        return InvarianceParts(
            user_ids=users[:, : self.embedding_size],
            item_ids=self.item_embedding.weight.detach(),
            user_content=users[:, self.embedding_size :],
            projection=self.projection.weight.detach(),
            content_rows=self.content.frozen_rows(),
            content_reg=self.proj_reg_weight,
            id_reg=self.id_reg_weight,
        )

    def forward_parts(self) -> ForwardParts:
        """The same backbone for the forward path (``invariance_path: forward``): W on c_i,
        the id embeddings frozen."""
        return ForwardParts(weights=[(self.projection.weight, 0)],
                            frozen=[self.user_embedding.weight, self.item_embedding.weight],
                            content_reg=self.proj_reg_weight)
