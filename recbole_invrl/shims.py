"""Narrow fixes that let RecBole 1.2.1 (its newest release) run on today's scientific stack.

``apply()`` runs when the plugin's RecBole-facing code is imported (``recbole_invrl.compat``
imports this module). Each shim is installed only where the installed library needs it, and
at most once; ``tests/test_shims.py`` shows each failure without its shim.

- **scipy >= 1.12**: ``dok_matrix`` lost ``_update`` (the unchecked bulk insert), with which
  RecBole builds the adjacency matrix of LightGCN, NGCF, NCL, GCMC, SpectralCF, KGIN and
  MCCLK (``'dok_matrix' object has no attribute '_update'``).
- **pandas >= 3** (copy-on-write): ``Dataset._fill_nan`` calls
  ``feat[field].fillna(..., inplace=True)``, which now fills a copy and leaves the NaNs of
  float columns in place. The shim fills them by assignment first.
- **pandas >= 3**: ``Series.agg(len)`` now returns the length of the Series, not of each
  cell, so ``Dataset._remap`` splits the remapped ids of a ``token_seq`` column into one
  piece (``Length of values (1) does not match length of index``).
- **hyperopt >= 0.2.7** draws with ``numpy.random.Generator`` (``rng.integers``), but
  RecBole's ``exhaustive_search`` seeds a ``RandomState``; the shim gives that function a
  ``Generator`` from the same seed. ``hyperopt_rstate`` is the ``fmin`` seed object that
  the installed hyperopt expects.

Two more live where they belong: NumPy 2's removed aliases (``np.float_``) in
``recbole_invrl.config.Config.compatibility_settings``, and weights-only checkpoints for
torch >= 2.6 in ``recbole_invrl.compat``.
"""
from __future__ import annotations

import functools
import re
import types
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

_installed: list[str] | None = None


def version_tuple(package: str) -> tuple[int, ...]:
    """The leading numeric part of ``package``'s installed version, e.g. (3, 1, 1); () if absent."""
    try:
        text = version(package)
    except PackageNotFoundError:
        return ()
    match = re.match(r"\d+(\.\d+)*", text)
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def pandas_copy_on_write() -> bool:
    """Whether chained ``inplace`` calls (``df[col].fillna(..., inplace=True)``) fill a copy."""
    return version_tuple("pandas") >= (3,)


def hyperopt_uses_generator() -> bool:
    """hyperopt 0.2.7 and later seed ``fmin`` and draw samples with ``numpy.random.Generator``."""
    return version_tuple("hyperopt") >= (0, 2, 7)


def hyperopt_rstate(seed: int) -> np.random.RandomState | np.random.Generator:
    """The seeded random state that the installed hyperopt's ``fmin(rstate=...)`` expects."""
    return np.random.default_rng(seed) if hyperopt_uses_generator() else np.random.RandomState(seed)


# --- scipy: dok_matrix._update ------------------------------------------------------------


def _dok_update(self, data: dict) -> None:
    """Insert ``{(row, col): value}`` without per-key checks, as scipy < 1.12's ``_update`` did."""
    store = getattr(self, "_dict", None)
    (store.update if isinstance(store, dict) else self.update)(data)


def shim_dok_update() -> bool:
    if hasattr(sp.dok_matrix, "_update"):
        return False
    sp.dok_matrix._update = _dok_update
    return True


# --- pandas 3: Dataset._fill_nan and Dataset._remap -------------------------------------


def _fill_nan_by_assignment(original: Callable) -> Callable:
    @functools.wraps(original)
    def _fill_nan(self) -> None:
        from recbole.utils import FeatureType

        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                ftype = self.field2type[field]
                if ftype == FeatureType.TOKEN:
                    feat[field] = feat[field].fillna(0)
                elif ftype == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(feat[field].mean())
        with warnings.catch_warnings():  # RecBole's own fillna calls now find nothing to fill
            warnings.simplefilter("ignore", pd.errors.ChainedAssignmentError)
            original(self)

    return _fill_nan


def _remap_per_cell_lengths(original: Callable) -> Callable:
    @functools.wraps(original)
    def _remap(self, remap_list) -> None:
        """RecBole's ``_remap`` (one ``pd.factorize`` over all the fields of ``remap_list``),
        with each ``token_seq`` cell's length taken per cell."""
        from recbole.utils import FeatureType

        if len(remap_list) == 0:
            return
        tokens, split_point = self._concat_remaped_tokens(remap_list)
        new_ids, uniques = pd.factorize(tokens)
        id_token = np.array(["[PAD]"] + list(uniques))
        token_id = {t: i for i, t in enumerate(id_token)}
        for (feat, field, ftype), ids in zip(remap_list, np.split(new_ids + 1, split_point)):
            if field not in self.field2id_token:
                self.field2id_token[field], self.field2token_id[field] = id_token, token_id
            if ftype == FeatureType.TOKEN:
                feat[field] = ids
            elif ftype == FeatureType.TOKEN_SEQ:
                lengths = feat[field].map(len).to_numpy()
                feat[field] = np.split(ids, np.cumsum(lengths)[:-1])

    return _remap


def shim_pandas_copy_on_write() -> bool:
    if not pandas_copy_on_write():
        return False
    from recbole.data.dataset import Dataset

    Dataset._fill_nan = _fill_nan_by_assignment(Dataset._fill_nan)
    Dataset._remap = _remap_per_cell_lengths(Dataset._remap)
    return True


# --- hyperopt >= 0.2.7: RecBole's exhaustive_search ---------------------------------------


class _NumpyWithGenerator(types.SimpleNamespace):
    """numpy as RecBole's ``exhaustive_search`` sees it: ``np.random.RandomState(seed)`` is a
    ``Generator`` seeded the same way, anything else is numpy's own."""

    random = types.SimpleNamespace(RandomState=np.random.default_rng)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def shim_exhaustive_search() -> bool:
    if not hyperopt_uses_generator():
        return False
    from recbole.trainer import hyper_tuning

    search = hyper_tuning.exhaustive_search
    patched = types.FunctionType(search.__code__, {**search.__globals__, "np": _NumpyWithGenerator()},
                                 search.__name__, search.__defaults__, search.__closure__)
    patched.__wrapped__ = search
    hyper_tuning.exhaustive_search = patched
    return True


SHIMS: dict[str, Callable[[], bool]] = {
    "scipy dok_matrix._update": shim_dok_update,
    "pandas copy-on-write in Dataset._fill_nan / _remap": shim_pandas_copy_on_write,
    "hyperopt Generator in exhaustive_search": shim_exhaustive_search,
}


def apply() -> list[str]:
    """Install the shims the installed versions need (once); the names of those installed."""
    global _installed
    if _installed is None:
        _installed = [name for name, shim in SHIMS.items() if shim()]
    return list(_installed)


apply()
