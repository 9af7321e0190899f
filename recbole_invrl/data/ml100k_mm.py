"""``ml-100k-mm``: a real multimedia-style dataset that needs no download.

Built from the MovieLens-100K copy that ships inside RecBole (``recbole/dataset_example``):
every rating is an implicit interaction, and each movie gets four content modalities from
generic, offline encoders:

- ``genre_feat`` (19): genre multi-hot;
- ``title_feat`` (32): the title through TF-IDF (word uni/bi-grams) and truncated SVD;
- ``year_feat`` (10): release decade one-hot (1920s..1990s, and one for earlier years)
  and the scaled year;
- ``kg_feat`` (64): the movie's knowledge-graph neighbourhood (``ml-100k.kg`` via
  ``ml-100k.link``: people, studios, subjects, ...) as a bag of ``relation=entity`` tokens
  through TF-IDF and truncated SVD; movies without a link get zeros.

``python -m recbole_invrl.data.ml100k_mm [--out atomic_data]`` builds it; the run script
builds it on first use. Output is written to a temporary folder and renamed into place.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd
import recbole
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from recbole_invrl.data.convert.atomic import atomic_output_dir

NAME = "ml-100k-mm"
SOURCE_DIR = Path(recbole.__file__).resolve().parent / "dataset_example" / "ml-100k"
DECADES = np.arange(1920, 2000, 10)
SEED = 0


# What ``build`` writes into ``<out>/ml-100k-mm/`` (and the feature cache a run adds beside them).
OWN_FILES = frozenset({f"{NAME}.inter", f"{NAME}.item", ".cache"})


def build(out: str | Path) -> Path:
    """Write ``<out>/ml-100k-mm/`` (``.inter`` and ``.item``) and return the folder."""
    out = Path(out)
    items = _read_atomic(SOURCE_DIR / "ml-100k.item")
    inter = _read_atomic(SOURCE_DIR / "ml-100k.inter")
    features = {
        "genre_feat": genre_multi_hot(items["class"]),
        "title_feat": text_embedding(items["movie_title"].fillna(""), 32, ngram_range=(1, 2)),
        "year_feat": year_encoding(items["release_year"]),
        "kg_feat": text_embedding(knowledge_graph_bags(items["item_id"]), 64),
    }
    with atomic_output_dir(out, NAME) as tmp:
        inter.to_csv(tmp / f"{NAME}.inter", sep="\t", index=False, header=_atomic_header(inter, {
            "user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}))
        _write_item_file(tmp / f"{NAME}.item", items["item_id"].to_numpy(), features)
    return out / NAME


def genre_multi_hot(genres: pd.Series) -> np.ndarray:
    """Space-separated genre lists -> multi-hot matrix over the sorted genre vocabulary."""
    lists = genres.fillna("").str.split()
    vocabulary = sorted({g for gs in lists for g in gs})
    index = {g: k for k, g in enumerate(vocabulary)}
    rows = np.repeat(np.arange(len(lists)), lists.str.len().to_numpy())
    cols = np.array([index[g] for gs in lists for g in gs], dtype=np.int64)
    matrix = np.zeros((len(lists), len(vocabulary)), dtype=np.float32)
    matrix[rows, cols] = 1.0
    return matrix


def text_embedding(documents: pd.Series, dim: int, ngram_range=(1, 1)) -> np.ndarray:
    """TF-IDF then truncated SVD: a generic offline text encoder. Empty documents -> zeros."""
    documents = documents.fillna("").astype(str)
    tfidf = TfidfVectorizer(
        token_pattern=r"[^\s]+", ngram_range=ngram_range, sublinear_tf=True, lowercase=True
    ).fit_transform(documents)
    dim = min(dim, tfidf.shape[1] - 1)
    return TruncatedSVD(n_components=dim, random_state=SEED).fit_transform(tfidf).astype(np.float32)


def year_encoding(years: pd.Series) -> np.ndarray:
    """Decade one-hot (1920s..1990s, the last column catches earlier years) and scaled year."""
    year = pd.to_numeric(years, errors="coerce").to_numpy()
    known = ~np.isnan(year)
    decade = np.clip(((year[known] - DECADES[0]) // 10).astype(np.int64), -1, len(DECADES) - 1)
    matrix = np.zeros((len(year), len(DECADES) + 2), dtype=np.float32)
    matrix[np.flatnonzero(known), np.where(decade < 0, len(DECADES), decade)] = 1.0
    matrix[known, -1] = (year[known] - 1900.0) / 100.0
    return matrix


def knowledge_graph_bags(item_ids: pd.Series) -> pd.Series:
    """Each item's KG neighbourhood as a document of ``relation=entity`` tokens."""
    link = _read_atomic(SOURCE_DIR / "ml-100k.link")
    kg = _read_atomic(SOURCE_DIR / "ml-100k.kg")
    outgoing = kg.rename(columns={"head_id": "entity_id", "tail_id": "other"})
    incoming = kg.rename(columns={"tail_id": "entity_id", "head_id": "other"})
    incoming["relation_id"] = "~" + incoming["relation_id"]
    edges = pd.concat([outgoing, incoming], ignore_index=True).merge(link, on="entity_id")
    edges["token"] = edges["relation_id"] + "=" + edges["other"]
    bags = edges.groupby("item_id")["token"].agg(" ".join)
    return item_ids.map(bags).fillna("")


def _read_atomic(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df.replace("", np.nan)


def _atomic_header(df: pd.DataFrame, types: dict[str, str]) -> list[str]:
    return [f"{c}:{types[c]}" for c in df.columns]


def _float_rows(matrix: np.ndarray) -> list[str]:
    buffer = io.StringIO()
    np.savetxt(buffer, matrix, fmt="%.6g", delimiter=" ")
    return buffer.getvalue().splitlines()


def _write_item_file(path: Path, item_ids: np.ndarray, features: dict[str, np.ndarray]) -> None:
    table = pd.DataFrame({"item_id:token": item_ids})
    for name, matrix in features.items():
        table[f"{name}:float_seq"] = _float_rows(matrix)
    table.to_csv(path, sep="\t", index=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="atomic_data", help="parent folder of ml-100k-mm/")
    folder = build(parser.parse_args(argv).out)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
