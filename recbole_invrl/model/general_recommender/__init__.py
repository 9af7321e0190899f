"""Plugin recommenders; ``__all__`` is what ``recbole_invrl.utils.get_model`` finds."""
from recbole_invrl.model.general_recommender.duif import DUIF
from recbole_invrl.model.general_recommender.freedom import FREEDOM
from recbole_invrl.model.general_recommender.grcn import GRCN
from recbole_invrl.model.general_recommender.invrl import InvRL
from recbole_invrl.model.general_recommender.lattice import LATTICE
from recbole_invrl.model.general_recommender.mmgcn import MMGCN
from recbole_invrl.model.general_recommender.ultragcn import UltraGCN
from recbole_invrl.model.general_recommender.ultragcn_mm import UltraGCNMM
from recbole_invrl.model.general_recommender.vbpr import VBPR

__all__ = ["DUIF", "FREEDOM", "GRCN", "InvRL", "LATTICE", "MMGCN", "UltraGCN", "UltraGCNMM", "VBPR"]
