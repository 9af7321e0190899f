"""InvRL's invariance modules: environment partition (M3) and mask generation (M4)."""
from recbole_invrl.invariance.common import FrozenBackbone, TrainingInteractions, environment_batches
from recbole_invrl.invariance.mask import MaskLearner
from recbole_invrl.invariance.partition import EnvironmentModels, FreshEnvironmentModels, environment_models

__all__ = ["EnvironmentModels", "FreshEnvironmentModels", "FrozenBackbone", "MaskLearner", "TrainingInteractions",
           "environment_batches", "environment_models"]
