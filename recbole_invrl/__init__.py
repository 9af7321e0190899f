"""recbole_invrl: InvRL (Du et al., MM'22) and its UltraGCN-MM backbone as a RecBole plugin."""

__version__ = "0.1.0"

import warnings

# RecBole 1.2.1's sources hold invalid escape sequences in docstrings; Python 3.12 and newer
# report each as a SyntaxWarning when it first compiles them, ahead of a run's own output.
warnings.filterwarnings("ignore", category=SyntaxWarning, module=r".*[\\/]recbole[\\/]")
