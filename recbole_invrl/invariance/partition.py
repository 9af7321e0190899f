"""M3 — environment partition (paper §2.3.2).

Environment learning (eq. 6): one model Gamma^(e) per environment, trained on that
environment's interactions alone. Two forms (``partition_models``):

- ``shared``: each Gamma^(e) keeps the pretrained backbone's id embeddings, frozen, and
  learns its own content projection W_e (started from the pretrained W) on the variant
  representation Psi_i = (1 - m) * c_i (eq. 5), as the paper writes it.
- ``fresh``: the authors' release. Each Gamma^(e) is a new backbone with its own random
  user and item embeddings and projection, trained from scratch on the full content c_i
  (ids with Adagrad, W with Adam).

Both put an L1 penalty on the columns of W_e that the mask marks invariant (weighted by
m), so that the environments lean on the variant part. The E models are trained together:
every step holds one batch of each environment (``environment_batches``), and one
backward pass trains all of them, each only on its own rows.

Interaction separation (eq. 7): every training interaction moves to the environment
whose model recognises it best (``partition_assign``): the highest score
Gamma^(e)(u, i), as eq. 7 writes it (``score``), or the highest log-probability that
environment e's model picks i among the items for u (``likelihood``):
Gamma^(e)(u, i) - log sum_j exp Gamma^(e)(u, j), the sum estimated over ``partition_samples``
items drawn uniformly per user (the same for every environment). The raw score favours
whichever model scores everything higher, and such a model keeps winning interactions
until one environment holds most of them; the normalised form compares how well each
model explains the choice. An environment left without interactions keeps a model
that no step changes; it can win interactions back at the next separation, and the mask
stage skips it while it is empty.

The start (``partition_start``). The paper and the release start from uniformly random
environments (``random``). Every Gamma^(e) then sees the same mixture, the models differ
by noise only, and the separation settles on whatever split that noise favours. ``score``
breaks the symmetry along the direction the environments are meant to capture: the
interactions are ranked by the pretrained backbone's score and cut into E equal blocks.
A model fitted to the pooled data leans on the spurious correlation, so it scores the
interactions that follow the correlation above those that do not (the reference-model
principle of environment inference, Creager et al., ICML 2021).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_invrl.invariance.common import (
    EnvironmentBatch,
    FrozenBackbone,
    TrainingInteractions,
    environment_batches,
)
from recbole_invrl.model.common import distinct_items, gathered_dot
from recbole_invrl.optim import fused_copy

PARTITION_MODELS = ("shared", "fresh")
PARTITION_STARTS = ("score", "random")
PARTITION_ASSIGNS = ("likelihood", "score")
ASSIGN_CHUNK = 16384
FRESH_INIT_STD = 0.01  # the release's normal init of every fresh environment model


def initial_environments(start: str, frozen: FrozenBackbone, interactions: TrainingInteractions,
                         num_envs: int) -> torch.Tensor:
    """The environments M3 starts from: uniformly random, or E equal blocks of the
    interactions ranked by the pretrained score (see the module docstring)."""
    n = len(interactions)
    if start == "random":
        return torch.randint(num_envs, (n,), device=interactions.users.device)
    if start != "score":
        raise ValueError(f"partition_start: expected one of {PARTITION_STARTS}, got {start!r}")
    rank = torch.empty(n, dtype=torch.long, device=interactions.users.device)
    rank[torch.argsort(frozen.scores(interactions))] = torch.arange(n, device=rank.device)
    return torch.div(rank * num_envs, n, rounding_mode="floor")


class EnvironmentModels(nn.Module):
    """|E| environment models Gamma^(e)(u, i, Psi_i) sharing the frozen id embeddings."""

    def __init__(self, frozen: FrozenBackbone, num_envs: int, mask: torch.Tensor, l1_weight: float):
        super().__init__()
        self.frozen = frozen
        pretrained = frozen.projection
        # One parameter per environment: an environment without rows in a step gets no
        # gradient, and Adam leaves it alone (as if it trained separately).
        self.weights = nn.ParameterList([nn.Parameter(pretrained.clone()) for _ in range(num_envs)])
        self.register_buffer("content_gate", 1.0 - mask)  # Psi = (1 - m) * c (eq. 5)
        self.register_buffer("invariant_gate", mask.clone())
        self.l1_weight = l1_weight

    @property
    def num_envs(self) -> int:
        return len(self.weights)

    def stacked_weight(self) -> torch.Tensor:
        return torch.stack(list(self.weights))  # (E, C, D)

    def optimizer(self, learning_rate: float) -> list[torch.optim.Optimizer]:
        return [fused_copy(torch.optim.Adam(self.weights.parameters(), lr=learning_rate))]

    # ------------------------------------------------------------------ scores
    def user_vectors(self, users: torch.Tensor, envs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_u^(t), p_u^(c)) of each row under its environment's model (shared: the pretrained ones)."""
        return self.frozen.user_parts(users)

    def id_scores(self, users: torch.Tensor, items: torch.Tensor, envs: torch.Tensor) -> torch.Tensor:
        return self.frozen.id_scores(users, items)

    def scores(self, users: torch.Tensor, items: torch.Tensor, batch: EnvironmentBatch,
               weight: torch.Tensor | None = None) -> torch.Tensor:
        """Gamma^(e_b)(u_b, i) for items (n, M), each row under its own environment
        (``weight``: the stacked W_e, if already at hand).

        The projection is applied on the user side, <p_b, W_e (g * c_i)> =
        <(W_e^T p_b) * g, c_i> with g the content gate, as one (E, B, C) x (E, C, D)
        batched matmul over the step's padded environment batches."""
        envs = batch.envs
        _, user_content = self.user_vectors(users, envs)
        weight = self.stacked_weight() if weight is None else weight
        user_side = batch.unpadded(torch.bmm(batch.padded(user_content), weight))
        content, inverse = self.frozen.content_table(items)  # c_i, no gradient (U, D)
        return self.id_scores(users, items, envs) + gathered_dot(content, user_side * self.content_gate, inverse)

    # ------------------------------------------------------------------ loss
    def regularisation(self, active: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """L1 on the invariant columns of every W_e (``weight``, stacked), plus the
        backbone's L2 on projections, for the environments ``active`` in the step."""
        l1 = (weight.abs() * self.invariant_gate).sum((1, 2))
        l2 = 0.5 * self.frozen.parts.content_reg * weight.square().sum((1, 2))
        return ((self.l1_weight * l1 + l2) * active).sum()

    def loss(self, users, positives, negatives, items, batch: EnvironmentBatch) -> torch.Tensor:
        """Eq. 6 for all environments at once: each interaction trains only its own model."""
        weight = self.stacked_weight()
        scores = self.scores(users, items, batch, weight)
        losses = self.frozen.model.interaction_losses(scores, users, positives, negatives)
        return losses.sum() + self.regularisation(batch.active, weight)

    def drop_inactive_gradients(self, batch: EnvironmentBatch) -> None:
        """Environments without rows in the step keep their parameters (Adam skips None)."""
        for weight, active in zip(self.weights, batch.active_envs):
            if not active:
                weight.grad = None

    # ------------------------------------------------------------------ eq. 7
    def all_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(n, E): Gamma^(e)(u, i) of every environment for interactions (users, items),
        less any term that all environments share (the shared id term)."""
        projected, inverse = self.projected(items)  # (U, E, C)
        _, user_content = self.frozen.user_parts(users)
        return (projected[inverse] * user_content.unsqueeze(1)).sum(-1)

    def projected(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_e (g * c_i) for the distinct ``items`` under every environment, as one
        (U, E, C) table from a single matmul, and the inverse index of ``items`` into it."""
        unique, inverse = distinct_items(items, self.frozen.parts.n_items)
        weight = self.stacked_weight()
        n_envs, size, dim = weight.shape
        gated = weight.reshape(n_envs * size, dim) * self.content_gate
        return (self.frozen.content_rows(unique) @ gated.T).view(len(unique), n_envs, size), inverse

    @torch.no_grad()
    def assign(self, interactions: TrainingInteractions, rule: str = "score", samples: int = 50) -> torch.Tensor:
        """Eq. 7: e(u, i) = argmax_e of Gamma^(e)(u, i) (``score``) or of its log-softmax
        over the items, estimated from ``samples`` uniform items per user (``likelihood``)."""
        return self.assignment_scores(interactions, rule, samples).argmax(1)

    @torch.no_grad()
    def assignment_scores(self, interactions: TrainingInteractions, rule: str = "likelihood",
                          samples: int = 50) -> torch.Tensor:
        """(n, E): what eq. 7 takes the argmax of for every interaction and environment,
        Gamma^(e)(u, i) (``score``) or log p_e(i | u) up to a constant shared by the
        environments (``likelihood``)."""
        if rule not in PARTITION_ASSIGNS:
            raise ValueError(f"partition_assign: expected one of {PARTITION_ASSIGNS}, got {rule!r}")
        offset = self.log_normalisers(samples) if rule == "likelihood" else None
        chunks = zip(interactions.users.split(ASSIGN_CHUNK), interactions.items.split(ASSIGN_CHUNK))
        return torch.cat([self.all_scores(users, items) - (0 if offset is None else offset[users])
                          for users, items in chunks])

    def log_normalisers(self, samples: int) -> torch.Tensor:
        """(n_users, E): log sum_j exp Gamma^(e)(u, j) over ``samples`` uniform items j per
        user (up to a constant shared by all environments)."""
        parts = self.frozen.parts
        device = parts.user_ids.device
        users = torch.arange(parts.n_users, device=device).repeat_interleave(samples)
        items = torch.randint(1, parts.n_items, (len(users),), device=device)
        scores = torch.cat([
            self.all_scores(u, i) for u, i in zip(users.split(ASSIGN_CHUNK), items.split(ASSIGN_CHUNK))
        ])
        return torch.logsumexp(scores.view(parts.n_users, samples, -1), dim=1)


class FreshEnvironmentModels(EnvironmentModels):
    """The release's environment models: new backbones (own user and item embeddings and
    projection, normal init with std 0.01) on the full content, trained from scratch."""

    def __init__(self, frozen: FrozenBackbone, num_envs: int, mask: torch.Tensor, l1_weight: float):
        super().__init__(frozen, num_envs, mask, l1_weight)
        parts = frozen.parts
        device = mask.device
        self.content_gate.fill_(1.0)  # the release's environment models see all of c
        with torch.no_grad():
            for weight in self.weights:
                weight.normal_(0.0, FRESH_INIT_STD)
        width = parts.id_size + parts.content_size
        self.user = nn.Parameter(torch.randn(num_envs, parts.n_users, width, device=device) * FRESH_INIT_STD)
        self.item = nn.Parameter(torch.randn(num_envs, parts.n_items, parts.id_size, device=device) * FRESH_INIT_STD)

    def optimizer(self, learning_rate: float) -> list[torch.optim.Optimizer]:
        """Adagrad for the id embeddings (a step without rows leaves an environment's
        embeddings as they are), Adam for the projections, as in the release."""
        return [torch.optim.Adagrad([self.user, self.item], lr=learning_rate), *super().optimizer(learning_rate)]

    def user_vectors(self, users, envs):
        vectors = self.user[envs, users]
        size = self.frozen.parts.id_size
        return vectors[:, :size], vectors[:, size:]

    def id_scores(self, users, items, envs):
        user_ids, _ = self.user_vectors(users, envs)
        n_envs, n_items, size = self.item.shape
        return gathered_dot(self.item.view(n_envs * n_items, size), user_ids, envs.unsqueeze(1) * n_items + items)

    def regularisation(self, active, weight):
        """The backbone's L2 on each model's own id embeddings, on top of the projections'."""
        ids = self.user.square().sum((1, 2)) + self.item.square().sum((1, 2))
        return super().regularisation(active, weight) + 0.5 * self.frozen.parts.id_reg * (ids * active).sum()

    def all_scores(self, users, items):
        projected, inverse = self.projected(items)  # (U, E, C)
        vectors = self.user[:, users]  # (E, n, K + C)
        size = self.frozen.parts.id_size
        ids = (vectors[..., :size] * self.item[:, items]).sum(-1)  # (E, n)
        content = (projected[inverse] * vectors[..., size:].transpose(0, 1)).sum(-1)  # (n, E)
        return ids.T + content


def environment_models(kind: str, frozen: FrozenBackbone, num_envs: int, mask: torch.Tensor,
                       l1_weight: float) -> EnvironmentModels:
    """The environment models of ``partition_models`` ``kind`` (shared | fresh)."""
    if kind not in PARTITION_MODELS:
        raise ValueError(f"partition_models: expected one of {PARTITION_MODELS}, got {kind!r}")
    cls = EnvironmentModels if kind == "shared" else FreshEnvironmentModels
    return cls(frozen, num_envs, mask, l1_weight).to(mask.device)


def train_environments(
    models: EnvironmentModels,
    interactions: TrainingInteractions,
    envs: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    progress=None,
) -> None:
    """Optimise every Gamma^(e) on its environment's interactions (eq. 6): per epoch, each
    environment's rows once, in batches of ``batch_size`` taken together."""
    optimizers = models.optimizer(learning_rate)
    for _ in progress(range(epochs)) if progress else range(epochs):
        for batch in environment_batches(envs, models.num_envs, batch_size, cycle=False):
            users, positives, negatives, items = models.frozen.training_batch(interactions, batch.index)
            for optimizer in optimizers:
                optimizer.zero_grad()
            models.loss(users, positives, negatives, items, batch).backward()
            models.drop_inactive_gradients(batch)
            for optimizer in optimizers:
                optimizer.step()


def moved_share(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Share of interactions whose environment changed (Fig. 5)."""
    return (old != new).float().mean()


def environment_sizes(envs: torch.Tensor, num_envs: int) -> torch.Tensor:
    return torch.bincount(envs, minlength=num_envs)
