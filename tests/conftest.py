"""Shared fixtures: a clean command line for RecBole's Config, and tiny atomic datasets."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml


@pytest.fixture(autouse=True)
def clean_argv(monkeypatch):
    """RecBole's Config reads --key=value from sys.argv; pytest's own flags must not leak in."""
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture(autouse=True)
def run_in_tmp(tmp_path, monkeypatch):
    """Checkpoints and logs (RecBole writes saved/ and log/ relative to cwd) go to tmp_path."""
    monkeypatch.chdir(tmp_path)


def _write_inter(path: Path, pairs) -> None:
    lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in pairs]
    path.write_text("\n".join(lines) + "\n")


def write_atomic_dataset(
    root: Path,
    name: str,
    train,
    valid,
    test,
    dense: dict[str, np.ndarray] | None = None,
    words: dict[str, list[list[int]]] | None = None,
    item_ids=None,
    config: dict | None = None,
) -> Path:
    """Write ``root/name/`` as RecBole benchmark files plus an item file and a dataset yaml.

    ``dense`` maps a float_seq column to an (n_items, width) matrix, ``words`` a token_seq
    column to each item's word ids; rows follow ``item_ids`` (default 1..n_items)."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", train), ("valid", valid), ("test", test)):
        _write_inter(folder / f"{name}.{split}.inter", pairs)
    dense, words = dense or {}, words or {}
    n_rows = len(next(iter(dense.values()))) if dense else len(next(iter(words.values())))
    item_ids = list(item_ids) if item_ids is not None else list(range(1, n_rows + 1))
    header = ["item_id:token"] + [f"{c}:float_seq" for c in dense] + [f"{c}:token_seq" for c in words]
    rows = []
    for r, item in enumerate(item_ids):
        cells = [str(item)]
        cells += [" ".join(f"{v:.7g}" for v in matrix[r]) for matrix in dense.values()]
        cells += [" ".join(str(w) for w in bags[r]) for bags in words.values()]
        rows.append("\t".join(cells))
    (folder / f"{name}.item").write_text("\n".join(["\t".join(header)] + rows) + "\n")
    content = list(dense) + list(words)
    dataset_yaml = {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"], "item": ["item_id"] + content},
        "content_fields": content,
        "benchmark_filename": ["train", "valid", "test"],
        "normalize_all": False,
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG", "Precision"],
        "topk": [10],
        "valid_metric": "NDCG@10",
    }
    dataset_yaml.update(config or {})
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(dataset_yaml, sort_keys=False))
    return folder


def clustered_interactions(n_users=40, n_items=60, n_clusters=2, per_user=12, seed=0):
    """Users and items in clusters; users interact only within their cluster.

    Returns (train, valid, test, item_cluster) with 1-based ids; features can reveal clusters."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    train, valid, test = [], [], []
    for u in range(1, n_users + 1):
        pool = np.flatnonzero(item_cluster == (u % n_clusters)) + 1
        chosen = rng.choice(pool, size=per_user, replace=False)
        train += [(u, int(i)) for i in chosen[:-4]]
        valid += [(u, int(i)) for i in chosen[-4:-2]]
        test += [(u, int(i)) for i in chosen[-2:]]
    return train, valid, test, item_cluster


@pytest.fixture
def atomic_dataset():
    """The ``write_atomic_dataset`` function."""
    return write_atomic_dataset


@pytest.fixture
def clustered():
    """The ``clustered_interactions`` function."""
    return clustered_interactions


def write_clusters(root: Path, n_users: int, n_items: int, per_user: int = 12,
                   extra: np.ndarray | None = None, words: list[list[int]] | None = None,
                   name: str = "clusters") -> list[tuple[int, int]]:
    """``root/<name>/``: ``clustered_interactions`` with a ``v_feat`` of the one-hot cluster,
    then ``extra`` columns (n_items rows), and ``t_words`` word ids when given; returns the
    train pairs."""
    train, valid, test, item_cluster = clustered_interactions(n_users=n_users, n_items=n_items,
                                                              per_user=per_user)
    features = np.eye(2)[item_cluster]
    if extra is not None:
        features = np.c_[features, extra]
    write_atomic_dataset(root, name, train, valid, test, dense={"v_feat": features},
                         words={"t_words": words} if words is not None else None)
    return train


@pytest.fixture
def clusters_dataset():
    """The ``write_clusters`` function."""
    return write_clusters


@pytest.fixture
def build(tmp_path):
    """``build(model, dataset, **config)`` -> (config, dataset, train, valid, test) from tmp_path."""
    from recbole.utils import init_seed

    from recbole_invrl.config import Config
    from recbole_invrl.data import create_dataset, data_preparation

    def _build(model: str, dataset: str, **config_dict):
        config_dict = {"data_path": str(tmp_path), "show_progress": False, "use_gpu": False,
                       "state": "WARNING", **config_dict}
        config = Config(model, dataset, config_dict=config_dict)
        init_seed(config["seed"], config["reproducibility"])
        data = create_dataset(config)
        train, valid, test = data_preparation(config, data)
        return config, data, train, valid, test

    return _build


@pytest.fixture
def tiny_clusters(tmp_path):
    """``tmp_path/data/tiny/``: 20 users and 30 items in 2 clusters, one-hot cluster features,
    P/R/N@10; returns ``tmp_path/data``."""
    write_clusters(tmp_path / "data", n_users=20, n_items=30, name="tiny")
    return tmp_path / "data"
