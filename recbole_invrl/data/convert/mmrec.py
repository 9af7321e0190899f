"""MMRec toolbox layout -> RecBole atomic files.

Layout (one folder): ``<name>.inter`` (tab-separated, header
``userID itemID rating timestamp x_label``, x_label 0/1/2 = train/valid/test, ids 0-based),
``image_feat.npy`` and/or ``text_feat.npy`` (one float row per item id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import (
    ConversionError,
    ConversionSummary,
    DenseFeature,
    Split,
    check_dense_shape,
    check_feature_rows,
    check_ids,
    first_bad,
    require_files,
    validate_name,
    write_dataset,
)
from .safe_pickle import load_npy

LAYOUT = "MMRec"
SPLITS = ("train", "valid", "test")  # x_label 0 / 1 / 2
FEATURES = (("image_feat.npy", "image_feat"), ("text_feat.npy", "text_feat"))
COLUMNS = ("userID", "itemID", "x_label")


def convert_mmrec(
    src: Path | str,
    name: str,
    out: Path | str = "atomic_data",
    *,
    progress: bool = True,
    extra_files: Sequence[Path | str] = (),
) -> ConversionSummary:
    """Convert an MMRec folder ``src`` (``<name>.inter`` + feature files) into ``<out>/<name>/``."""
    src = Path(src)
    validate_name(name)
    inter = f"{name}.inter"
    require_files(src, [[inter], [f for f, _ in FEATURES]], LAYOUT)
    users, items, labels = _read_inter(src / inter)
    features = _load_features(src)
    n_items, items_from = check_feature_rows(features)
    check_ids(
        items, 0, n_items,
        lambda i: (
            f"{inter} row {i}: item id {items[i]} is out of range: {items_from} has "
            f"{n_items} rows (one per item) but the interactions need at least {items[i] + 1}"
        ),
    )
    n_users = int(users.max()) + 1 if users.size else 0
    splits = [
        Split(s, inter, users[labels == k], items[labels == k]) for k, s in enumerate(SPLITS)
    ]
    return write_dataset(out, name, n_users, n_items, splits, features, progress, extra_files)


def _read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read userID, itemID and x_label as int64 arrays, checking every value."""
    import pandas as pd

    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ConversionError(
                f"{path.name}: missing column(s) {', '.join(missing)} in the header "
                f"(expected tab-separated userID itemID rating timestamp x_label, got {header})"
            )
        df = pd.read_csv(path, sep="\t")  # all columns, so ragged lines are caught
    except ConversionError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as err:  # pandas ParserError is a ValueError
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"{path.name}: cannot parse as tab-separated text ({detail})") from None
    users, items, labels = (_int_column(df[c], c, path.name) for c in COLUMNS)
    check_ids(users, 0, None, lambda i: f"{path.name} row {i}: negative userID {users[i]}")
    check_ids(items, 0, None, lambda i: f"{path.name} row {i}: negative itemID {items[i]}")
    check_ids(
        labels, 0, 3,
        lambda i: f"{path.name} row {i}: x_label {labels[i]} is not 0, 1 or 2 (train/valid/test)",
    )
    return users, items, labels


def _int_column(col, name: str, source: str) -> np.ndarray:
    if col.dtype.kind in "iu":
        return col.to_numpy(np.int64)
    import pandas as pd

    num = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    i = first_bad(~np.isfinite(num) | (num != np.round(num)))
    if i is not None:
        raise ConversionError(
            f"{source} row {i}: {name} {col.iloc[i]!r} is not an integer (line {i + 2})"
        )
    return num.astype(np.int64)


def _load_features(src: Path) -> list[DenseFeature]:
    features = []
    for file, field in FEATURES:
        if (src / file).is_file():
            arr = load_npy(src / file, allow_pickle_types=False, mmap_mode="r")
            check_dense_shape(arr, file)
            features.append(DenseFeature(field, file, arr))
    return features
