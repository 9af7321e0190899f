"""UltraGCN's training objective (Mao et al., "UltraGCN: Ultra Simplification of Graph
Convolutional Networks for Recommendation", CIKM 2021, §3), shared by UltraGCN (ids only)
and UltraGCN-MM (ids and content). In the InvRL paper's notation (§2.3.5):

    L = L_O + gamma_C L_C + gamma_I L_I + L2                                         (eq. 15)
    L_O = -sum_R log sigma(s_ui) - sum_R- log sigma(-s_uj)                           (eq. 16)
    L_C = -sum_R beta_ui log sigma(s_ui) - sum_R- beta_uj log sigma(-s_uj)           (eq. 17)
    beta_ui = 1 / d_u * sqrt((d_u + 1) / (d_i + 1))                                  (eq. 18)
    L_I = -sum_R sum_{j in S(i)} omega_ij log sigma(s_uj)                             (eq. 19)
    omega_ij = G_ij / (g_i - G_ii) * sqrt(g_i / g_j),  G = R^T R                      (eq. 20)

As in the authors' release, L_O and L_C are folded into one weighted binary
cross-entropy: a positive (u, i) weighs w1 + w2 beta_ui, each of its ``neg_num`` uniform
negatives (u, j) weighs w3 + w4 beta_uj, and the negatives' losses are averaged per
positive and scaled by ``negative_weight`` (w1 = w3 = 1 and w2 = w4 = gamma_C give eq. 15
exactly). Negatives are drawn on the model's device inside ``calculate_loss``, so
RecBole's dataloader yields positives only (``train_neg_sample_args: ~``).

``UltraGCNObjective`` is a mixin: the model gives ``user_embedding``, ``item_embedding`` and
``forward(users, items)`` (scores of B users against items of shape (B, M)), and calls
``init_objective`` in its ``__init__``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_invrl.distributed import loss_scale
from recbole_invrl.model.common import non_negative, positive_int
from recbole_invrl.model.item_graph import item_item_neighbors

GRAPH_BUFFERS = ("neighbor_index", "neighbor_weight", "beta_user", "beta_item")


class UltraGCNObjective:
    """Eq. 15-20 for any scoring function ``forward(users, items)``."""

    def init_objective(self, config, dataset, shared=None) -> None:
        """Read the loss settings and register the graph weights (``shared``: a model on the
        same data whose graph buffers are reused)."""
        self.neg_num = positive_int(config, "neg_num")
        self.num_neighbors = non_negative(config, "num_neighbors", int)
        self.gamma_i = non_negative(config, "gamma_i", float)
        self.negative_weight = non_negative(config, "negative_weight", float)
        gamma_c = non_negative(config, "gamma_c", float)
        self.w1, self.w3 = config["w1"], config["w3"]
        self.w2 = gamma_c if config["w2"] is None else config["w2"]
        self.w4 = gamma_c if config["w4"] is None else config["w4"]
        self.id_reg_weight = non_negative(config, "id_reg_weight", float)
        self.loss_scale = loss_scale(config)  # the batch sum is split over DDP ranks
        if shared is None:
            self._register_graph_buffers(dataset.inter_matrix(form="csr").astype("float32"))
        else:
            for name in GRAPH_BUFFERS:
                self.register_buffer(name, getattr(shared, name), persistent=False)

    def _register_graph_buffers(self, interactions) -> None:
        """beta_ui (eq. 18) stored as two factors, sqrt(d_u + 1) / d_u and 1 / sqrt(d_i + 1),
        and the top-K item-item neighbours with their omega (eq. 20)."""
        index, weight = item_item_neighbors(interactions, self.num_neighbors if self.gamma_i else 0)
        self.register_buffer("neighbor_index", torch.from_numpy(index), persistent=False)
        self.register_buffer("neighbor_weight", torch.from_numpy(weight), persistent=False)
        interactions = interactions.copy()
        interactions.data[:] = 1.0
        user_degree = torch.from_numpy(interactions.sum(axis=1).A.ravel()).float()
        item_degree = torch.from_numpy(interactions.sum(axis=0).A.ravel()).float()
        user_factor = torch.where(
            user_degree > 0, (user_degree + 1).sqrt() / user_degree.clamp(min=1), torch.zeros(())
        )
        self.register_buffer("beta_user", user_factor, persistent=False)
        self.register_buffer("beta_item", 1.0 / (item_degree + 1).sqrt(), persistent=False)

    def sample_negatives(self, users: torch.Tensor) -> torch.Tensor:
        """``neg_num`` uniform items per positive of ``users``, drawn on the device (item 0 is
        padding; a training positive may be drawn, as in UltraGCN's release)."""
        return torch.randint(
            1, self.n_items, (len(users), self.neg_num), device=self.item_embedding.weight.device
        )

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        positives = interaction[self.ITEM_ID]
        negatives = self.sample_negatives(users)
        return self.loss(users, positives, negatives)

    def training_items(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Items scored for each positive: [i, negatives..., S(i) neighbours...] -> (B, M)."""
        parts = [positives.unsqueeze(1), negatives]
        if self.gamma_i > 0:
            parts.append(self.neighbor_index[positives])
        return torch.cat(parts, dim=1)

    def loss(
        self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 15-20 for given positives (B,) and negatives (B, neg_num), plus L2."""
        scores = self.forward(users, self.training_items(positives, negatives))
        batch_loss = self.interaction_losses(scores, users, positives, negatives).sum()
        return self.loss_scale * batch_loss + self.l2_loss()

    def interaction_losses(
        self,
        scores: torch.Tensor,
        users: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of each positive (B,) from its scores (B, M) laid out as ``training_items``.

        Any scoring function can be plugged in (InvRL's environment and mask models)."""
        n_neg = negatives.shape[1]
        pos_scores, neg_scores = scores[:, 0], scores[:, 1 : 1 + n_neg]
        beta_u = self.beta_user[users]
        pos_weight = self.w1 + self.w2 * beta_u * self.beta_item[positives]  # eq. 17-18
        neg_weight = self.w3 + self.w4 * beta_u.unsqueeze(1) * self.beta_item[negatives]
        pos_loss = pos_weight * F.softplus(-pos_scores)  # -log sigma(s_ui)      eq. 16-17
        neg_loss = (neg_weight * F.softplus(neg_scores)).mean(dim=1)  # -log sigma(-s_uj)
        losses = pos_loss + self.negative_weight * neg_loss
        if self.gamma_i > 0:
            omega = self.neighbor_weight[positives]
            item_item = -(omega * F.logsigmoid(scores[:, 1 + n_neg :])).sum(dim=1)  # eq. 19
            losses = losses + self.gamma_i * item_item
        return losses

    def l2_loss(self) -> torch.Tensor:
        """Release-style L2 (UltraGCN ``norm_loss``) on the whole id tables."""
        id_norm = self.user_embedding.weight.square().sum() + self.item_embedding.weight.square().sum()
        return 0.5 * self.id_reg_weight * id_norm
