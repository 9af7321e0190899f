"""What InvRL's M3 and M4 need from a backbone, and nothing more.

InvRL is a framework (§2.3): any recommender whose score is linear in a projection of the
item content can be its backbone. After pretraining, with the id embeddings frozen, such a
score has the form of eq. 14,

    Gamma(u, i, g * c_i) = s_id(u, i) + <p_u^(c), W (g * c_i)>,

where g is the content gate (1 in pretraining, 1 - m in M3, mu in M4), s_id the part that
does not see content, p_u^(c) the user's content vector and W the content projection. A
backbone gives these as ``InvarianceParts`` from ``invariance_parts()``, together with the
per-interaction loss it trains with; M3 and M4 then learn their own W's on that form.

- UltraGCN-MM: s_id = <p_u^(t), t_i>; p_u^(c) the content half of the user vector.
- VBPR: s_id = beta_i + <gamma_u, gamma_i>; p_u^(c) = [theta_u, 1] and W = [E; beta'], so
  that <theta_u, E c_i> + <beta', c_i> is one product.
- DUIF: s_id = 0; p_u^(c) = p_u.

Models whose content enters the score through non-linear layers (MMGCN, GRCN) have no
fixed p_u^(c) and W once their ids are frozen. They can be backbones on the forward path
(``recbole_invrl.invariance.forward_path``), where M3 and M4 train copies of the model
itself on the gated content: such a model gives ``forward_parts() -> ForwardParts`` (the
weights that multiply c_i directly, with their columns' offsets in c_i, and its id
parameters) and, for ``partition_models: fresh``, ``reset_parameters()``. Models whose
content enters only through a graph built from it (LATTICE's and FREEDOM's item-item kNN
graphs, which carry id embeddings) have no weight on c_i, so neither form fits them.

A backbone class of the eq. 14 form implements:

- ``invariance_parts() -> InvarianceParts`` (called once after pretraining, in eval mode);
- ``interaction_losses(scores, users, positives, negatives) -> (n,)``: its training loss
  per positive, from the scores of ``training_items(positives, negatives)`` (n, M);
- ``sample_negatives(users) -> (n, k)``: negatives for the positives of ``users`` (n,), on
  the model's device, and ``training_items``.

On the forward path it implements the last two and ``forward_parts``, and scores through
``MultimodalRecommender.scoring_tables`` under ``ContentEncoder.gated``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class InvarianceParts:
    """A pretrained backbone in the form of eq. 14, every tensor detached.

    ``user_ids`` (n_users, K) and ``item_ids`` (n_items, K): s_id(u, i) is their dot product
    (a bias goes in as a constant column); ``user_content`` (n_users, C): p_u^(c);
    ``projection`` (C, D): W; ``content_rows(items)``: the (unmasked) content the score sees,
    (*items.shape, D), items None: every item; ``content_reg`` and ``id_reg``: the
    backbone's L2 factors on W and on id embeddings, for the models M3 and M4 train."""

    user_ids: torch.Tensor
    item_ids: torch.Tensor
    user_content: torch.Tensor
    projection: torch.Tensor
    content_rows: Callable[[torch.Tensor | None], torch.Tensor]
    content_reg: float
    id_reg: float

    @property
    def n_users(self) -> int:
        return self.user_ids.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_ids.shape[0]

    @property
    def id_size(self) -> int:
        return self.user_ids.shape[1]

    @property
    def content_size(self) -> int:
        return self.user_content.shape[1]

    @property
    def dim(self) -> int:
        return self.projection.shape[1]


@dataclass
class ForwardParts:
    """What the forward path needs from a model: ``weights``, each parameter that multiplies
    c_i directly with the offset in c_i of its last dimension's columns; ``frozen``, its id
    parameters (kept from pretraining); ``content_reg``, its L2 factor on ``weights``."""

    weights: list[tuple[nn.Parameter, int]]
    frozen: list[nn.Parameter]
    content_reg: float = 0.0
