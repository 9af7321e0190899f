"""M4 — mask generation (paper §2.3.3).

A gate mu = clip(m + eps, 0, 1), eps ~ N(0, sigma^2) (eq. 8), multiplies c_i; the mask
model Gamma^mask(u, i, mu * c_i) (eq. 9) keeps the pretrained, frozen id embeddings and a
re-initialised projection W, trained together with m on

  L_mask = E_e L^e + alpha ||Var_e(grad_W L^e) * mu||^2 + lambda R(m)        (eq. 10-11)

L^e is the mean loss of environment e's interactions in the batch, so every environment
weighs the same in E_e L^e whatever its size; the first two terms are multiplied by the
batch size to match the sum-over-batch scale of the backbone's loss (and so of lambda).

with R(m) = ||m||^2 (``mask_reg: l2``) or the expected number of open gates
sum_d Phi(m_d / sigma) (``l0``, the stochastic-gate relaxation used by HRM); m is clipped
to [0, 1] after every step (eq. 12). ``mask_type: binary`` thresholds the gate at 0.5 with
a straight-through gradient.

The per-environment gradients come in closed form from one backward pass: with
s = <p_u^(t), t_i> + <p_u^(c), W (mu * c_i)>, grad_W L^e = mean over e's interactions of
sum_items (dl/ds) p_u^(c) (mu * c_i)^T, so all E gradients are one weighted bag sum and
one matmul, and the penalty is differentiated through dl/ds (``create_graph``).
Content is projected once per item of the batch (``item_rows``). The gate is applied to W's
columns rather than to c: W (mu * c) = (W diag mu) c and sum p (mu * c)^T =
(sum p c^T) diag mu, so the (distinct items x D) content is the only batch tensor of
that size, and no gradient of that size is formed (equal up to float rounding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_invrl.invariance.common import FrozenBackbone, TrainingInteractions
from recbole_invrl.model.common import final_mask, gathered_dot
from recbole_invrl.optim import fused_copy

MASK_TYPES = ("float", "binary")
MASK_REGS = ("l2", "l0")


class MaskLearner(nn.Module):
    """The invariant mask m and the cross-environment model Gamma^mask."""

    def __init__(
        self,
        frozen: FrozenBackbone,
        mask: torch.Tensor,
        num_envs: int,
        sigma: float,
        mask_type: str = "float",
        mask_reg: str = "l2",
    ):
        super().__init__()
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type: expected one of {MASK_TYPES}, got {mask_type!r}")
        if mask_reg not in MASK_REGS:
            raise ValueError(f"mask_reg: expected one of {MASK_REGS}, got {mask_reg!r}")
        self.frozen = frozen
        self.num_envs, self.sigma = num_envs, sigma
        self.mask_type, self.mask_reg = mask_type, mask_reg
        self.mask = nn.Parameter(mask.detach().clone())
        content_size, dim = frozen.model.projection.weight.shape
        self.projection = nn.Linear(dim, content_size, bias=False)  # re-initialised W
        self.projection.to(mask.device)

    def gate(self) -> torch.Tensor:
        """mu = clip(m + eps, 0, 1) (eq. 8); thresholded at 0.5 for a binary mask."""
        mu = (self.mask + self.sigma * torch.randn_like(self.mask)).clamp(0.0, 1.0)
        if self.mask_type == "binary":
            mu = mu + ((mu > 0.5).float() - mu).detach()
        return mu

    def regulariser(self) -> torch.Tensor:
        if self.mask_reg == "l2":
            return self.mask.square().sum()
        return torch.special.ndtr(self.mask / self.sigma).sum()  # E ||mu||_0

    def loss(self, users, positives, negatives, items, envs, alpha: float, lam: float):
        """Eq. 10 on one batch; returns (total, risk, penalty)."""
        mu = self.gate()
        content, inverse = self.frozen.content_table(items)  # c_i of the items (U, D)
        gated_weight = self.projection.weight * mu  # W (mu * c_i) = (W diag mu) c_i
        _, user_content = self.frozen.user_parts(users)
        item_content = F.linear(content, gated_weight)  # (U, C)
        scores = self.frozen.id_scores(users, items) + gathered_dot(item_content, user_content, inverse)
        losses = self.frozen.model.interaction_losses(scores, users, positives, negatives)

        env_counts = torch.bincount(envs, minlength=self.num_envs).float()
        present = (env_counts > 0).float()
        row_weight = 1.0 / env_counts[envs]  # L^e is a mean inside each environment (eq. 11)
        env_losses = torch.zeros(self.num_envs, device=losses.device).index_add(0, envs, losses * row_weight)
        risk = (env_losses * present).sum() / present.sum()

        (dl_ds,) = torch.autograd.grad(losses.sum(), scores, create_graph=True)
        env_grads = self.environment_gradients(dl_ds * row_weight.unsqueeze(1), user_content, envs, inverse, content) * mu
        penalty = (gradient_variance(env_grads, present) * mu).square().sum()
        l2 = 0.5 * self.frozen.model.proj_reg_weight * self.projection.weight.square().sum()
        # Scaled by the batch size: the backbone's loss is a sum over the batch, which is
        # the scale its lambda and L2 factors are tuned for (each environment weighs equally).
        batch = float(len(users))
        total = batch * (risk + alpha * penalty) + lam * self.regulariser() + l2
        return total, risk.detach(), penalty.detach()

    def environment_gradients(self, dl_ds, user_content, envs, inverse, content) -> torch.Tensor:
        """sum_bm dl/ds_bm p_b c_i^T for every environment at once: (E, C, D); times mu
        (column-wise) it is grad_W L^e, as s_bm = <p_b, W (mu * c_i)>.

        Each row b belongs to one environment, so sum_bm dl/ds_bm p_b c_i^T =
        sum_b p_b q_b^T with q_b = sum_m dl/ds_bm c_i: q is one weighted ``embedding_bag``
        over the batch's content rows, and the (E, C, D) sums are one (E C x B) @ (B x D)
        matmul, with the rows of p spread over the environments by a one-hot."""
        per_row = F.embedding_bag(inverse, content, mode="sum", per_sample_weights=dl_ds)  # q_b (B, D)
        one_hot = F.one_hot(envs, self.num_envs).to(user_content.dtype)  # (B, E)
        spread = (one_hot.unsqueeze(2) * user_content.unsqueeze(1)).flatten(1)  # (B, E C)
        return (spread.T @ per_row).view(self.num_envs, user_content.shape[1], -1)

    @torch.no_grad()
    def clip_(self) -> None:
        self.mask.clamp_(0.0, 1.0)  # eq. 12

    def final_mask(self) -> torch.Tensor:
        """m as the final model uses it: float, or thresholded for a binary mask."""
        return final_mask(self.mask.detach().clone(), self.mask_type)


def gradient_variance(env_grads: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Variance across the environments present in the batch (population variance)."""
    weights = present.view(-1, *([1] * (env_grads.dim() - 1)))
    count = present.sum().clamp(min=1.0)
    mean = (env_grads * weights).sum(0) / count
    return ((env_grads - mean).square() * weights).sum(0) / count


