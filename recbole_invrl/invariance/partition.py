"""M3 — environment partition (paper §2.3.2).

Environment learning (eq. 6): one model Gamma^(e) per environment on the variant
representation Psi_i = (1 - m) * c_i (eq. 5). As in the authors' release, each starts from
the pretrained backbone with its id embeddings frozen and trains only its content
projection W_e, on its own environment's interactions, with an L1 penalty on the columns
of W_e that the mask marks invariant (so the environments lean on the variant part). The
E projections are stacked into one (E, C, D) parameter: every batch mixes environments and
one backward pass trains all of them.

Interaction separation (eq. 7): every training interaction moves to the environment
whose model scores it highest. An environment left without interactions keeps a model
that only its regularisers change; it can win interactions back at the next separation,
and the mask stage skips it while it is empty.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_invrl.invariance.common import FrozenBackbone, TrainingInteractions
from recbole_invrl.model.common import distinct_items, gathered_dot
from recbole_invrl.optim import fused_copy

ASSIGN_CHUNK = 16384


class EnvironmentModels(nn.Module):
    """|E| environment models Gamma^(e)(u, i, Psi_i) sharing frozen id embeddings."""

    def __init__(self, frozen: FrozenBackbone, num_envs: int, mask: torch.Tensor, l1_weight: float):
        super().__init__()
        self.frozen = frozen
        pretrained = frozen.model.projection.weight.detach()
        self.weight = nn.Parameter(pretrained.unsqueeze(0).repeat(num_envs, 1, 1))  # (E, C, D)
        self.register_buffer("variant_gate", 1.0 - mask)  # Psi = (1 - m) * c (eq. 5)
        self.register_buffer("invariant_gate", mask.clone())
        self.l1_weight = l1_weight

    @property
    def num_envs(self) -> int:
        return self.weight.shape[0]

    def projected(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_e Psi_i for the distinct ``items`` under every environment, as one (U, E, C)
        table from a single matmul, and the inverse index of ``items`` into it."""
        unique, inverse = distinct_items(items, self.frozen.model.n_items)
        n_envs, size, dim = self.weight.shape
        gated = self.weight.reshape(n_envs * size, dim) * self.variant_gate  # W_e Psi = (W_e diag(1 - m)) c
        return (self.frozen.content_rows(unique) @ gated.T).view(len(unique), n_envs, size), inverse

    def scores(self, users: torch.Tensor, items: torch.Tensor, envs: torch.Tensor) -> torch.Tensor:
        """Gamma^(e_b)(u_b, i, Psi_i) for items (B, M), each row under its own environment.

        The projection is applied on the user side: <p_b, W_e Psi_i> =
        <(W_e^T p_b) * (1 - m), c_i>, one (B, E C) @ (E C, D) matmul for the B rows (each
        with its own W_e through a one-hot), then one dot product per scored item. This
        takes B E C D + B M D multiply-adds instead of U E C D for projecting the U
        distinct items under every environment (50 M instead of 550 M for a batch of the
        bench_invrl data)."""
        content, inverse = self.frozen.content_table(items)  # c_i, no gradient (U, D)
        n_envs, size, dim = self.weight.shape
        _, user_content = self.frozen.user_parts(users)
        one_hot = F.one_hot(envs, n_envs).to(user_content.dtype)
        spread = (one_hot.unsqueeze(2) * user_content.unsqueeze(1)).flatten(1)  # (B, E C)
        user_side = (spread @ self.weight.reshape(n_envs * size, dim)) * self.variant_gate  # (B, D)
        return self.frozen.id_scores(users, items) + gathered_dot(content, user_side, inverse)

    def regularisation(self) -> torch.Tensor:
        """L1 on the invariant columns of every W_e, plus the backbone's L2 on projections."""
        l1 = (self.weight.abs() * self.invariant_gate).sum()
        l2 = 0.5 * self.frozen.model.proj_reg_weight * self.weight.square().sum()
        return self.l1_weight * l1 + l2

    def loss(self, users, positives, negatives, items, envs) -> torch.Tensor:
        """Eq. 6 for all environments at once: each interaction trains only its W_e."""
        scores = self.scores(users, items, envs)
        losses = self.frozen.model.interaction_losses(scores, users, positives, negatives)
        return losses.sum() + self.regularisation()

    @torch.no_grad()
    def assign(self, interactions: TrainingInteractions) -> torch.Tensor:
        """Eq. 7: e(u, i) = argmax_e Gamma^(e)(u, i, Psi_i) for every training interaction.

        The id term is shared by all environments, so the argmax needs the content term only."""
        envs = []
        for users, items in zip(interactions.users.split(ASSIGN_CHUNK), interactions.items.split(ASSIGN_CHUNK)):
            projected, inverse = self.projected(items)  # (U, E, C)
            _, user_content = self.frozen.user_parts(users)
            envs.append((projected[inverse] * user_content.unsqueeze(1)).sum(-1).argmax(1))
        return torch.cat(envs)


def train_environments(
    models: EnvironmentModels,
    interactions: TrainingInteractions,
    envs: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    progress=None,
) -> None:
    """Optimise every Gamma^(e) on its environment's interactions (eq. 6), in one pass per epoch."""
    optimizer = fused_copy(torch.optim.Adam(models.parameters(), lr=learning_rate))
    for _ in progress(range(epochs)) if progress else range(epochs):
        for index in interactions.batches(batch_size):
            users, positives, negatives, items = models.frozen.training_batch(interactions, index)
            optimizer.zero_grad()
            models.loss(users, positives, negatives, items, envs[index]).backward()
            optimizer.step()


def moved_share(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Share of interactions whose environment changed (Fig. 5)."""
    return (old != new).float().mean()


def environment_sizes(envs: torch.Tensor, num_envs: int) -> torch.Tensor:
    return torch.bincount(envs, minlength=num_envs)
