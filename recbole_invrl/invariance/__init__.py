"""InvRL's invariance modules: environment partition (M3) and mask generation (M4)."""
from recbole_invrl.invariance.common import FrozenBackbone, TrainingInteractions
from recbole_invrl.invariance.mask import MaskLearner
from recbole_invrl.invariance.partition import EnvironmentModels

__all__ = ["EnvironmentModels", "FrozenBackbone", "MaskLearner", "TrainingInteractions"]
