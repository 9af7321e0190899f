"""M3 and M4 through a backbone's own forward pass: InvRL on models without the eq. 14 form.

A graph model such as MMGCN sees the content only through non-linear layers, so once its
ids are frozen there is no fixed p_u^(c) and W to learn on (``backbone.InvarianceParts``).
Here the environment and mask models are copies of the pretrained backbone itself, its
id parameters (``ForwardParts.frozen``) and content encoder shared and frozen, everything
else trainable, and the content gate g enters through the model's content mask
(``ContentEncoder.gated``), so each score is the backbone's own forward on g * c_i:

- M3 (eq. 6): E copies Gamma^(e), each seeing Psi = (1 - m) * c (``shared``) or, re-drawn
  by the backbone's ``reset_parameters`` with trainable ids, the full c (``fresh``, the
  release's form). Each step scores the step's rows under every environment with rows in
  it (one whole-graph propagation per environment) and keeps each row's score under its
  own environment, so one backward pass trains every copy on its own rows only. The L1
  penalty of the eq. 14 path acts on the columns of the content weights
  (``ForwardParts.weights``: the parameters that multiply c_i directly) that m marks
  invariant, weighted by m. Eq. 7 scores every training interaction under every copy.
- M4 (eq. 9-10): one copy Gamma^mask on mu * c. The gradient in eq. 10 is taken with
  respect to the content weights: g_e = dL^e / dW for each W of ``ForwardParts.weights``,
  L^e the backbone's loss summed over environment e's batch (as in ``mask.py``), one
  backward pass per environment with the graph kept, and the penalty
  sum_W sum ((sum_e (g_e - g_bar)^2) * mu_cols)^2 over each W's content columns. On a
  model that has the eq. 14 form (UltraGCN-MM) this is the quantity ``MaskLearner``
  computes in closed form; ``tests/invariance/test_forward_path.py`` checks the two agree.

The cost per step is E propagations (M3) or one propagation and E double-backward passes
(M4), against one batched product on the eq. 14 path.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from recbole_invrl.invariance.common import EnvironmentBatch, TrainedBackbone, TrainingInteractions
from recbole_invrl.invariance.mask import (MaskGate, MaskLoss, RANDOM_INIT_STD, squared_deviations,
                                           without_anomaly_checks)
from recbole_invrl.invariance.partition import ASSIGN_CHUNK, PARTITION_ASSIGNS
from recbole_invrl.optim import fused_copy


class ForwardBackbone(TrainedBackbone):
    """A pretrained backbone as the forward path sees it. Its parameters stop requiring
    grad (it is not trained again); ``trainable_copy`` gives the models M3 and M4 train."""

    def __init__(self, backbone):
        super().__init__(backbone)
        if not hasattr(backbone, "forward_parts"):
            raise ValueError(f"{type(backbone).__name__} has no forward_parts: it cannot be InvRL's backbone "
                             "on the forward path")
        backbone.requires_grad_(False)

    def trainable_copy(self, fresh: bool = False):
        """A copy of the backbone sharing its data buffers (features, graphs), its content
        encoder and, unless ``fresh``, its id parameters; every other parameter is its own
        and trainable. ``fresh``: all but the content encoder re-drawn and trainable."""
        model = self.model
        shared = list(model.content.parameters())
        if not fresh:
            shared += model.forward_parts().frozen
        memo = {id(p): p for p in shared}
        for module in model.modules():
            for name in module._non_persistent_buffers_set:
                if module._buffers.get(name) is not None:
                    memo[id(module._buffers[name])] = module._buffers[name]
        clone = copy.deepcopy(model, memo)
        if fresh:
            if not hasattr(clone, "reset_parameters"):
                raise ValueError(f"partition_models: fresh needs {type(model).__name__}.reset_parameters "
                                 "on the forward path; use shared")
            clone.reset_parameters()
        kept = {id(p) for p in shared}
        for parameter in clone.parameters():
            parameter.requires_grad_(id(parameter) not in kept)
        clone.train()
        return clone

    @torch.no_grad()
    def scores(self, interactions: TrainingInteractions, chunk: int = ASSIGN_CHUNK) -> torch.Tensor:
        """The pretrained backbone's score of every training interaction (one propagation)."""
        tables = self.model.scoring_tables()
        return torch.cat([
            self.model.table_scores(tables, users, items)
            for users, items in zip(interactions.users.split(chunk), interactions.items.split(chunk))
        ])


