"""InvRL (paper §2.3): invariant representation learning on an UltraGCN-MM backbone.

The model holds two UltraGCN-MM instances on the same data: ``backbone``, trained on the
raw content c (stage 0) and then read with frozen id embeddings by the environment (M3)
and mask (M4) stages, and ``final``, a fresh model on the invariant representation
Phi = m * c (eq. 4, M5) trained by RecBole's fit loop (M6, eq. 13). ``mask`` is m.
Training, prediction and full ranking use ``final``. ``InvRLTrainer`` runs Algorithm 1.
"""
from __future__ import annotations

import copy

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_invrl.model.common import final_mask
from recbole_invrl.model.general_recommender.ultragcn_mm import UltraGCNMM


def config_with(config, **overrides):
    """A shallow copy of a RecBole Config with some keys replaced."""
    copied = copy.copy(config)
    copied.final_config_dict = {**config.final_config_dict, **overrides}
    return copied


class InvRL(GeneralRecommender):
    """Backbone for M3/M4, invariant mask m, and the final model Gamma* on m * c."""

    input_type = InputType.POINTWISE
    config_bases = ("UltraGCNMM",)  # InvRL.yaml is read on top of UltraGCNMM.yaml

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.backbone = UltraGCNMM(config, dataset)
        final_config = config_with(config, proj_reg_weight=config["final_proj_reg_weight"])
        self.final = UltraGCNMM(final_config, dataset, shared=self.backbone)
        self.register_buffer("mask", torch.full((self.backbone.content.dim,), 0.5))
        self.mask_type = config["mask_type"]

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` copies each model's data buffers: re-share them afterwards."""
        super()._apply(fn, *args, **kwargs)
        self.final.share_data_from(self.backbone)
        return self

    @property
    def content_layout(self) -> list[tuple[str, int]]:
        return self.backbone.content_layout

    def set_mask(self, mask: torch.Tensor) -> None:
        """Store m (after M4)."""
        self.mask.copy_(mask.detach().to(self.mask.device))

    def start_final_model(self) -> None:
        """M5: the final model sees Phi = m * c (a thresholded m for a binary mask)."""
        self.final.set_content_mask(final_mask(self.mask, self.mask_type))

    def calculate_loss(self, interaction):
        return self.final.calculate_loss(interaction)

    def predict(self, interaction):
        return self.final.predict(interaction)

    def full_sort_predict(self, interaction):
        return self.final.full_sort_predict(interaction)
