"""``MultimodalDataset``: RecBole's Dataset with fast, checked parsing of feature columns.

RecBole parses ``float_seq`` cells one Python float at a time (NOTES §5: about 6 s per
10,000 x 2,048) and reports a bad value without naming its file, field or row. This
subclass reads atomic files with pandas' C parser, parses each ``float_seq`` column with
one vectorised numpy call, checks widths and finiteness, and names the file, field and
line of anything it cannot use.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType, set_color

HEADER_LINES = 1  # atomic files: line 1 is the header, data starts on line 2


class FeatureFileError(ValueError):
    """An atomic feature file that cannot be used as it is."""


class MultimodalDataset(Dataset):
    """RecBole ``Dataset`` with vectorised ``float_seq`` parsing and precise errors."""

    def _load_feat(self, filepath, source):
        load_col, unload_col = self._get_load_and_unload_col(source)
        if load_col == set():
            return None
        self.logger.debug(set_color(f"Loading feature from [{filepath}] (source: [{source}]).", "green"))
        separator = self.config["field_separator"]
        header = _read_header(filepath, self.config["encoding"], separator)
        fields = self._select_fields(filepath, source, header, load_col, unload_col)
        if not fields:
            self.logger.warning(f"No columns has been loaded from [{source}]")
            return None
        df = pd.read_csv(
            filepath,
            sep=separator,
            usecols=[f"{name}:{ftype.value}" for name, ftype in fields],
            dtype=str,
            keep_default_na=False,
            encoding=self.config["encoding"],
            engine="c",
        )
        df.columns = [name for name, _ in fields]
        for name, ftype in fields:
            df[name] = self._parse_column(df[name], ftype, filepath, name)
        return df

    def _select_fields(self, filepath, source, header, load_col, unload_col):
        """Header fields to load, registering their types; errors on unknown names or types."""
        fields = []
        for name, type_name in header:
            if load_col is not None and name not in load_col:
                continue
            if unload_col is not None and name in unload_col:
                continue
            try:
                ftype = FeatureType(type_name)
            except ValueError:
                raise FeatureFileError(
                    f"{filepath}: field '{name}' has type '{type_name}'; expected one of "
                    f"{[t.value for t in FeatureType]}"
                ) from None
            if isinstance(source, FeatureSource) or source != "link":
                self.field2source[name] = source
                self.field2type[name] = ftype
                if not ftype.value.endswith("seq"):
                    self.field2seqlen[name] = 1
                if "float" in ftype.value:
                    self.field2bucketnum[name] = 2
            fields.append((name, ftype))
        if load_col is not None:
            missing = sorted(set(load_col) - {name for name, _ in header})
            if missing:
                source_name = source.value if isinstance(source, FeatureSource) else source
                raise FeatureFileError(
                    f"{filepath}: load_col.{source_name} names field(s) {missing} that the file "
                    f"does not have (its header: {[f'{n}:{t}' for n, t in header]})"
                )
        return fields

    def _parse_column(self, cells: pd.Series, ftype: FeatureType, filepath, field):
        if ftype == FeatureType.FLOAT:
            return _parse_float(cells, filepath, field)
        if ftype == FeatureType.TOKEN:
            return cells.replace("", np.nan)
        separator = self.config["seq_separator"]
        if ftype == FeatureType.TOKEN_SEQ:
            parsed = [np.array(cell.split(separator) if cell else [], dtype=str) for cell in cells]
            parsed = [seq[seq != ""] for seq in parsed]
        else:
            matrix, lengths = parse_float_seq(cells.to_numpy(dtype=object), separator, filepath, field)
            parsed = [row[:n] for row, n in zip(matrix, lengths)]
        max_len = max(map(len, parsed), default=0)
        seq_len = (self.config["seq_len"] or {}).get(field)
        self.field2seqlen[field] = min(seq_len, max_len) if seq_len else max_len
        if seq_len:
            parsed = [seq[:seq_len] for seq in parsed]
        return pd.Series(parsed, index=cells.index, dtype=object)

    def _dataframe_to_interaction(self, data):
        """Stack equal-width ``float_seq`` columns in one copy instead of padding row by row."""
        dense = [
            k
            for k in data
            if self.field2type[k] == FeatureType.FLOAT_SEQ
            and k not in self.config["numerical_features"]
        ]
        converted = super()._dataframe_to_interaction(data.drop(columns=dense))
        stacked = {k: _stack_rows(data[k].to_numpy(), self.field2seqlen[k]) for k in dense}
        return Interaction({**converted.interaction, **stacked})


def _read_header(filepath, encoding: str, separator: str) -> list[tuple[str, str]]:
    with open(filepath, "r", encoding=encoding) as f:
        header = f.readline().rstrip("\r\n")
    columns = []
    for column in header.split(separator):
        name, sep, type_name = column.partition(":")
        if not sep or not name:
            raise FeatureFileError(
                f"{filepath}: header column '{column}' is not of the form name:type "
                f"(line 1 must name every column, e.g. item_id:token)"
            )
        columns.append((name, type_name))
    return columns


def _parse_float(cells: pd.Series, filepath, field) -> pd.Series:
    values = pd.to_numeric(cells.replace("", np.nan), errors="coerce")
    bad = values.isna() & cells.ne("")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise FeatureFileError(
            f"{filepath}: field '{field}' (float) line {row + 1 + HEADER_LINES}: "
            f"'{cells.iloc[row]}' is not a number"
        )
    return values


def parse_float_seq(
    cells: np.ndarray, separator: str, filepath, field: str
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column of ``float_seq`` cells into a float32 matrix and per-row lengths.

    Every non-empty row must have the same number of values (one modality has one width);
    empty rows become zeros (length 0). Values must be finite.
    """
    cells = np.array([c.strip() if isinstance(c, str) else "" for c in cells], dtype=object)
    filled = np.array([len(c) > 0 for c in cells], dtype=bool)
    lengths = np.zeros(len(cells), dtype=np.int64)
    if filled.any():
        counted = pd.Series(cells[filled]).str.count(re.escape(separator)).to_numpy() + 1
        lengths[filled] = counted
    flat = _fromstring(separator.join(cells[filled]), separator)
    if flat is None or flat.size != lengths.sum():
        flat, lengths = _parse_rows_one_by_one(cells, separator, filepath, field)
    width = int(lengths.max(initial=0))
    ragged = np.flatnonzero((lengths != width) & (lengths != 0))
    if ragged.size:
        row = int(ragged[0])
        raise FeatureFileError(
            f"{filepath}: field '{field}' (float_seq) line {row + 1 + HEADER_LINES} has "
            f"{lengths[row]} values; expected {width} like the other rows"
        )
    matrix = np.zeros((len(cells), width), dtype=np.float32)
    if width:
        matrix[lengths == width] = flat.reshape(-1, width)
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        raise FeatureFileError(
            f"{filepath}: field '{field}' (float_seq) line {row + 1 + HEADER_LINES} holds "
            f"NaN or inf ({bad_rows.size} such rows); features must be finite"
        )
    empty = int((lengths == 0).sum())
    if empty and width:
        warnings.warn(f"{filepath}: field '{field}': {empty} empty rows are read as zero vectors")
    return matrix, lengths


