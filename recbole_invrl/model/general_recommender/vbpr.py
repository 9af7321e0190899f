"""VBPR (He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback",
AAAI 2016) on the plugin's multimedia content.

    score(u, i) = beta_i + <gamma_u, gamma_i> + <theta_u, E c_i> + <beta', c_i>     (eq. 2)

``c_i`` is the content vector of ``ContentEncoder`` (the same ``content_fields`` as
UltraGCN-MM: each float_seq modality L2-normalised, token_seq word bags through a learned
word embedding), ``E`` a (content dim -> ``visual_size``) linear map and ``beta'`` a content
bias vector. The user bias and the global offset cancel in BPR and are left out, as in the
paper. Training is BPR (eq. 3-4): -log sigma(s_ui - s_uj) for a positive i and a uniform
negative j, plus L2 (``reg_weight``) on the embeddings and item biases the batch uses.
The negative comes from RecBole's sampler (``train_neg_sample_args``, one per positive)
or, where the dataloader gives none (``train_neg_sample_args: ~``, as inside InvRL), is
drawn on the model's device.

Internally a user is ``[gamma_u, theta_u, 1]`` and an item ``[gamma_i, E c_i, beta_i +
<beta', c_i>]``, so that every score is one dot product.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_invrl.invariance.backbone import InvarianceParts
from recbole_invrl.model.abstract_recommender import PairwiseDotRecommender
from recbole_invrl.model.common import check_pairwise_sampling, distinct_items, non_negative, positive_int

PROJECTION_CHUNK = 8192  # items whose content is projected at once when scoring all items


class VBPR(PairwiseDotRecommender):
    """Visual BPR: matrix factorisation plus a linear projection of item content."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset, shared: "VBPR | None" = None):
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        self.visual_size = _visual_size(config, self.embedding_size)
        self.id_size = self.embedding_size - self.visual_size
        self.reg_weight = non_negative(config, "reg_weight")
        check_pairwise_sampling(config, "VBPR")

        # user: [gamma_u, theta_u]; item: gamma_i and beta_i
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.id_size)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.visual_projection = nn.Linear(self.content.dim, self.visual_size, bias=False)  # E
        self.content_bias = nn.Linear(self.content.dim, 1, bias=False)  # beta'
        nn.init.xavier_normal_(self.user_embedding.weight)
        nn.init.xavier_normal_(self.item_embedding.weight)
        nn.init.xavier_normal_(self.visual_projection.weight)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.content_bias.weight)

    # ----------------------------------------------------------------- vectors
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """[gamma_u, theta_u, 1]."""
        vectors = self.user_embedding(users)
        return torch.cat([vectors, vectors.new_ones(*vectors.shape[:-1], 1)], dim=-1)

    def _content_terms(self, items: torch.Tensor) -> torch.Tensor:
        """[E c_i, <beta', c_i>] for a 1-D tensor of items."""
        content = self.content(items)
        return torch.cat([self.visual_projection(content), self.content_bias(content)], dim=-1)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """[gamma_i, E c_i, beta_i + <beta', c_i>] for ``items`` of any shape, the content
        of each distinct item projected once; None: every item, in chunks."""
        if items is None:
            all_items = torch.arange(self.n_items, device=self.item_embedding.weight.device)
            content = torch.cat([self._content_terms(chunk) for chunk in all_items.split(PROJECTION_CHUNK)])
            ids, biases = self.item_embedding.weight, self.item_bias.weight
        else:
            unique, inverse = distinct_items(items, self.n_items)
            content = F.embedding(inverse, self._content_terms(unique))
            ids, biases = self.item_embedding(items), self.item_bias(items)
        visual, content_bias = content[..., :-1], content[..., -1:]
        return torch.cat([ids, visual, biases + content_bias], dim=-1)

    # ----------------------------------------------------------------- loss
    def calculate_loss(self, interaction):
        users, items, bpr = self.bpr_loss(interaction)  # eq. 4
        return bpr + self.reg_weight * self.l2_loss(users, items)

    def l2_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """0.5 * squared norms of the batch's gamma_u, theta_u, gamma_i, gamma_j, beta_i and
        beta_j, averaged over the batch."""
        squares = (
            self.user_embedding(users).square().sum()
            + self.item_embedding(items).square().sum()
            + self.item_bias(items).square().sum()
        )
        return 0.5 * squares / len(users)

    # ----------------------------------------------------------------- InvRL
    def invariance_parts(self) -> InvarianceParts:
        """s_id = beta_i + <gamma_u, gamma_i> as <[gamma_u, 1], [gamma_i, beta_i]>, and
        <theta_u, E c_i> + <beta', c_i> as <[theta_u, 1], [E; beta'] c_i>. VBPR's L2 is on
        the batch's embeddings, none on E."""
        users = self.user_embedding.weight.detach()
        ones = users.new_ones(len(users), 1)
        return InvarianceParts(
            user_ids=torch.cat([users[:, : self.id_size], ones], dim=1),
            item_ids=torch.cat([self.item_embedding.weight, self.item_bias.weight], dim=1).detach(),
            user_content=torch.cat([users[:, self.id_size :], ones], dim=1),
            projection=torch.cat([self.visual_projection.weight, self.content_bias.weight]).detach(),
            content_rows=self.content.frozen_rows(),
            content_reg=0.0,
            id_reg=self.reg_weight,
        )


def _visual_size(config, embedding_size: int) -> int:
    """``visual_size`` of the user vector's ``embedding_size``; ``~`` = half of it."""
    value = config["visual_size"]
    if value is None:
        if embedding_size < 2:
            raise ValueError(
                f"embedding_size: expected an integer >= 2 to split into id and visual parts "
                f"(or set visual_size), got {embedding_size!r}"
            )
        return embedding_size // 2
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < embedding_size:
        raise ValueError(
            f"visual_size: expected an integer in [1, embedding_size - 1] = [1, {embedding_size - 1}], "
            f"got {value!r}"
        )
    return value

