"""DUIF (Geng et al., "Learning Image and User Features for Recommendation in Social
Networks", ICCV 2015) on the plugin's multimedia content.

DUIF maps users and items into one feature space and recommends by feature similarity:
a user is a free vector p_u, an item is represented by its content only (no item id
embedding), through a learned transform f of its features,

    score(u, i) = <p_u, f(c_i)>,   f(c_i) = W c_i                                   (§3)

Geng et al. learn f as the top of a CNN on the images; on precomputed features (as in
the Table 2 baselines of MMGCN, GRCN and InvRL) f is the learned projection W of the
content vector c_i (``ContentEncoder``: each float_seq modality L2-normalised, token_seq
word bags through a learned word embedding). Training is pairwise ranking on implicit
feedback: -log sigma(s_ui - s_uj) for a positive i and a uniform negative j, plus L2
(``reg_weight``) on the batch's user vectors and (``proj_reg_weight``) on W.

The negative comes from RecBole's sampler (``train_neg_sample_args``, one per positive)
or, where the dataloader gives none (``train_neg_sample_args: ~``, as inside InvRL), is
drawn on the model's device.
"""
from __future__ import annotations

import torch
from recbole.utils import InputType
from torch import nn

from recbole_invrl.invariance.backbone import InvarianceParts
from recbole_invrl.model.abstract_recommender import PairwiseDotRecommender
from recbole_invrl.model.common import check_pairwise_sampling, non_negative, positive_int


class DUIF(PairwiseDotRecommender):
    """Users as free vectors, items as a learned projection of their content."""

    input_type = InputType.PAIRWISE
    content_reg_key = "proj_reg_weight"  # InvRL's final_proj_reg_weight replaces it in the final model

    def __init__(self, config, dataset, shared: "DUIF | None" = None):
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        self.reg_weight = non_negative(config, "reg_weight")
        self.proj_reg_weight = non_negative(config, "proj_reg_weight")
        check_pairwise_sampling(config, "DUIF")

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # p_u
        self.projection = nn.Linear(self.content.dim, self.embedding_size, bias=False)  # W
        nn.init.xavier_normal_(self.user_embedding.weight)
        nn.init.xavier_normal_(self.projection.weight)

    # ----------------------------------------------------------------- vectors
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """p_u."""
        return self.user_embedding(users)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """f(c_i) = W (m * c_i) for ``items`` of any shape; None: every item."""
        return self.content.projected(items, self.projection.weight)

    # ----------------------------------------------------------------- loss
    def calculate_loss(self, interaction):
        users, _, bpr = self.bpr_loss(interaction)
        return bpr + self.l2_loss(users)

    def l2_loss(self, users: torch.Tensor) -> torch.Tensor:
        """0.5 * reg_weight * mean over the batch of ||p_u||^2 + 0.5 * proj_reg_weight * ||W||^2."""
        user_term = self.user_embedding(users).square().sum() / len(users)
        return 0.5 * (self.reg_weight * user_term + self.proj_reg_weight * self.projection.weight.square().sum())

    # ----------------------------------------------------------------- InvRL
    def invariance_parts(self) -> InvarianceParts:
        """Eq. 14 with no id part: s_id = 0 (a zero column), p_u^(c) = p_u, W the projection."""
        users = self.user_embedding.weight.detach()
        return InvarianceParts(
            user_ids=users.new_zeros(self.n_users, 1),
            item_ids=users.new_zeros(self.n_items, 1),
            user_content=users,
            projection=self.projection.weight.detach(),
            content_rows=self.content.frozen_rows(),
            content_reg=self.proj_reg_weight,
            id_reg=self.reg_weight,
        )
