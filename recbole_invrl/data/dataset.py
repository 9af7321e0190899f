"""``MultimodalDataset``: RecBole's Dataset with fast, checked and cached feature loading.

RecBole parses ``float_seq`` cells one Python float at a time (about a minute
for Kwai's 86,483 x 2,048 item file) and reports a bad value without naming its file,
field or row. This subclass

* reads an atomic file with ``float_seq`` columns as bytes, in chunks of whole lines,
  and parses the numbers of each chunk with a few vectorised numpy passes straight into
  one preallocated float32 matrix per column (``float_text.py``);
* checks widths and finiteness and names the file, field and line of anything it cannot
  use;
* caches the parsed columns as ``.npy`` files (``feature_cache.py``), so a second load of
  an unchanged file with the same settings skips the text entirely.

Files without ``float_seq`` columns (``.inter`` files) are read with pandas' C parser.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType, ModelType, set_color

from recbole_invrl import shims  # noqa: F401 - RecBole's Dataset on pandas 3
from recbole_invrl.data import feature_cache
from recbole_invrl.data.float_text import (  # FeatureFileError, parse_float_seq: re-exported
    HEADER_LINES,
    FeatureFileError,
    _DenseColumn,
    _Layout,
    _read_dense_file,
    parse_float_seq,
)

STACK_ROWS = 4096  # rows copied per step when stacking a float_seq column

Columns = dict[str, dict[str, np.ndarray]]  # field -> named arrays (see _encode_column)


class MultimodalDataset(Dataset):
    """RecBole ``Dataset`` with vectorised, cached ``float_seq`` parsing and precise errors."""

    def join(self, df):
        """RecBole copies the user and item features into every batch. A general
        recommender scores from ids and reads content from the dataset itself (UltraGCN-MM,
        InvRL, VBPR; RecBole's general models read no features), so its batches skip the
        copy: at Kwai's size the item features of one batch of 512 are 4 MiB per step."""
        if self.config["MODEL_TYPE"] == ModelType.GENERAL:
            return df
        return super().join(df)

    def _load_feat(self, filepath, source):
        load_col, unload_col = self._get_load_and_unload_col(source)
        if load_col == set():
            return None
        message = f"Loading feature from [{filepath}] (source: [{source}])."
        self.logger.debug(set_color(message, "green"))
        header = _read_header(filepath, self.config["encoding"], self.config["field_separator"])
        fields = self._select_fields(filepath, source, header, load_col, unload_col)
        if not fields:
            self.logger.warning(f"No columns has been loaded from [{source}]")
            return None
        if any(ftype == FeatureType.FLOAT_SEQ for _, ftype in fields):
            return self._load_dense_file(filepath, source, header, fields)
        return self._read_with_pandas(filepath, header, fields)

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

    # -- files without float_seq columns ------------------------------------------------

    def _read_with_pandas(self, filepath, header, fields) -> pd.DataFrame:
        """Every column is read (pandas' ``usecols`` drops a row's extra fields without a word),
        then the loaded ones kept; a row with more fields than the header is an error."""
        try:
            with warnings.catch_warnings():  # an extra field on the first row is only a warning
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(
                    filepath,
                    sep=self.config["field_separator"],
                    dtype=str,
                    keep_default_na=False,
                    encoding=self.config["encoding"],
                    engine="c",
                    index_col=False,
                )
        except pd.errors.ParserWarning:
            raise FeatureFileError(f"{filepath}: line {1 + HEADER_LINES} has more fields than the "
                                   f"{len(header)} the header names") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise FeatureFileError(f"{filepath}: {' '.join(str(err).split())} (line 1 is the header)") from None
        df = df[[f"{name}:{ftype.value}" for name, ftype in fields]]
        df.columns = [name for name, _ in fields]
        self._refuse_missing_ids(df, filepath)
        for name, ftype in fields:
            df[name] = self._parse_column(df[name], ftype, filepath, name)
        return df

    def _refuse_missing_ids(self, df: pd.DataFrame, filepath) -> None:
        """A row without its user or item id (an empty cell, or a short last line) names its
        line; RecBole would drop it without a word."""
        for field in (self.uid_field, self.iid_field):
            if field in df.columns:
                empty = (df[field].isna() | (df[field] == "")).to_numpy()
                if empty.any():
                    row = int(np.flatnonzero(empty)[0])
                    raise FeatureFileError(f"{filepath}: line {row + 1 + HEADER_LINES}, field '{field}': "
                                           f"expected an id, got an empty cell ({int(empty.sum())} such rows)")

    def _parse_column(self, cells: pd.Series, ftype: FeatureType, filepath, field):
        if ftype == FeatureType.FLOAT:
            return _parse_float(cells, filepath, field)
        if ftype == FeatureType.TOKEN:
            return cells.replace("", np.nan)
        parts = _encode_column(cells.to_numpy(dtype=object), ftype, filepath, field, self.config)
        columns = {field: parts}
        self.field2seqlen.update(self._seq_lengths({field: ftype}, columns))
        return _decode_column(columns[field], ftype, cells.index)

    # -- files with float_seq columns: parse (or load the cache), then build the frame ----

    def _load_dense_file(self, filepath, source, header, fields) -> pd.DataFrame:
        settings = self._cache_settings(source, fields)
        cache = feature_cache.cache_for(filepath, self.config, settings, self.logger)
        frame = self._frame_from_cache(cache, fields) if cache is not None else None
        if frame is None:
            frame = self._parse_and_cache(filepath, header, fields, cache)
        return frame

    def _parse_and_cache(self, filepath, header, fields, cache) -> pd.DataFrame:
        """Parse the file; with a cache, write it and go on from the memory-mapped entry, so
        the parsed matrices are freed before ``_stack_rows`` copies the rows into item order."""
        columns = self._parse_dense_file(filepath, header, fields)
        if cache is None or cache.save(columns) is None:
            return self._frame(columns, fields)
        del columns
        frame = self._frame_from_cache(cache, fields)
        if frame is None:  # the entry just written did not read back: keep the parse
            frame = self._frame(self._parse_dense_file(filepath, header, fields), fields)
        return frame

    def _frame_from_cache(self, cache: feature_cache.FeatureCache, fields) -> pd.DataFrame | None:
        columns = cache.load()
        if columns is None:
            return None
        try:
            frame = self._frame(columns, fields)
        except (KeyError, ValueError, TypeError) as err:  # a tampered entry: parse again
            self.logger.warning(f"feature cache {cache.entry} is inconsistent ({err!r}); rebuilt")
            cache.discard()
            return None
        message = f"Loaded parsed features of [{cache.source}] from {cache.entry}"
        self.logger.info(set_color(message, "green"))
        return frame

    def _frame(self, columns: Columns, fields) -> pd.DataFrame:
        """The DataFrame of the parsed (or cached) columns; sets their ``field2seqlen``."""
        series = {name: _decode_column(columns[name], ftype) for name, ftype in fields}
        rows = {name: len(column) for name, column in series.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(f"columns of different lengths: {rows}")
        seqlens = self._seq_lengths(dict(fields), columns)
        frame = pd.DataFrame(series)
        self.field2seqlen.update(seqlens)
        return frame

    def _cache_settings(self, source, fields) -> dict:
        """Everything besides the file itself that changes what parsing returns."""
        seq_len = self.config["seq_len"] or {}
        load_col, unload_col = self._get_load_and_unload_col(source)
        return {
            "source": source.value if isinstance(source, FeatureSource) else str(source),
            "fields": [[name, ftype.value] for name, ftype in fields],
            "load_col": sorted(load_col) if load_col is not None else None,
            "unload_col": sorted(unload_col) if unload_col is not None else None,
            "field_separator": self.config["field_separator"],
            "seq_separator": self.config["seq_separator"],
            "seq_len": {name: seq_len[name] for name, _ in fields if name in seq_len},
            "encoding": self.config["encoding"],
        }

    def _parse_dense_file(self, filepath, header, fields) -> Columns:
        layout = _Layout.from_config(filepath, header, fields, self.config)
        text_cells = {name: [] for name in layout.text_fields}
        size = os.path.getsize(filepath)
        dense = {name: _DenseColumn(filepath, name, size) for name in layout.dense_fields}
        _read_dense_file(filepath, layout, dense, text_cells)
        columns = {}
        for name, ftype in fields:
            if ftype == FeatureType.FLOAT_SEQ:
                matrix, lengths = dense[name].finish()
                columns[name] = _truncate_dense(matrix, lengths, self._seq_len(name))
            else:
                cells = np.array(text_cells[name], dtype=object)
                columns[name] = _encode_column(cells, ftype, filepath, name, self.config)
        return columns

    def _seq_len(self, field: str) -> int | None:
        return (self.config["seq_len"] or {}).get(field)

    def _seq_lengths(self, types: dict, columns: Columns) -> dict[str, int]:
        """RecBole's ``field2seqlen`` for the sequence columns: longest row, capped by seq_len."""
        seqlens = {}
        for name, parts in columns.items():
            if types[name] in (FeatureType.TOKEN_SEQ, FeatureType.FLOAT_SEQ):
                longest = int(parts["lengths"].max(initial=0))
                seq_len = self._seq_len(name)
                seqlens[name] = min(seq_len, longest) if seq_len else longest
        return seqlens

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


# -- columns: text cells <-> arrays (what the cache stores) <-> DataFrame columns ---------


def _encode_column(
    cells: np.ndarray, ftype: FeatureType, filepath, field: str, config
) -> dict[str, np.ndarray]:
    """A non-float_seq column as plain arrays: strings, floats or flat tokens + row lengths."""
    cells = np.array([c if isinstance(c, str) else "" for c in cells], dtype=object)
    if ftype == FeatureType.FLOAT:
        values = _parse_float(pd.Series(cells, dtype=object), filepath, field)
        return {"values": values.to_numpy(np.float64)}
    if ftype == FeatureType.TOKEN:
        return {"strings": _unicode_array(cells)}
    seq_len = (config["seq_len"] or {}).get(field)
    if ftype == FeatureType.TOKEN_SEQ:
        return _split_token_seq(cells, config["seq_separator"], seq_len)
    matrix, lengths = parse_float_seq(cells, config["seq_separator"], filepath, field)
    return _truncate_dense(matrix, lengths, seq_len)


def _decode_column(parts: dict[str, np.ndarray], ftype: FeatureType, index=None) -> pd.Series:
    """The DataFrame column RecBole expects: str tokens (NaN if empty), floats, or row arrays."""
    if ftype == FeatureType.FLOAT:
        return pd.Series(parts["values"], index=index)
    if ftype == FeatureType.TOKEN:
        strings = parts["strings"]
        tokens = strings.astype(object)
        tokens[strings == ""] = np.nan
        return pd.Series(tokens, index=index, dtype=object)
    if ftype == FeatureType.TOKEN_SEQ:
        ends = np.cumsum(parts["lengths"])
        rows = np.split(parts["tokens"], ends[:-1]) if len(ends) else []
    else:
        matrix, lengths = np.asarray(parts["matrix"]), parts["lengths"]  # rows: views, not memmaps
        if len(matrix) != len(lengths) or (lengths > matrix.shape[1]).any():
            raise ValueError(f"a {matrix.shape} matrix with {len(lengths)} row lengths")
        full = bool((lengths == matrix.shape[1]).all())
        rows = list(matrix) if full else [row[:n] for row, n in zip(matrix, lengths.tolist())]
    return pd.Series(rows, index=index, dtype=object)


def _unicode_array(cells) -> np.ndarray:
    array = np.array(list(cells), dtype=str)
    return array if array.size else np.zeros(0, dtype="<U1")


def _split_token_seq(
    cells: np.ndarray, separator: str, seq_len: int | None
) -> dict[str, np.ndarray]:
    """Words of each cell (empty words dropped, rows cut to seq_len) as flat tokens + lengths."""
    counts = np.fromiter((c.count(separator) + 1 for c in cells), dtype=np.int64, count=len(cells))
    tokens = _unicode_array(separator.join(cells).split(separator) if len(cells) else [])
    row = np.repeat(np.arange(len(cells)), counts)
    keep = tokens != ""
    tokens, row = tokens[keep], row[keep]
    lengths = np.bincount(row, minlength=len(cells)).astype(np.int64)
    if seq_len:
        rank = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        tokens = tokens[rank < seq_len]
        lengths = np.minimum(lengths, seq_len)
    return {"tokens": tokens, "lengths": lengths}


def _truncate_dense(
    matrix: np.ndarray, lengths: np.ndarray, seq_len: int | None
) -> dict[str, np.ndarray]:
    if seq_len:
        matrix, lengths = matrix[:, :seq_len], np.minimum(lengths, seq_len)
    return {"matrix": matrix, "lengths": lengths}


def _read_header(filepath, encoding: str, separator: str) -> list[tuple[str, str]]:
    try:
        with open(filepath, "rb") as f:
            header = f.readline().decode(encoding or "utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise FeatureFileError(f"{filepath}: line 1 is not {encoding or 'utf-8'} text ({err.reason} at byte {err.start})") from None
    columns = []
    for position, column in enumerate(header.split(separator), start=1):
        name, sep, type_name = column.partition(":")
        if not sep or not name:
            raise FeatureFileError(
                f"{filepath}: header column '{column}' is not of the form name:type "
                f"(line 1 must name every column, e.g. item_id:token)"
            )
        if any(name == seen for seen, _ in columns):
            raise FeatureFileError(f"{filepath}: line 1, column {position}: field '{name}' is named twice "
                                   "(each column needs its own name)")
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


def _stack_rows(rows: np.ndarray, width: int) -> torch.Tensor:
    """Rows of equal ``width`` (or empty, read as zeros) as one float tensor, copied a few
    thousand rows at a time (rows are usually views of one parsed or memory-mapped matrix).

    The rows are copied in the order they lie in memory, so each block reads one stretch of
    the source; rows from the memory-mapped feature cache have their pages released after
    every block, so the copy and the mapped file are never both resident."""
    matrix = np.zeros((len(rows), width), dtype=np.float32)
    if not width:
        return torch.from_numpy(matrix)
    full = np.flatnonzero(np.fromiter((len(r) == width for r in rows), dtype=bool, count=len(rows)))
    address = np.fromiter((r.__array_interface__["data"][0] for r in rows[full]), np.uint64, len(full))
    full = full[np.argsort(address, kind="stable")]
    mapping = feature_cache.file_mapping(rows[full[0]]) if len(full) else None
    for start in range(0, len(full), STACK_ROWS):
        index = full[start : start + STACK_ROWS]
        matrix[index] = np.stack(rows[index])
        feature_cache.release_pages(mapping)
    return torch.from_numpy(matrix)