def _fromstring(text: str, separator: str) -> np.ndarray | None:
    """numpy's C text parser; ``None`` if it stopped early (a value it could not read)."""
    if not text:
        return np.zeros(0, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=np.float64, sep=" " if separator.isspace() else separator)
        except (DeprecationWarning, ValueError):
            return None


def _parse_rows_one_by_one(cells, separator, filepath, field):
    """Slow path, taken only when the fast parse disagrees: finds the offending line."""
    rows = []
    for row, cell in enumerate(cells):
        tokens = [t for t in cell.split(separator) if t.strip()] if cell else []
        try:
            rows.append(np.array(tokens, dtype=np.float64))
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise FeatureFileError(
                f"{filepath}: field '{field}' (float_seq) line {row + 1 + HEADER_LINES}: "
                f"'{bad}' is not a number"
            ) from None
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    flat = np.concatenate(rows) if rows else np.zeros(0)
    return flat, lengths


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _stack_rows(rows: np.ndarray, width: int) -> torch.Tensor:
    """Rows of equal ``width`` (or empty, read as zeros) as one float tensor."""
    matrix = np.zeros((len(rows), width), dtype=np.float32)
    full = np.fromiter((len(r) == width for r in rows), dtype=bool, count=len(rows))
    if full.any() and width:
        matrix[full] = np.stack(rows[full])
    return torch.from_numpy(matrix)
