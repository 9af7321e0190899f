"""``paths``: which view of a backbone M3 and M4 get, and that the settings reach the
models they build (on a stub backbone of the eq. 14 form: no dataset)."""
import pytest
import torch

from recbole_invrl.invariance.backbone import ForwardParts, InvarianceParts
from recbole_invrl.invariance.common import FrozenBackbone
from recbole_invrl.invariance.forward_path import ForwardBackbone
from recbole_invrl.invariance.mask import MaskLearner
from recbole_invrl.invariance.partition import EnvironmentModels, FreshEnvironmentModels
from recbole_invrl.invariance.paths import INVARIANCE_PATHS, backbone_view, environment_models_for, mask_learner_for


class _Eq14:
    training = False

    def eval(self):
        pass

    def train(self, mode=True):
        pass

    def invariance_parts(self):
        return InvarianceParts(user_ids=torch.zeros(3, 2), item_ids=torch.zeros(4, 2), user_content=torch.ones(3, 2),
                               projection=torch.full((2, 5), 3.0), content_rows=lambda items: torch.ones(4, 5),
                               content_reg=0.0, id_reg=0.0)


class _ForwardOnly(torch.nn.Module):
    def forward_parts(self):
        raise AssertionError("not needed here")


class _Both(_Eq14, _ForwardOnly):
    pass


def test_auto_takes_eq14_where_the_backbone_has_its_parts_and_forward_elsewhere():
    assert INVARIANCE_PATHS == ("auto", "eq14", "forward")
    assert type(backbone_view(_Eq14())) is FrozenBackbone
    assert type(backbone_view(_Eq14(), "eq14")) is FrozenBackbone
    assert type(backbone_view(_ForwardOnly())) is ForwardBackbone
    assert type(backbone_view(_Both(), "forward")) is ForwardBackbone
    assert type(backbone_view(_Both())) is FrozenBackbone
    with pytest.raises(ValueError, match=r"^invariance_path: eq14 needs invariance_parts, which _ForwardOnly "
                                         r"does not have; use forward or auto$"):
        backbone_view(_ForwardOnly(), "eq14")
    with pytest.raises(ValueError, match=r"^invariance_path: expected one of \('auto', 'eq14', 'forward'\), "
                                         r"got 'closed'"):
        backbone_view(_Eq14(), "closed")


def test_the_eq14_models_get_every_setting():
    view = backbone_view(_Eq14())
    mask = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    shared = environment_models_for(view, "shared", 3, mask, 0.7)
    fresh = environment_models_for(view, "fresh", 2, mask, 0.2)
    assert type(shared) is EnvironmentModels and type(fresh) is FreshEnvironmentModels
    assert (shared.num_envs, shared.l1_weight, fresh.num_envs, fresh.l1_weight) == (3, 0.7, 2, 0.2)
    assert torch.equal(shared.invariant_gate, mask) and torch.equal(shared.content_gate, 1 - mask)
    learner = mask_learner_for(view, mask, 4, 0.05, mask_type="binary", mask_reg="l0", model_start="random")
    assert type(learner) is MaskLearner
    assert (learner.num_envs, learner.sigma, learner.mask_type, learner.mask_reg) == (4, 0.05, "binary", "l0")
    assert torch.equal(learner.mask.detach(), mask) and learner.weight.abs().max() < 0.1  # not the pretrained 3s
    default = mask_learner_for(view, mask, 2, 0.01)
    assert (default.mask_type, default.mask_reg) == ("float", "l2") and torch.equal(default.weight.detach(),
                                                                                      torch.full((2, 5), 3.0))


class _Graph(torch.nn.Module):
    """A backbone of the forward path: one content weight, a content mask, a re-draw."""

    def __init__(self):
        super().__init__()
        self.content = torch.nn.Module()
        self.w = torch.nn.Parameter(torch.ones(2, 5))
        self.gate = None

    def forward_parts(self):
        return ForwardParts(weights=[(self.w, 0)], frozen=[])

    def set_content_mask(self, gate):
        self.gate = gate

    def reset_parameters(self):
        torch.nn.init.zeros_(self.w)


def test_the_forward_models_get_every_setting():
    from recbole_invrl.invariance.forward_path import ForwardEnvironmentModels, ForwardMaskLearner

    view = backbone_view(_Graph())
    mask = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    shared = environment_models_for(view, "shared", 3, mask, 0.7)
    fresh = environment_models_for(view, "fresh", 2, mask, 0.2)
    assert type(shared) is ForwardEnvironmentModels and (shared.num_envs, shared.l1_weight) == (3, 0.7)
    assert (fresh.num_envs, fresh.l1_weight) == (2, 0.2)
    for model in shared.models:
        assert torch.equal(model.gate, 1 - mask) and torch.equal(model.w.detach(), torch.ones(2, 5))
    for model in fresh.models:
        assert torch.equal(model.gate, torch.ones(5)) and torch.equal(model.w.detach(), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"^partition_models: expected one of \('shared', 'fresh'\), got 'own'$"):
        environment_models_for(view, "own", 2, mask, 0.0)
    learner = mask_learner_for(view, mask, 4, 0.05, mask_type="binary", mask_reg="l0")
    assert type(learner) is ForwardMaskLearner
    assert (learner.num_envs, learner.sigma, learner.mask_type, learner.mask_reg) == (4, 0.05, "binary", "l0")
