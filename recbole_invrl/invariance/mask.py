"""M4 — mask generation (paper §2.3.3).

A gate mu = clip(m + eps, 0, 1), eps ~ N(0, sigma^2) (eq. 8), multiplies c_i; the mask
model Gamma^mask(u, i, mu * c_i) (eq. 9) keeps the pretrained, frozen id embeddings and a
projection W, trained together with m on eq. 10:

  L_mask = mean_e L^e + alpha * sum_{c,d} ((sum_e (g_e - g_bar)^2) * mu)^2_{cd} + lambda R(m)

Each step holds one batch of B (``train_batch_size``) interactions per environment
(``environment_batches``, cycling the smaller environments), and

- L^e is the backbone's loss on environment e's batch, a sum over its B rows, the scale
  of pretraining (eq. 11 averages; here L^e = B x that average);
- g_e = dL^e / dW, taken with the graph kept (``create_graph``) so that the penalty is
  differentiated too; g_bar is their mean over the environments in the step;
- the squared deviations are summed over the environments, so the middle term is
  E^2 ||Var_e(grad_W L^e) * mu||^2 of eq. 10 with L^e the batch sum. This is how the
  authors' release builds it, so the paper's alpha grid {0.1, 0.5, 1} applies. Written
  with per-environment mean losses instead, the same penalty needs alpha x E^2 B^3
  (the release multiplies by m where eq. 10 and this module use the gate mu; they
  differ by the noise eps, sigma = 0.01).

R(m) (``mask_reg``): ``l2`` = ||m||^2 as eq. 10 writes it (pulls m to 0), ``l2_half`` =
||m - 0.5||^2 as the release computes it (its parameter is m - 0.5: pulls m back to its
start), or ``l0`` = sum_d Phi(m_d / sigma), the stochastic-gate relaxation of HRM's L0
(Table 3). m is clipped to [0, 1] after every step (eq. 12). ``mask_type: binary``
thresholds the gate at 0.5 with a straight-through gradient.

W starts (``mask_model_start``) from the pretrained backbone's projection, as §2.3.3
says ("initialize ... with the parameters from a pre-trained raw model"), or from a
normal draw with std 0.01, as the release re-initialises it.

The per-environment gradients come in closed form from one backward pass: with
s = <p_u^(t), t_i> + <p_u^(c), W (mu * c_i)>, g_e = sum over e's rows of
sum_items (dl/ds) p_u^(c) (mu * c_i)^T = (sum_b p_b q_b^T) diag mu with
q_b = sum_m dl/ds_bm c_i, so all E gradients are one weighted bag sum and one batched
(E, C, B) x (E, B, D) matmul. Content is projected once per item of the batch
(``item_rows``), with the gate on W's columns rather than on c:
W (mu * c) = (W diag mu) c.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recbole_invrl.invariance.common import (
    EnvironmentBatch,
    FrozenBackbone,
    TrainingInteractions,
    environment_batches,
)
from recbole_invrl.model.common import final_mask, gathered_dot
from recbole_invrl.model.content import layout_slices
from recbole_invrl.optim import fused_copy

MASK_TYPES = ("float", "binary")
MASK_REGS = ("l2", "l2_half", "l0")
MASK_MODEL_STARTS = ("pretrained", "random")
RANDOM_INIT_STD = 0.01  # the release's re-initialisation of W


@dataclass
class MaskLoss:
    """Eq. 10 on one step: the total and its terms (alpha and lambda not applied)."""

    total: torch.Tensor
    risk: torch.Tensor
    penalty: torch.Tensor
    regulariser: torch.Tensor


class MaskGate(nn.Module):
    """The invariant mask m: its gate (eq. 8), regulariser, clipping (eq. 12) and final
    form. A mask learner adds the model Gamma^mask and the loss of eq. 10."""

    def __init__(self, mask: torch.Tensor, num_envs: int, sigma: float, mask_type: str = "float",
                 mask_reg: str = "l2", model_start: str = "pretrained"):
        super().__init__()
        for key, value, choices in (("mask_type", mask_type, MASK_TYPES), ("mask_reg", mask_reg, MASK_REGS),
                                    ("mask_model_start", model_start, MASK_MODEL_STARTS)):
            if value not in choices:
                raise ValueError(f"{key}: expected one of {choices}, got {value!r}")
        self.num_envs, self.sigma = num_envs, sigma
        self.mask_type, self.mask_reg = mask_type, mask_reg
        self.mask = nn.Parameter(mask.detach().clone())

    def gate(self) -> torch.Tensor:
        """mu = clip(m + eps, 0, 1) (eq. 8); thresholded at 0.5 for a binary mask."""
        mu = (self.mask + self.sigma * torch.randn_like(self.mask)).clamp(0.0, 1.0)
        if self.mask_type == "binary":
            mu = mu + ((mu > 0.5).float() - mu).detach()
        return mu

    def regulariser(self) -> torch.Tensor:
        """R(m) of eq. 10 (see the module docstring for the three forms)."""
        if self.mask_reg == "l2":
            return self.mask.square().sum()
        if self.mask_reg == "l2_half":
            return (self.mask - 0.5).square().sum()
        return torch.special.ndtr(self.mask / self.sigma).sum()  # E ||mu||_0

    @torch.no_grad()
    def clip_(self) -> None:
        self.mask.clamp_(0.0, 1.0)  # eq. 12

    def final_mask(self) -> torch.Tensor:
        """m as the final model uses it: float, or thresholded for a binary mask."""
        return final_mask(self.mask.detach().clone(), self.mask_type)

    def model_parameters(self) -> list[nn.Parameter]:
        """The parameters of Gamma^mask (trained with ``learning_rate``; m with ``mask_lr``)."""
        raise NotImplementedError


class MaskLearner(MaskGate):
    """The invariant mask m and the cross-environment model Gamma^mask in the form of eq. 14."""

    def __init__(
        self,
        frozen: FrozenBackbone,
        mask: torch.Tensor,
        num_envs: int,
        sigma: float,
        mask_type: str = "float",
        mask_reg: str = "l2",
        model_start: str = "pretrained",
    ):
        super().__init__(mask, num_envs, sigma, mask_type, mask_reg, model_start)
        self.frozen = frozen
        pretrained = frozen.projection
        weight = pretrained.clone() if model_start == "pretrained" else torch.randn_like(pretrained) * RANDOM_INIT_STD
        self.weight = nn.Parameter(weight)  # W of Gamma^mask

    def model_parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def loss(self, users, positives, negatives, items, batch: EnvironmentBatch, alpha: float, lam: float) -> MaskLoss:
        """Eq. 10 on one step of per-environment batches."""
        mu = self.gate()
        content, inverse = self.frozen.content_table(items)  # c_i of the items (U, D)
        _, user_content = self.frozen.user_parts(users)
        item_content = F.linear(content, self.weight * mu)  # W (mu * c_i) = (W diag mu) c_i
        scores = self.frozen.id_scores(users, items) + gathered_dot(item_content, user_content, inverse)
        losses = self.frozen.model.interaction_losses(scores, users, positives, negatives)

        active = batch.active
        env_losses = torch.zeros(self.num_envs, device=losses.device).index_add(0, batch.envs, losses)  # L^e (eq. 11)
        risk = (env_losses * active).sum() / active.sum()

        (dl_ds,) = torch.autograd.grad(losses.sum(), scores, create_graph=True)
        per_row = F.embedding_bag(inverse, content, mode="sum", per_sample_weights=dl_ds)  # q_b (n, D)
        env_grads = torch.bmm(batch.padded(user_content).transpose(1, 2), batch.padded(per_row)) * mu  # g_e (E, C, D)
        penalty = (squared_deviations(env_grads, active) * mu).square().sum()
        regulariser = self.regulariser()
        l2 = 0.5 * self.frozen.parts.content_reg * self.weight.square().sum()
        total = risk + alpha * penalty + lam * regulariser + l2
        return MaskLoss(total, risk, penalty, regulariser)


def squared_deviations(env_grads: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """sum_e (g_e - g_bar)^2 over the ``active`` environments (g_bar: their mean)."""
    weights = active.view(-1, *([1] * (env_grads.dim() - 1)))
    mean = (env_grads * weights).sum(0) / active.sum().clamp(min=1.0)
    return ((env_grads - mean).square() * weights).sum(0)


EPOCH_FIELDS = ("risk", "alpha_penalty", "lambda_regulariser",
                "grad_norm_risk", "grad_norm_penalty", "grad_norm_regulariser")
GRAD_NORM_EVERY = 8  # learn_mask splits m's gradient into its three terms on every 8th step


def learn_mask(
    learner: MaskGate,
    interactions: TrainingInteractions,
    envs: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mask_lr: float,
    alpha: float,
    lam: float,
    progress=None,
    grad_norm_every: int = GRAD_NORM_EVERY,
) -> list[dict[str, float]]:
    """Optimise W and m (eq. 10-12). Returns, per epoch, the means over its steps of the
    risk, alpha x penalty and lambda x R(m), and the means over every ``grad_norm_every``-th
    step (the first included) of the norm of the gradient each of the three puts on m
    (``grad_norm_*``), with the penalty's share of those norms. Splitting m's gradient
    takes one more backward pass through the risk, so it is measured on a sample of the
    steps; the update itself uses every step's whole gradient."""
    optimizer = fused_copy(torch.optim.Adam([
        {"params": learner.model_parameters(), "lr": learning_rate},
        {"params": [learner.mask], "lr": mask_lr},
    ]))
    history = []
    for _ in progress(range(epochs)) if progress else range(epochs):
        losses = torch.zeros(3, device=envs.device)
        norms = torch.zeros(3, device=envs.device)
        batches = environment_batches(envs, learner.num_envs, batch_size, cycle=True)
        for step, batch in enumerate(batches):
            users, positives, negatives, items = learner.frozen.training_batch(interactions, batch.index)
            optimizer.zero_grad()
            with without_anomaly_checks():
                parts = learner.loss(users, positives, negatives, items, batch, alpha, lam)
                measured = step % grad_norm_every == 0
                if measured:
                    risk_grad, reg_grad = (
                        torch.autograd.grad(term, learner.mask, retain_graph=True)[0]
                        for term in (parts.risk, lam * parts.regulariser)
                    )
                parts.total.backward()
            if measured:
                penalty_grad = learner.mask.grad - risk_grad - reg_grad  # the rest of m's gradient
                norms += torch.stack([risk_grad.norm(), penalty_grad.norm(), reg_grad.norm()])
            optimizer.step()
            learner.clip_()
            losses += torch.stack([parts.risk.detach(), alpha * parts.penalty.detach(),
                                   lam * parts.regulariser.detach()])
        n_measured = -(-len(batches) // grad_norm_every)
        means = torch.cat([losses / max(len(batches), 1), norms / max(n_measured, 1)]).tolist()  # one host transfer
        history.append(epoch_summary(dict(zip(EPOCH_FIELDS, means))))
    return history


def mask_step_size(mask_lr: float | str, travel: float, envs: torch.Tensor, num_envs: int, batch_size: int,
                   epochs: int) -> float:
    """The step size of m: ``mask_lr``, or for ``auto`` the one that lets Adam move m by up to
    ``travel`` over the iteration's ``epochs`` x (steps per epoch) steps (an Adam step moves a
    parameter by at most about its step size), so that a shortened schedule, or a smaller
    data set, still gives m room to move. One host transfer (the largest environment)."""
    if mask_lr != "auto":
        return float(mask_lr)
    steps_per_epoch = -(-int(torch.bincount(envs, minlength=num_envs).max()) // batch_size)
    return travel / max(1, epochs * steps_per_epoch)


def without_anomaly_checks() -> torch.autograd.set_detect_anomaly:
    """Autograd's anomaly mode off for M4's double-backward pass: its NaN check cannot read the
    sparse CSR gradients of the graph backbones' message passing, and RecBole switches the
    mode on for the whole process when its SINE model is imported (``sine.py``)."""
    return torch.autograd.set_detect_anomaly(False)


def epoch_summary(values: dict[str, float]) -> dict[str, float]:
    """Adds ``penalty_share``: the penalty's gradient norm on m over the sum of the three."""
    norms = values["grad_norm_risk"] + values["grad_norm_penalty"] + values["grad_norm_regulariser"]
    return {**values, "penalty_share": values["grad_norm_penalty"] / norms if norms > 0 else 0.0}


def mask_summary(mask: torch.Tensor, layout: list[tuple[str, int]]) -> dict[str, dict[str, float]]:
    """Mean/min/max of the mask over each modality's dimensions."""
    summary = {}
    for field, columns in layout_slices(layout):
        part = mask[columns]
        summary[field] = {"mean": part.mean().item(), "min": part.min().item(), "max": part.max().item()}
    return summary
