"""Plugin recommenders; ``__all__`` is what ``recbole_invrl.utils.get_model`` finds."""
from recbole_invrl.model.general_recommender.invrl import InvRL
from recbole_invrl.model.general_recommender.ultragcn_mm import UltraGCNMM
from recbole_invrl.model.general_recommender.vbpr import VBPR

__all__ = ["InvRL", "UltraGCNMM", "VBPR"]
from recbole_invrl.model.general_recommender.duif import DUIF; __all__.append("DUIF")  # noqa: E402,E702
from recbole_invrl.model.general_recommender.mmgcn import MMGCN; __all__.append("MMGCN")  # noqa: E402,E702