def trainable(model) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def content_columns(gate: torch.Tensor, weight: torch.Tensor, start: int) -> torch.Tensor:
    """The part of the D-vector ``gate`` over ``weight``'s content columns."""
    return gate[start : start + weight.shape[-1]]


class ForwardEnvironmentModels(nn.Module):
    """|E| copies of the backbone, each trained on its environment (eq. 6) and scoring
    interactions for eq. 7 (see the module docstring)."""

    def __init__(self, frozen: ForwardBackbone, num_envs: int, mask: torch.Tensor, l1_weight: float,
                 fresh: bool = False):
        super().__init__()
        self.frozen = frozen
        self.models = nn.ModuleList(frozen.trainable_copy(fresh) for _ in range(num_envs))
        gate = torch.ones_like(mask) if fresh else 1.0 - mask  # fresh: all of c; shared: Psi (eq. 5)
        for model in self.models:
            model.set_content_mask(gate)
        self.register_buffer("invariant_gate", mask.detach().clone())
        self.l1_weight = l1_weight

    @property
    def num_envs(self) -> int:
        return len(self.models)

    def optimizer(self, learning_rate: float) -> list[torch.optim.Optimizer]:
        return [fused_copy(torch.optim.Adam([p for m in self.models for p in trainable(m)], lr=learning_rate))]

    def loss(self, users, positives, negatives, items, batch: EnvironmentBatch) -> torch.Tensor:
        """Eq. 6 for all environments at once: each row is scored by its own environment's
        model, so each interaction trains only that model."""
        scores = [m.table_scores(m.scoring_tables(), users, items) if on else None
                  for m, on in zip(self.models, batch.active_envs)]
        filler = torch.zeros_like(next(s for s in scores if s is not None))
        stacked = torch.stack([filler if s is None else s for s in scores])  # (E, n, M)
        own = stacked[batch.envs, torch.arange(len(users), device=users.device)]
        losses = self.frozen.model.interaction_losses(own, users, positives, negatives)
        return losses.sum() + self.regularisation(batch.active_envs)

    def regularisation(self, active_envs: list[bool]) -> torch.Tensor:
        """L1 on the invariant columns of every active model's content weights (weighted by
        m), plus the backbone's L2 on them."""
        total = torch.zeros((), device=self.invariant_gate.device)
        for model, on in zip(self.models, active_envs):
            if not on:
                continue
            parts = model.forward_parts()
            for weight, start in parts.weights:
                l1 = (weight.abs() * content_columns(self.invariant_gate, weight, start)).sum()
                total = total + self.l1_weight * l1 + 0.5 * parts.content_reg * weight.square().sum()
        return total

    def drop_inactive_gradients(self, batch: EnvironmentBatch) -> None:
        """Environments without rows in the step keep their parameters (Adam skips None)."""
        for model, on in zip(self.models, batch.active_envs):
            if not on:
                for parameter in trainable(model):
                    parameter.grad = None

    @torch.no_grad()
    def assign(self, interactions: TrainingInteractions, rule: str = "score", samples: int = 50) -> torch.Tensor:
        """Eq. 7: the environment whose model gives the highest score (``score``) or
        log-softmax over ``samples`` uniform items per user (``likelihood``)."""
        return self.assignment_scores(interactions, rule, samples).argmax(1)

    @torch.no_grad()
    def assignment_scores(self, interactions: TrainingInteractions, rule: str = "likelihood",
                          samples: int = 50) -> torch.Tensor:
        """(n, E): what eq. 7 takes the argmax of for every interaction and environment
        (as ``EnvironmentModels.assignment_scores``), each model scoring in eval mode."""
        if rule not in PARTITION_ASSIGNS:
            raise ValueError(f"partition_assign: expected one of {PARTITION_ASSIGNS}, got {rule!r}")
        for model in self.models:
            model.eval()
        tables = [model.scoring_tables() for model in self.models]
        offset = self.log_normalisers(tables, samples) if rule == "likelihood" else None
        chunks = zip(interactions.users.split(ASSIGN_CHUNK), interactions.items.split(ASSIGN_CHUNK))
        scores = torch.cat([self.all_scores(tables, users, items) - (0 if offset is None else offset[users])
                            for users, items in chunks])
        for model in self.models:
            model.train()
        return scores

    def all_scores(self, tables, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(n, E): every environment model's score of the interactions (users, items)."""
        return torch.stack([m.table_scores(t, users, items) for m, t in zip(self.models, tables)], dim=1)

    def log_normalisers(self, tables, samples: int) -> torch.Tensor:
        """(n_users, E): log sum_j exp Gamma^(e)(u, j) over ``samples`` uniform items j per user."""
        model = self.frozen.model
        device = self.invariant_gate.device
        users = torch.arange(model.n_users, device=device).repeat_interleave(samples)
        items = torch.randint(1, model.n_items, (len(users),), device=device)
        scores = torch.cat([self.all_scores(tables, u, i)
                            for u, i in zip(users.split(ASSIGN_CHUNK), items.split(ASSIGN_CHUNK))])
        return torch.logsumexp(scores.view(model.n_users, samples, -1), dim=1)


class ForwardMaskLearner(MaskGate):
    """The mask m and Gamma^mask, a trainable copy of the backbone on mu * c (eq. 9-10)."""

    def __init__(self, frozen: ForwardBackbone, mask: torch.Tensor, num_envs: int, sigma: float,
                 mask_type: str = "float", mask_reg: str = "l2", model_start: str = "pretrained"):
        super().__init__(mask, num_envs, sigma, mask_type, mask_reg, model_start)
        self.frozen = frozen
        self.model = frozen.trainable_copy()
        if model_start == "random":  # the release re-draws W of the mask model
            with torch.no_grad():
                for weight, _ in self.model.forward_parts().weights:
                    weight.normal_(0.0, RANDOM_INIT_STD)

    def model_parameters(self) -> list[nn.Parameter]:
        return trainable(self.model)

    def loss(self, users, positives, negatives, items, batch: EnvironmentBatch, alpha: float, lam: float) -> MaskLoss:
        """Eq. 10 on one step of per-environment batches, through the model's forward."""
        mu = self.gate()
        with self.model.content.gated(mu):
            scores = self.model.table_scores(self.model.scoring_tables(), users, items)
        losses = self.model.interaction_losses(scores, users, positives, negatives)
        active = batch.active
        env_losses = torch.zeros(self.num_envs, device=losses.device).index_add(0, batch.envs, losses)  # L^e
        risk = (env_losses * active).sum() / active.sum()

        parts = self.model.forward_parts()
        weights = [weight for weight, _ in parts.weights]
        with without_anomaly_checks():
            env_grads = [  # g_e = dL^e / dW for every content weight W
                torch.autograd.grad(env_losses[e], weights, create_graph=True) if on else None
                for e, on in enumerate(batch.active_envs)
            ]
        penalty = torch.zeros((), device=mu.device)
        for k, (weight, start) in enumerate(parts.weights):
            grads = torch.stack([g[k] if g is not None else torch.zeros_like(weight) for g in env_grads])
            penalty = penalty + (squared_deviations(grads, active) * content_columns(mu, weight, start)).square().sum()
        regulariser = self.regulariser()
        l2 = 0.5 * parts.content_reg * sum(weight.square().sum() for weight in weights)
        total = risk + alpha * penalty + lam * regulariser + l2
        return MaskLoss(total, risk, penalty, regulariser)
