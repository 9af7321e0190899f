"""Shared pieces of the converters: errors, validation helpers and the atomic-file writer.

"Atomic" has two meanings here, both intended:

* RecBole's *atomic files* (``.inter`` / ``.item``, tab-separated, ``name:type`` header);
* the output folder is written *atomically*: everything goes to a temporary folder next
  to the destination, which replaces ``<out>/<name>`` only once every file is complete.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

ITEM_CHUNK_ROWS = 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConversionError(ValueError):
    """Bad input for a converter; the message is one line naming the file and row or field."""


class ConversionWarning(UserWarning):
    """Suspicious but recoverable input (duplicates, split overlap, disagreeing cross-checks)."""


def warn(message: str) -> None:
    """Emit a :class:`ConversionWarning`."""
    warnings.warn(message, ConversionWarning, stacklevel=3)


# ----------------------------------------------------------------------------- data model


@dataclass
class Split:
    """One fixed split: parallel arrays of 0-based user and item ids."""

    name: str  # train / valid / test
    source: str  # file the split came from, for messages
    users: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class DenseFeature:
    """A dense modality: one float row per item (may be a read-only memmap)."""

    field: str
    source: str
    values: np.ndarray

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    def describe(self) -> str:
        return f"{self.field} {self.width}"


@dataclass
class WordFeature:
    """A bag-of-words modality: parallel arrays (item id, word id), one entry per occurrence."""

    field: str
    source: str
    items: np.ndarray
    words: np.ndarray

    @property
    def vocab(self) -> int:
        return int(self.words.max()) + 1 if self.words.size else 0

    def describe(self) -> str:
        return f"{self.field} (word ids, vocab {self.vocab})"


Feature = DenseFeature | WordFeature


@dataclass
class ConversionSummary:
    """What was written; ``str()`` gives the one-line summary the CLI prints."""

    name: str
    path: Path
    n_users: int
    n_items: int
    split_sizes: dict[str, int]
    features: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        sizes = " / ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        feats = ", ".join(self.features)
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items; "
            f"{sizes} interactions; {feats}"
        )


# ----------------------------------------------------------------------------- validation


def validate_name(name: str) -> str:
    """Check that ``name`` is a plain folder/file stem (no path separators, no leading dot)."""
    if not _NAME_RE.match(name or ""):
        raise ConversionError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_' and '-' "
            "(no path separators, not starting with '.')"
        )
    return name


def require_files(src: Path, groups: Sequence[Sequence[str]], layout: str) -> None:
    """Raise if ``src`` is not a folder or a group of alternative files has no member present.

    ``groups`` lists alternatives: ``[["train.npy"], ["v_feat.npy", "feat_v.pt"]]`` needs
    ``train.npy`` and one of the two feature files.
    """
    if not src.is_dir():
        raise ConversionError(f"source folder {src} does not exist or is not a folder")
    missing = [g for g in groups if not any((src / f).is_file() for f in g)]
    if missing:
        wanted = ", ".join(" or ".join(g) for g in missing)
        expected = "; ".join(" | ".join(g) for g in groups)
        raise ConversionError(
            f"missing {wanted} in {src} ({layout} layout expects: {expected})"
        )


def first_bad(mask: np.ndarray) -> int | None:
    """Index of the first True in ``mask``, or None."""
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def check_ids(
    values: np.ndarray, low: int, high: int | None, describe: Callable[[int], str]
) -> None:
    """Raise ``ConversionError(describe(i))`` for the first ``i`` with value outside [low, high)."""
    mask = values < low
    if high is not None:
        mask |= values >= high
    i = first_bad(mask)
    if i is not None:
        raise ConversionError(describe(i))


def as_int_ids(values: np.ndarray, source: str, describe: Callable[[int], str]) -> np.ndarray:
    """Return ``values`` as int64, raising on a non-numeric dtype or the first non-integral entry."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind != "f":
        raise ConversionError(f"{source}: ids must be integers, got dtype {values.dtype}")
    i = first_bad(~np.isfinite(values) | (values != np.round(values)))
    if i is not None:
        raise ConversionError(f"{describe(i)} is not an integer ({values[i]!r})")
    return values.astype(np.int64)


def check_feature_rows(features: Sequence[Feature]) -> tuple[int | None, str | None]:
    """Check that all dense features have the same number of rows; return (rows, source)."""
    dense = [f for f in features if isinstance(f, DenseFeature)]
    if not dense:
        return None, None
    ref = dense[0]
    for f in dense[1:]:
        if f.values.shape[0] != ref.values.shape[0]:
            raise ConversionError(
                f"{f.source} has {f.values.shape[0]} rows but {ref.source} has "
                f"{ref.values.shape[0]}: every feature file needs one row per item"
            )
    return int(ref.values.shape[0]), ref.source


