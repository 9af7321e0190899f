"""InvRL (paper §2.3): invariant representation learning on a multimodal backbone.

The model holds two instances of the backbone (``invrl_backbone``, UltraGCN-MM by default,
as in the paper; any plugin model with ``invariance_parts`` or ``forward_parts``, see
``recbole_invrl.invariance.backbone``) on the same data: ``backbone``, trained on the raw
content c (stage 0) and then read with frozen id embeddings by the environment (M3) and
mask (M4) stages, and ``final``, a fresh model on the invariant representation
Phi = m * c (eq. 4, M5) trained by RecBole's fit loop (M6, eq. 13). ``mask`` is m; how Phi
is formed from it (the paper's soft m, a cut, ...) is a ``MaskForm``
(``recbole_invrl.model.mask_forms``).
Training, prediction and full ranking use ``final``. ``InvRLTrainer`` runs Algorithm 1.

Every backbone trains here on the positives of RecBole's dataloader and draws its
negatives on the device (``train_neg_sample_args: ~``): UltraGCN-MM ``neg_num`` uniform
items, as UltraGCN's release does; the BPR models (VBPR, DUIF, MMGCN, GRCN) one item among
those the user has not seen in training, as RecBole's uniform sampler gives them when they
train alone (``UnseenItemSampler``).
"""
from __future__ import annotations

import copy

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_invrl.model.abstract_recommender import MultimodalRecommender
from recbole_invrl.model.common import final_mask
from recbole_invrl.model.mask_forms import MaskForm


def backbone_class_of(config) -> type:
    """The model class ``invrl_backbone`` names: a plugin multimodal model with
    ``invariance_parts`` (eq. 14 form) or ``forward_parts`` (the forward path)."""
    from recbole_invrl.settings import SettingsError
    from recbole_invrl.utils import get_model

    name = config["invrl_backbone"] or "UltraGCNMM"
    try:
        model = get_model(name)
    except SettingsError as err:
        raise SettingsError(f"invrl_backbone: {str(err).removeprefix('model: ')}") from None
    if not (isinstance(model, type) and issubclass(model, MultimodalRecommender)
            and (hasattr(model, "invariance_parts") or hasattr(model, "forward_parts"))):
        raise SettingsError(f"invrl_backbone: '{name}' cannot be InvRL's backbone; expected a recbole_invrl "
                            "multimodal model with invariance_parts or forward_parts (e.g. UltraGCNMM, VBPR, MMGCN)")
    path = config["invariance_path"] or "auto"
    needs = {"eq14": "invariance_parts", "forward": "forward_parts"}.get(path)
    if needs and not hasattr(model, needs):
        raise SettingsError(f"invariance_path: {path} needs {needs}, which invrl_backbone '{name}' does not have; "
                            "use auto")
    return model


def final_reg_candidates(config) -> list[float]:
    """``final_proj_reg_weight`` as a list: one value, or the values the final stage tries."""
    value = config["final_proj_reg_weight"]
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]


def config_with(config, **overrides):
    """A shallow copy of a RecBole Config with some keys replaced."""
    copied = copy.copy(config)
    copied.final_config_dict = {**config.final_config_dict, **overrides}
    return copied


class InvRL(GeneralRecommender):
    """Backbone for M3/M4, invariant mask m, and the final model Gamma* on m * c."""

    input_type = InputType.POINTWISE
    backbone_key = "invrl_backbone"  # InvRL.yaml is read on top of this model's yaml
    config_bases = ("UltraGCNMM",)  # ... UltraGCNMM.yaml unless invrl_backbone names another

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        backbone_class = backbone_class_of(config)
        self.backbone = backbone_class(config, dataset)
        final_config = config
        self.final_regs = final_reg_candidates(config) if backbone_class.content_reg_key else [None]
        if backbone_class.content_reg_key:
            final_config = config_with(config, **{backbone_class.content_reg_key: self.final_regs[0]})
        self.final = backbone_class(final_config, dataset, shared=self.backbone)
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

    def set_final_reg(self, value: float | None) -> None:
        """The final model's content L2 (its ``content_reg_key``), one of ``final_regs``."""
        if value is not None:
            setattr(self.final, type(self.final).content_reg_key, float(value))

    def final_gate(self, form: MaskForm | None = None) -> torch.Tensor:
        """The gate of Phi = gate * c: ``form`` (default soft, eq. 4) of m (of m thresholded
        at 0.5 for a binary mask)."""
        return (form or MaskForm())(final_mask(self.mask, self.mask_type))

    def start_final_model(self, form: MaskForm | None = None) -> None:
        """M5: the final model sees Phi = gate * c."""
        self.final.set_content_mask(self.final_gate(form))

    def calculate_loss(self, interaction):
        return self.final.calculate_loss(interaction)

    def predict(self, interaction):
        return self.final.predict(interaction)

    def full_sort_predict(self, interaction):
        return self.final.full_sort_predict(interaction)
