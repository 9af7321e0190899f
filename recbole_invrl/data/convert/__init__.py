"""Converters from public multimedia-recommendation layouts to RecBole atomic files.

``python -m recbole_invrl.data.convert {grcn,mmrec} --src DIR --name NAME [--out atomic_data]``
writes ``<out>/<NAME>/`` with ``NAME.inter``, ``NAME.{train,valid,test}.inter``,
``NAME.item`` and ``NAME.yaml``, atomically.
"""

from .atomic import ConversionError, ConversionSummary, ConversionWarning, dataset_yaml
from .grcn import convert_grcn
from .mmrec import convert_mmrec
from .safe_pickle import UnsafePickleError, load_npy, load_pt

__all__ = [
    "ConversionError",
    "ConversionSummary",
    "ConversionWarning",
    "UnsafePickleError",
    "convert_grcn",
    "convert_mmrec",
    "dataset_yaml",
    "load_npy",
    "load_pt",
]
