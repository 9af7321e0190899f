"""Trainers. ``get_trainer`` looks here for ``<Model>Trainer`` before RecBole's trainers."""
from recbole.trainer import Trainer as _RecBoleTrainer

from recbole_invrl.compat import with_compat_mixins
from recbole_invrl.trainer.invrl_trainer import InvRLTrainer

Trainer = with_compat_mixins(_RecBoleTrainer)

__all__ = ["InvRLTrainer", "Trainer"]
