"""Synthetic spurious-feature test bed: shapes, recorded truth, determinism, atomic layout."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_invrl.data import synthetic
from recbole_invrl.data.convert import ConversionWarning, convert_grcn, load_npy

SCALE = 0.001  # minimum sizes: 50+ users, 100 items
WIDTHS = {  # paper Table 1
    "movielens": {"v_feat": 2048, "a_feat": 128, "t_feat": 100},
    "tiktok": {"v_feat": 128, "a_feat": 128},
    "kwai": {"v_feat": 2048},
}
FILES = {"v_feat.npy", "a_feat.npy", "t_feat.npy", "feat_v.pt", "feat_a.pt", "feat_t.pt"}


def load_feature(folder: Path, file: str) -> np.ndarray:
    if file.endswith(".pt"):
        return torch.load(folder / file, weights_only=True).numpy()
    return np.load(folder / file)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def r_squared(x: np.ndarray, target: np.ndarray) -> float:
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    return 1 - resid.var() / target.var()


@pytest.mark.parametrize("preset", ["movielens", "tiktok", "kwai"])
def test_grcn_layout_shapes_and_truth(tmp_path, preset):
    folder = synthetic.generate(preset, SCALE, tmp_path, seed=3)
    assert folder == tmp_path / f"synthetic-{preset}"
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left
    truth = json.loads((folder / "truth.json").read_text())
    n_users, n_items, _ = synthetic.sizes(preset, SCALE)
    counts = truth["counts"]
    assert (truth["preset"], truth["scale"], truth["seed"]) == (preset, SCALE, 3)
    assert (counts["users"], counts["items"]) == (n_users, n_items)
    assert n_users >= 50 and n_items >= 100

    train = np.load(folder / "train.npy")
    assert train.dtype == np.int64 and train.shape == (counts["train"], 2)
    assert train[:, 0].min() >= 0 and train[:, 0].max() < n_users
    assert train[:, 1].min() >= n_users and train[:, 1].max() < n_users + n_items  # offset ids
    pairs = {"train": set(map(tuple, train))}
    for split, file in (("valid", "val_full.npy"), ("test", "test_full.npy")):
        lists = load_npy(folder / file)
        assert lists.dtype == object and len(lists) == n_users
        assert [row[0] for row in lists] == list(range(n_users))
        pairs[split] = {(row[0], i) for row in lists for i in row[1:]}
        assert len(pairs[split]) == counts[split] > 0
    assert not (pairs["train"] & pairs["valid"] or pairs["train"] & pairs["test"]
                or pairs["valid"] & pairs["test"])
    total = counts["train"] + counts["valid"] + counts["test"]
    assert counts["interactions"] == total
    assert 0.05 < counts["test"] / total < 0.2 and 0.05 < counts["valid"] / total < 0.2
    assert len({u for u, _ in pairs["train"]}) == n_users  # every user has training data

    env = np.load(folder / "train_env.npy")
    assert env.shape == (counts["train"],) and set(np.unique(env)) == {0, 1}
    assert 0.6 < (env == 0).mean() < 0.8

    modalities = truth["modalities"]
    assert {f for f in modalities if f != "t_words"} == set(WIDTHS[preset])
    for fld, width in WIDTHS[preset].items():
        rec = modalities[fld]
        arr = load_feature(folder, rec["file"])
        assert arr.shape == (n_items, width) and arr.dtype == np.float32
        inv, sp = rec["invariant_dims"], rec["spurious_dims"]
        assert inv and sp and sorted(inv + sp) == list(range(width)) and rec["width"] == width
    assert {p.name for p in folder.iterdir()} & FILES == {m["file"] for m in modalities.values()}

    if preset == "tiktok":
        words = modalities["t_words"]
        assert words["file"] == "feat_t.pt" and words["embedding_width"] == 128
        assert sorted(words["preference_words"] + words["style_words"]) == list(range(words["vocab"]))
        feat_t = torch.load(folder / "feat_t.pt", weights_only=True)
        assert feat_t.dtype == torch.int64 and feat_t.shape[0] == 2
        assert feat_t[0].min() >= 0 and feat_t[0].max() < n_items
        assert feat_t[1].max() < words["vocab"]
        per_item = np.bincount(feat_t[0].numpy(), minlength=n_items)
        assert 4 < per_item.mean() < 12  # a real bag of words (~4 preference + ~4 style words)

    with warnings.catch_warnings():  # the converter accepts it without complaint
        warnings.simplefilter("error", ConversionWarning)
        summary = convert_grcn(folder, "x", tmp_path / "atomic", progress=False)
    assert summary.split_sizes == {s: counts[s] for s in ("train", "valid", "test")}


def test_story_style_drives_training_exposure_only():
    rng = np.random.default_rng(0)
    world = synthetic._sample_world(rng, 300, 600, 9000)

    def mean_style(users, items):
        return float((world.A[users] * world.S[items]).sum(1).mean() / np.sqrt(synthetic.K_STYLE))

    train_u, train_i = world.splits["train"]
    env_a = world.train_env == 0
    assert mean_style(train_u[env_a], train_i[env_a]) > 1.0  # environment A: style drives clicks
    assert mean_style(train_u[~env_a], train_i[~env_a]) < -0.3  # environment B: reversed
    for split in ("valid", "test"):
        assert abs(mean_style(*world.splits[split])) < 0.15  # preference alone

    feat = np.empty((600, 64), dtype=np.float32)
    rec = synthetic._dense(rng, world, 64, feat)
    inv, sp = rec["invariant_dims"], rec["spurious_dims"]
    assert r_squared(world.Q, feat[:, inv]) > 0.6 and r_squared(world.S, feat[:, inv]) < 0.1
    assert r_squared(world.S, feat[:, sp]) > 0.6 and r_squared(world.Q, feat[:, sp]) < 0.1

    feat_t, words = synthetic._words(rng, world, 200)
    style_words = np.isin(feat_t[1], words["style_words"])
    assert 0.3 < style_words.mean() < 0.7
    # the style words an item gets carry its style: their embeddings are not observable, so
    # check that items with similar style share style words more often than random pairs
    bags = [set(feat_t[1][(feat_t[0] == i) & style_words]) for i in range(600)]
    sim = world.S @ world.S.T
    close = np.argsort(-sim, axis=1)[:, 1]
    shared_close = np.mean([len(bags[i] & bags[close[i]]) for i in range(600)])
    shared_random = np.mean([len(bags[i] & bags[(i + 7) % 600]) for i in range(600)])
    assert shared_close > 2 * shared_random


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = synthetic.generate("tiktok", SCALE, tmp_path / "a", seed=5)
    b = synthetic.generate("tiktok", SCALE, tmp_path / "b", seed=5)
    c = synthetic.generate("tiktok", SCALE, tmp_path / "c", seed=6)
    bytes_a = folder_bytes(a)
    assert bytes_a == folder_bytes(b)
    bytes_c = folder_bytes(c)
    assert bytes_a.keys() == bytes_c.keys()
    for file in ("train.npy", "val_full.npy", "feat_v.pt", "feat_t.pt", "truth.json"):
        assert bytes_a[file] != bytes_c[file], file

    x = synthetic.generate("kwai", SCALE, tmp_path / "x", layout="atomic", seed=1, name="k")
    y = synthetic.generate("kwai", SCALE, tmp_path / "y", layout="atomic", seed=1, name="k")
    assert folder_bytes(x) == folder_bytes(y)


def test_atomic_layout_is_loadable(tmp_path):
    grcn = synthetic.generate("tiktok", SCALE, tmp_path / "grcn", seed=2)
    folder = synthetic.generate("tiktok", SCALE, tmp_path / "atomic", layout="atomic", seed=2)
    name = folder.name
    assert sorted(p.name for p in (tmp_path / "atomic").iterdir()) == [name]
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["layout"] == "atomic"
    np.testing.assert_array_equal(np.load(folder / "train_env.npy"), np.load(grcn / "train_env.npy"))
    counts = truth["counts"]

    train = pd.read_csv(folder / f"{name}.train.inter", sep="\t")
    src_train = np.load(grcn / "train.npy")
    np.testing.assert_array_equal(train["user_id:token"], src_train[:, 0])
    np.testing.assert_array_equal(train["item_id:token"], src_train[:, 1] - counts["users"])
    for split in ("valid", "test"):
        assert len(pd.read_csv(folder / f"{name}.{split}.inter", sep="\t")) == counts[split]
    item = pd.read_csv(folder / f"{name}.item", sep="\t", dtype=str, keep_default_na=False)
    assert list(item.columns) == [
        "item_id:token", "v_feat:float_seq", "a_feat:float_seq", "t_words:token_seq"
    ]
    assert len(item) == counts["items"]
    v = np.array([np.array(c.split(), dtype=np.float32) for c in item["v_feat:float_seq"]])
    np.testing.assert_allclose(v, load_feature(grcn, "feat_v.pt"), rtol=1e-6)

    pytest.importorskip("recbole")
    from recbole.data import create_dataset

    from recbole_invrl.config import Config  # RecBole's, with NumPy 2's removed aliases restored

    config = Config(
        model="BPR", dataset=name, config_file_list=[str(folder / f"{name}.yaml")],
        config_dict={"data_path": str(tmp_path / "atomic"), "show_progress": False, "state": "ERROR"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RecBole's own pandas FutureWarnings
        dataset = create_dataset(config)
        splits = dataset.build()
    assert [len(s) for s in splits] == [counts["train"], counts["valid"], counts["test"]]
    assert dataset.item_num == counts["items"] + 1  # + padding id
    assert dataset.item_feat["v_feat"].shape == (counts["items"] + 1, 128)
    assert dataset.item_feat["t_words"].shape[0] == counts["items"] + 1


def test_cli(tmp_path, capsys):
    assert synthetic.main(["--preset", "kwai", "--scale", str(SCALE), "--out", str(tmp_path),
                           "--layout", "atomic", "--seed", "4", "--name", "kw"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kw: 50 users, 100 items; train ")
    assert (tmp_path / "kw" / "kw.item").is_file() and (tmp_path / "kw" / "truth.json").is_file()
    assert synthetic.main(["--preset", "kwai", "--scale", "2", "--out", str(tmp_path)]) == 2
    assert "error: --scale must be in (0, 1]" in capsys.readouterr().err


def test_user_environments_give_every_user_one_environment_in_its_share():
    structure = synthetic.STRUCTURES["user-env"]
    world = synthetic._sample_world(np.random.default_rng(1), 400, 800, 12000, structure)
    users, items = world.splits["train"]
    envs_per_user = pd.Series(world.train_env).groupby(users).nunique()
    assert (envs_per_user == 1).all()  # all of a user's training interactions in one environment
    user_env = pd.Series(world.train_env).groupby(users).first()
    assert 0.72 < (user_env == 0).mean() < 0.88  # 80 % of users boosted
    style = (world.A[users] * world.S[items]).sum(1)  # rank one: a product of two scalars
    assert world.A.shape[1] == world.S.shape[1] == 1
    assert style[world.train_env == 0].mean() > 1.0 and abs(style[world.train_env == 1].mean()) < 0.2
    for split in ("valid", "test"):
        split_users, split_items = world.splits[split]
        assert abs((world.A[split_users] * world.S[split_items]).sum(1).mean()) < 0.2


@pytest.mark.parametrize("name, spurious", [("one-modality", {"v_feat": 32, "a_feat": 0, "t_feat": 0}),
                                            ("weak-boost", {"v_feat": 16, "a_feat": 16, "t_feat": 0}),
                                            ("strong-user", {"v_feat": 0, "a_feat": 48, "t_feat": 48})])
def test_structures_plant_style_in_the_modalities_they_name(tmp_path, name, spurious):
    folder = synthetic.generate("dense3", 0.1, tmp_path, seed=2, structure=name)
    assert folder.name == f"planted-{name}"
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["generator"]["structure"] == name
    for field, count in spurious.items():
        dims = truth["modalities"][field]
        assert len(dims["spurious_dims"]) == count and len(dims["invariant_dims"]) == 64 - count
        assert sorted(dims["spurious_dims"] + dims["invariant_dims"]) == list(range(64))
    environments = truth["generator"]["environments"]
    assert [e["style_weight"] for e in environments] == [w for _, _, w in synthetic.STRUCTURES[name].environments]


def test_a_structure_needs_the_modalities_it_names():
    with pytest.raises(synthetic.ConversionError, match="plants style in a_feat.*preset 'kwai' lacks"):
        synthetic.generate("kwai", SCALE, "/nonexistent", structure="weak-boost")
    with pytest.raises(synthetic.ConversionError, match="unknown structure 'nope'"):
        synthetic.generate("kwai", SCALE, "/nonexistent", structure="nope")
