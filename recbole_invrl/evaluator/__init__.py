"""Evaluation metrics added to RecBole's registry (``register_legacy_ndcg``)."""
from recbole_invrl.evaluator.legacy_ndcg import LegacyNDCG, register_legacy_ndcg

__all__ = ["LegacyNDCG", "register_legacy_ndcg"]