def learn_mask(
    learner: MaskLearner,
    interactions: TrainingInteractions,
    envs: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mask_lr: float,
    alpha: float,
    lam: float,
    progress=None,
) -> list[tuple[float, float]]:
    """Optimise W and m (eq. 10-12); returns (mean risk, mean penalty) per epoch."""
    optimizer = fused_copy(torch.optim.Adam([
        {"params": learner.projection.parameters(), "lr": learning_rate},
        {"params": [learner.mask], "lr": mask_lr},
    ]))
    history = []
    for _ in progress(range(epochs)) if progress else range(epochs):
        totals = torch.zeros(2, device=envs.device)
        batches = 0
        for index in interactions.batches(batch_size):
            users, positives, negatives, items = learner.frozen.training_batch(interactions, index)
            optimizer.zero_grad()
            loss, risk, penalty = learner.loss(users, positives, negatives, items, envs[index], alpha, lam)
            loss.backward()
            optimizer.step()
            learner.clip_()
            totals += torch.stack([risk, penalty])
            batches += 1
        history.append(tuple((totals / max(batches, 1)).tolist()))  # one sync per epoch
    return history


def mask_summary(mask: torch.Tensor, layout: list[tuple[str, int]]) -> dict[str, dict[str, float]]:
    """Mean/min/max of the mask over each modality's dimensions."""
    summary, start = {}, 0
    for field, width in layout:
        part = mask[start : start + width]
        summary[field] = {"mean": part.mean().item(), "min": part.min().item(), "max": part.max().item()}
        start += width
    return summary

