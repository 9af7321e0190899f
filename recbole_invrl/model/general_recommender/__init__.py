"""Plugin recommenders; ``__all__`` is what ``recbole_invrl.utils.get_model`` finds."""
from recbole_invrl.model.general_recommender.invrl import InvRL
from recbole_invrl.model.general_recommender.ultragcn_mm import UltraGCNMM
from recbole_invrl.model.general_recommender.vbpr import VBPR

__all__ = ["InvRL", "UltraGCNMM", "VBPR"]
from recbole_invrl.model.general_recommender.ultragcn import UltraGCN  # noqa: E402

__all__.append("UltraGCN")