def check_dense_shape(values: np.ndarray, source: str) -> None:
    """A dense feature must be a non-empty 2-D numeric array."""
    if values.ndim != 2 or values.dtype.kind not in "fiu" or 0 in values.shape:
        raise ConversionError(
            f"{source}: expected a 2-D float array with one row per item, "
            f"got shape {tuple(values.shape)} and dtype {values.dtype}"
        )


# ----------------------------------------------------------------------------- splits


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Unique int64 key per (user, item) pair."""
    return users.astype(np.int64) * np.int64(max(n_items, 1)) + items.astype(np.int64)


def drop_duplicates(split: Split, n_items: int) -> Split:
    """Drop repeated (user, item) pairs inside one split (first one kept), with a warning."""
    keys = pair_keys(split.users, split.items, n_items)
    _, first = np.unique(keys, return_index=True)
    n_dup = len(keys) - len(first)
    if n_dup == 0:
        return split
    warn(f"{split.source}: dropped {n_dup} duplicate (user, item) interaction(s) in {split.name}")
    keep = np.sort(first)
    return Split(split.name, split.source, split.users[keep], split.items[keep])


def warn_overlaps(splits: Sequence[Split], n_items: int) -> None:
    """Warn (and keep) when the same (user, item) pair is in two splits."""
    keys = [np.unique(pair_keys(s.users, s.items, n_items)) for s in splits]
    for a in range(len(splits)):
        for b in range(a + 1, len(splits)):
            n = int(np.isin(keys[a], keys[b], assume_unique=True).sum())
            if n:
                warn(
                    f"{splits[a].name} ({splits[a].source}) and {splits[b].name} "
                    f"({splits[b].source}) share {n} (user, item) interaction(s); kept in both"
                )


# ----------------------------------------------------------------------------- writers


@contextlib.contextmanager
def atomic_output_dir(out: Path | str, name: str) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``<out>/<name>`` only if the block succeeds.

    On any exception the temporary folder is removed and ``<out>/<name>`` is untouched.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give it a normal mode
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_into_place(tmp, out / name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an existing ``dest`` is moved aside first, then deleted."""
    old_parent = None
    try:
        if dest.exists() or dest.is_symlink():
            old_parent = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.rename(dest, old_parent / dest.name)
        os.rename(tmp, dest)
    except BaseException:
        if old_parent is not None and (old_parent / dest.name).exists() and not dest.exists():
            os.rename(old_parent / dest.name, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        if old_parent is not None:
            shutil.rmtree(old_parent, ignore_errors=True)
        raise
    if old_parent is not None:
        shutil.rmtree(old_parent, ignore_errors=True)


def write_inter(path: Path, users: np.ndarray, items: np.ndarray) -> None:
    """Write a ``user_id:token / item_id:token`` atomic interaction file."""
    import pandas as pd

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("user_id:token\titem_id:token\n")
        pd.DataFrame({"u": users, "i": items}).to_csv(
            f, sep="\t", header=False, index=False, lineterminator="\n"
        )


def word_cells(feature: WordFeature, n_items: int) -> np.ndarray:
    """Per-item space-separated word ids as an object array of str ('' for items without words).

    Vectorised: tokens and separators are interleaved and joined once, then split per item.
    """
    cells = np.full(n_items, "", dtype=object)
    if feature.items.size == 0:
        return cells
    order = np.argsort(feature.items, kind="stable")
    items, words = feature.items[order], feature.words[order]
    last = np.ones(items.shape[0], dtype=bool)
    last[:-1] = items[1:] != items[:-1]
    flat = np.empty(2 * items.shape[0], dtype=object)
    flat[0::2] = words.astype(str).astype(object)
    flat[1::2] = np.where(last, "\n", " ").astype(object)
    text = "".join(flat.tolist())
    cells[items[last]] = text.split("\n")[:-1]
    return cells


def _check_finite(chunk: np.ndarray, feature: DenseFeature, start: int) -> None:
    row_ok = np.isfinite(chunk).all(axis=1)
    i = first_bad(~row_ok)
    if i is not None:
        raise ConversionError(
            f"{feature.source}: non-finite value (NaN or inf) in row {start + i} "
            f"(feature {feature.field})"
        )


def write_item(
    path: Path, n_items: int, features: Sequence[Feature], progress: bool = True
) -> None:
    """Write the ``.item`` file in chunks of rows: id, one float_seq per dense, token_seq words."""
    from tqdm import tqdm

    dense = [f for f in features if isinstance(f, DenseFeature)]
    words = [f for f in features if isinstance(f, WordFeature)]
    header = ["item_id:token"] + [
        f"{f.field}:{'float_seq' if isinstance(f, DenseFeature) else 'token_seq'}"
        for f in features
    ]
    if [f.field for f in features] != [f.field for f in dense + words]:
        raise ValueError("dense features must come before word features")
    row_fmt = "\t".join(["%d"] + [" ".join(["%.7g"] * f.width) for f in dense])
    cells = [word_cells(w, n_items) for w in words]
    bar = tqdm(total=n_items, desc=path.name, unit="items", disable=None if progress else True)
    with open(path, "w", encoding="utf-8", newline="\n") as f, bar:
        f.write("\t".join(header) + "\n")
        for start in range(0, n_items, ITEM_CHUNK_ROWS):
            stop = min(start + ITEM_CHUNK_ROWS, n_items)
            _write_item_chunk(f, start, stop, dense, cells, row_fmt)
            bar.update(stop - start)


def _write_item_chunk(
    f: io.TextIOBase,
    start: int,
    stop: int,
    dense: Sequence[DenseFeature],
    cells: Sequence[np.ndarray],
    row_fmt: str,
) -> None:
    """Rows ``start:stop`` of the item file; dense values go through one ``np.savetxt``."""
    blocks = [np.arange(start, stop, dtype=np.float64)[:, None]]
    for feat in dense:
        chunk = np.asarray(feat.values[start:stop]).astype(np.float32)
        _check_finite(chunk, feat, start)
        blocks.append(chunk.astype(np.float64))
    if not cells:
        np.savetxt(f, np.hstack(blocks), fmt=row_fmt, newline="\n")
        return
    buf = io.StringIO()
    np.savetxt(buf, np.hstack(blocks), fmt=row_fmt, newline="\n")
    lines = buf.getvalue().split("\n")[:-1]
    cols = [c[start:stop].tolist() for c in cells]
    f.write("".join("\t".join(row) + "\n" for row in zip(lines, *cols)))


def dataset_yaml(fields: Sequence[str]) -> str:
    """The dataset config written next to the atomic files."""
    cols = ", ".join(fields)
    return (
        "USER_ID_FIELD: user_id\n"
        "ITEM_ID_FIELD: item_id\n"
        "RATING_FIELD: ~\n"
        "TIME_FIELD: ~\n"
        "load_col:\n"
        "  inter: [user_id, item_id]\n"
        f"  item: [item_id, {cols}]\n"
        f"content_fields: [{cols}]\n"
        "benchmark_filename: [train, valid, test]\n"
        "normalize_all: False\n"
        "filter_inter_by_user_or_item: False\n"
        "metrics: [Precision, Recall, NDCG]\n"
        "topk: [10, 20]\n"
        "valid_metric: NDCG@10\n"
        "eval_args:\n"
        "  group_by: user\n"
        "  order: RO\n"
        "  mode: full\n"
    )


def write_dataset(
    out: Path | str,
    name: str,
    n_users: int,
    n_items: int,
    splits: Sequence[Split],
    features: Sequence[Feature],
    progress: bool = True,
    extra_files: Sequence[Path | str] = (),
) -> ConversionSummary:
    """Deduplicate/check the splits and write ``<out>/<name>/`` atomically.

    ``splits`` must be train, valid, test in this order; ``extra_files`` are copied into the
    folder before it is moved into place.
    """
    validate_name(name)
    splits = [drop_duplicates(s, n_items) for s in splits]
    warn_overlaps(splits, n_items)
    features = [f for f in features if isinstance(f, DenseFeature)] + [
        f for f in features if isinstance(f, WordFeature)
    ]
    with atomic_output_dir(out, name) as tmp:
        write_inter(
            tmp / f"{name}.inter",
            np.concatenate([s.users for s in splits]),
            np.concatenate([s.items for s in splits]),
        )
        for s in splits:
            write_inter(tmp / f"{name}.{s.name}.inter", s.users, s.items)
        write_item(tmp / f"{name}.item", n_items, features, progress)
        (tmp / f"{name}.yaml").write_text(dataset_yaml([f.field for f in features]))
        for extra in extra_files:
            shutil.copy2(extra, tmp / Path(extra).name)
    return ConversionSummary(
        name=name,
        path=Path(out) / name,
        n_users=n_users,
        n_items=n_items,
        split_sizes={s.name: len(s) for s in splits},
        features=[f.describe() for f in features],
    )
