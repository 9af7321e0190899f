"""Which path M3 and M4 take on a backbone (``invariance_path``): ``eq14``, learning on the
backbone's parts in the form of eq. 14 (``FrozenBackbone``, closed-form gradients, one
batched product per step), or ``forward``, differentiating the backbone's own forward pass
on the gated content (``forward_path``; any model with ``forward_parts``, e.g. MMGCN).
``auto`` takes eq14 where the backbone has ``invariance_parts``."""
from __future__ import annotations

import torch

from recbole_invrl.invariance.common import FrozenBackbone
from recbole_invrl.invariance.forward_path import ForwardBackbone, ForwardEnvironmentModels, ForwardMaskLearner
from recbole_invrl.invariance.mask import MaskGate, MaskLearner
from recbole_invrl.invariance.partition import PARTITION_MODELS, EnvironmentModels, environment_models

INVARIANCE_PATHS = ("auto", "eq14", "forward")
BackboneView = FrozenBackbone | ForwardBackbone


def backbone_view(backbone, path: str = "auto") -> BackboneView:
    """The pretrained backbone as M3 and M4 of ``path`` see it."""
    if path not in INVARIANCE_PATHS:
        raise ValueError(f"invariance_path: expected one of {INVARIANCE_PATHS}, got {path!r}")
    if path == "auto":
        path = "eq14" if hasattr(backbone, "invariance_parts") else "forward"
    if path == "eq14" and not hasattr(backbone, "invariance_parts"):
        raise ValueError(f"invariance_path: eq14 needs invariance_parts, which {type(backbone).__name__} "
                         "does not have; use forward or auto")
    return FrozenBackbone(backbone) if path == "eq14" else ForwardBackbone(backbone)


def environment_models_for(view: BackboneView, kind: str, num_envs: int, mask: torch.Tensor,
                           l1_weight: float) -> EnvironmentModels | ForwardEnvironmentModels:
    """The environment models of ``partition_models`` ``kind`` on ``view``'s path."""
    if isinstance(view, FrozenBackbone):
        return environment_models(kind, view, num_envs, mask, l1_weight)
    if kind not in PARTITION_MODELS:
        raise ValueError(f"partition_models: expected one of {PARTITION_MODELS}, got {kind!r}")
    return ForwardEnvironmentModels(view, num_envs, mask, l1_weight, fresh=kind == "fresh").to(mask.device)


def mask_learner_for(view: BackboneView, mask: torch.Tensor, num_envs: int, sigma: float, mask_type: str = "float",
                     mask_reg: str = "l2", model_start: str = "pretrained") -> MaskGate:
    """The mask learner of M4 on ``view``'s path."""
    cls = MaskLearner if isinstance(view, FrozenBackbone) else ForwardMaskLearner
    return cls(view, mask, num_envs, sigma, mask_type, mask_reg, model_start).to(mask.device)
