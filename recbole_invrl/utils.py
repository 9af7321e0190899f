"""Find models and trainers: plugin classes first, then RecBole's zoo (RecBole-GNN style);
and the rule every choice on validation follows (``best_on_validation``)."""
from __future__ import annotations

import importlib
from typing import Callable, Iterable, TypeVar

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_invrl.compat import with_compat_mixins

T = TypeVar("T")

# Names a user may type for a plugin model, mapped to the class name.
MODEL_ALIASES = {"ultragcn-mm": "UltraGCNMM", "ultragcn_mm": "UltraGCNMM"}
PLUGIN_MODEL_MODULE = "recbole_invrl.model.general_recommender"
PLUGIN_TRAINER_MODULE = "recbole_invrl.trainer"


def best_on_validation(candidates: Iterable[T], valid_score: Callable[[T], float], bigger: bool = True) -> T:
    """The candidate with the best validation score, the first of equals. Only ``valid_score``
    is read, so nothing measured on the test split can move the choice."""
    candidates = list(candidates)
    if not candidates:
        raise ValueError("best_on_validation: no candidates")
    sign = 1.0 if bigger else -1.0
    return max(enumerate(candidates), key=lambda it: (sign * float(valid_score(it[1])), -it[0]))[1]


def canonical_model_name(name: str) -> str:
    """``UltraGCN-MM`` -> ``UltraGCNMM``; other names are returned unchanged."""
    return MODEL_ALIASES.get(name.lower(), name)


def plugin_model_names() -> list[str]:
    module = importlib.import_module(PLUGIN_MODEL_MODULE)
    return list(module.__all__)


def get_model(model_name: str) -> type:
    """Return the model class: a ``recbole_invrl`` model if one has this name, else RecBole's."""
    model_name = canonical_model_name(model_name)
    module = importlib.import_module(PLUGIN_MODEL_MODULE)
    if model_name in module.__all__:
        return getattr(module, model_name)
    from recbole_invrl.settings import SettingsError, unknown_model_message

    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError, AttributeError):
        # An unknown name can surface as an ImportError of RecBole's optional xgboost and
        # lightgbm wrappers (imported last), or as an AttributeError for a name in the wrong case.
        raise SettingsError(unknown_model_message(model_name, plugin_model_names())) from None


def get_trainer(model_type, model_name: str) -> type:
    """Return the trainer class: ``recbole_invrl.trainer.<Model>Trainer`` if it exists,
    else RecBole's trainer for the model, with checkpoints that load with ``weights_only=True``."""
    model_name = canonical_model_name(model_name)
    module = importlib.import_module(PLUGIN_TRAINER_MODULE)
    plugin_trainer = getattr(module, f"{model_name}Trainer", None)
    if plugin_trainer is not None:
        return plugin_trainer
    return with_compat_mixins(recbole_get_trainer(model_type, model_name))
