"""GRCN / MMGCN / InvRL release layout -> RecBole atomic files.

Layout (one folder):

* ``train.npy``: int array (N, 2) of (user, item + n_users);
* ``val_full.npy`` / ``test_full.npy``: pickled object arrays, one list per user
  ``[user, item + n_users, ...]`` (a list may hold only the user);
* optional ``user_item_dict.npy``: pickled dict user -> offset training items (cross-check only);
* features ``v_feat.npy`` / ``a_feat.npy`` / ``t_feat.npy`` (one float row per item), or
  ``feat_v.pt`` / ``feat_a.pt`` (float tensors) and ``feat_t.pt`` (LongTensor (2, nnz):
  item id, word id).

``n_users`` is the largest user id + 1 over all splits; ``n_items`` the number of feature
rows (or, with word-id text only, the largest item id + 1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import (
    ConversionError,
    ConversionSummary,
    DenseFeature,
    Feature,
    Split,
    WordFeature,
    as_int_ids,
    check_dense_shape,
    check_feature_rows,
    check_ids,
    pair_keys,
    require_files,
    validate_name,
    warn,
    write_dataset,
)
from .safe_pickle import load_npy, load_pt

LAYOUT = "GRCN/MMGCN"
MODALITIES = ("v", "a", "t")
FEATURE_FILES = [name for m in MODALITIES for name in (f"{m}_feat.npy", f"feat_{m}.pt")]


@dataclass
class _Raw:
    """Interactions as stored: users and offset item ids, with where each came from."""

    name: str
    source: str
    users: np.ndarray
    stored: np.ndarray
    rows: np.ndarray
    positions: np.ndarray | None = None  # position inside the per-user list

    def where(self, i: int) -> str:
        pos = "" if self.positions is None else f" (position {self.positions[i]})"
        return f"{self.source} row {self.rows[i]}{pos}"


def convert_grcn(
    src: Path | str,
    name: str,
    out: Path | str = "atomic_data",
    *,
    progress: bool = True,
    extra_files: Sequence[Path | str] = (),
) -> ConversionSummary:
    """Convert a GRCN/MMGCN/InvRL folder ``src`` into ``<out>/<name>/`` (atomic files + yaml)."""
    src = Path(src)
    validate_name(name)
    require_files(
        src, [["train.npy"], ["val_full.npy"], ["test_full.npy"], FEATURE_FILES], LAYOUT
    )
    raws = [
        _load_train(src / "train.npy"),
        _load_lists(src / "val_full.npy", "valid"),
        _load_lists(src / "test_full.npy", "test"),
    ]
    features = _load_features(src)
    n_users = 1 + max((int(r.users.max()) for r in raws if r.users.size), default=-1)
    n_items, items_from = _count_items(raws, features, n_users)
    splits = [_to_split(r, n_users, n_items, items_from) for r in raws]
    _check_words(features, n_items, items_from)
    if (src / "user_item_dict.npy").is_file():
        _cross_check(src / "user_item_dict.npy", splits[0], n_users, n_items)
    return write_dataset(out, name, n_users, n_items, splits, features, progress, extra_files)


# ----------------------------------------------------------------------------- interactions


def _load_train(path: Path) -> _Raw:
    arr = load_npy(path, allow_pickle_types=False)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConversionError(
            f"{path.name}: expected an integer array of shape (N, 2) of (user, item + n_users), "
            f"got shape {arr.shape}"
        )
    flat = as_int_ids(np.asarray(arr).reshape(-1), path.name, lambda i: f"{path.name} row {i // 2}")
    pairs = flat.reshape(-1, 2)
    raw = _Raw("train", path.name, pairs[:, 0].copy(), pairs[:, 1].copy(), np.arange(len(pairs)))
    _check_users(raw)
    return raw


def _is_row(row: Any) -> bool:
    if isinstance(row, (list, tuple)):
        return True
    return isinstance(row, np.ndarray) and row.ndim == 1 and row.dtype.kind in "iu"


def _load_lists(path: Path, split: str) -> _Raw:
    """Flatten one-list-per-user ``[user, item + n_users, ...]`` into parallel arrays."""
    obj = load_npy(path)
    if not isinstance(obj, (np.ndarray, list, tuple)) or np.ndim(obj) == 0:
        raise ConversionError(
            f"{path.name}: expected one list [user, item + n_users, ...] per user, "
            f"got {type(obj).__name__}"
        )
    rows = list(obj)
    bad = [i for i, row in enumerate(rows) if not _is_row(row)]
    if bad:
        raise ConversionError(
            f"{path.name} row {bad[0]}: expected a list [user, item + n_users, ...], "
            f"got {type(rows[bad[0]]).__name__}"
        )
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    empty = np.flatnonzero(lens == 0)
    if empty.size:
        raise ConversionError(
            f"{path.name} row {empty[0]}: empty list, holds no user "
            "(each list must start with the user id)"
        )
    flat = _flatten_ints(rows, int(lens.sum()), path.name)
    starts = np.cumsum(lens) - lens
    is_item = np.ones(flat.shape[0], dtype=bool)
    is_item[starts] = False
    n_items_per_row = lens - 1
    raw = _Raw(
        split,
        path.name,
        np.repeat(flat[starts], n_items_per_row),
        flat[is_item],
        np.repeat(np.arange(len(rows)), n_items_per_row),
        (np.arange(flat.shape[0]) - np.repeat(starts, lens))[is_item],
    )
    _check_users(_Raw(split, path.name, flat[starts], flat[starts], np.arange(len(rows))))
    return raw


def _flatten_ints(rows: list, total: int, source: str) -> np.ndarray:
    try:
        return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
    except (TypeError, ValueError, OverflowError):
        pass
    for r, row in enumerate(rows):  # error path only: find the offending entry
        for p, x in enumerate(row):
            if not isinstance(x, (int, np.integer)):
                raise ConversionError(
                    f"{source} row {r} (position {p}): expected an integer id, "
                    f"got {type(x).__name__}"
                )
    raise ConversionError(f"{source}: ids do not fit in 64-bit integers")


def _check_users(raw: _Raw) -> None:
    check_ids(raw.users, 0, None, lambda i: f"{raw.where(i)}: negative user id {raw.users[i]}")


def _count_items(raws: Sequence[_Raw], features: Sequence[Feature], n_users: int) -> tuple[int, str]:
    rows, source = check_feature_rows(features)
    if rows is not None:
        return rows, source
    top = [int(r.stored.max()) - n_users for r in raws if r.stored.size]
    top += [int(f.items.max()) for f in features if isinstance(f, WordFeature) and f.items.size]
    return max(top, default=-1) + 1, ""


def _to_split(raw: _Raw, n_users: int, n_items: int, items_from: str) -> Split:
    items = raw.stored - n_users

    def describe(i: int) -> str:
        where, stored = raw.where(i), raw.stored[i]
        if items[i] < 0:
            return (
                f"{where}: item id {stored} is below the item offset n_users={n_users} "
                f"(items are stored as item + n_users; the largest user id is {n_users - 1})"
            )
        return (
            f"{where}: item id {items[i]} (stored as {stored}) is out of range: {items_from} has "
            f"{n_items} rows (one per item) but the interactions need at least {items[i] + 1}"
        )

    check_ids(items, 0, n_items, describe)
    return Split(raw.name, raw.source, raw.users, items)


def _cross_check(path: Path, train: Split, n_users: int, n_items: int) -> None:
    """Compare ``user_item_dict.npy`` with ``train.npy``; warn on disagreement."""
    d = load_npy(path)
    try:
        users = np.fromiter(d.keys(), dtype=np.int64, count=len(d))
        lens = np.fromiter(map(len, d.values()), dtype=np.int64, count=len(d))
        flat = np.fromiter(itertools.chain.from_iterable(d.values()), np.int64, int(lens.sum()))
    except (AttributeError, TypeError, ValueError, OverflowError):
        warn(f"{path.name}: expected a dict user -> list of items, got {type(d).__name__}; ignored")
        return
    users, items = np.repeat(users, lens), flat - n_users
    ok = (users >= 0) & (users < n_users) & (items >= 0) & (items < n_items)
    in_dict = np.unique(pair_keys(users[ok], items[ok], n_items))
    in_train = np.unique(pair_keys(train.users, train.items, n_items))
    only_dict = int((~ok).sum()) + np.setdiff1d(in_dict, in_train).size
    only_train = np.setdiff1d(in_train, in_dict).size
    if only_dict or only_train:
        warn(
            f"{path.name} disagrees with {train.source}: {only_dict} (user, item) pair(s) only in "
            f"{path.name}, {only_train} only in {train.source} ({train.source} is used)"
        )


# ----------------------------------------------------------------------------- features


def _load_features(src: Path) -> list[Feature]:
    features: list[Feature] = []
    for m in MODALITIES:
        npy, pt = src / f"{m}_feat.npy", src / f"feat_{m}.pt"
        if npy.is_file() and pt.is_file():
            raise ConversionError(f"both {npy.name} and {pt.name} in {src}: keep only one")
        if npy.is_file():
            arr, source = load_npy(npy, allow_pickle_types=False, mmap_mode="r"), npy.name
        elif pt.is_file():
            arr, source = _tensor_to_numpy(load_pt(pt), pt.name), pt.name
        else:
            continue
        features.append(_make_feature(m, arr, source))
    return features


def _tensor_to_numpy(obj: Any, source: str) -> np.ndarray:
    import torch

    if not isinstance(obj, torch.Tensor):
        raise ConversionError(f"{source}: expected a tensor, got {type(obj).__name__}")
    t = obj.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.numpy()


def _make_feature(m: str, arr: np.ndarray, source: str) -> Feature:
    if m == "t" and arr.ndim == 2 and arr.shape[0] == 2 and arr.dtype.kind in "iu":
        pairs = np.asarray(arr).astype(np.int64)
        for row, what in ((0, "item"), (1, "word")):
            check_ids(
                pairs[row], 0, None,
                lambda j, row=row, what=what: (
                    f"{source} column {j}: negative {what} id {pairs[row, j]}"
                ),
            )
        return WordFeature("t_words", source, pairs[0], pairs[1])
    check_dense_shape(arr, source)
    return DenseFeature(f"{m}_feat", source, arr)


def _check_words(features: Sequence[Feature], n_items: int, items_from: str) -> None:
    for f in features:
        if isinstance(f, WordFeature):
            check_ids(
                f.items, 0, n_items,
                lambda j, f=f: (
                    f"{f.source} column {j}: item id {f.items[j]} out of range: "
                    f"{items_from} has {n_items} rows (one per item)"
                ),
            )
