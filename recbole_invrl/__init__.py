"""recbole_invrl: InvRL (Du et al., MM'22) and its UltraGCN-MM backbone as a RecBole plugin."""

__version__ = "0.1.0"
