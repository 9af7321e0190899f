import numpy as np
import pandas as pd

from recbole_invrl.data import ml100k_mm

EXPECTED_WIDTHS = {"genre_feat": 19, "title_feat": 32, "year_feat": 10, "kg_feat": 64}


def test_builds_with_the_stated_columns(tmp_path):
    folder = ml100k_mm.build(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k-mm"]  # no temp folder left
    inter = pd.read_csv(folder / "ml-100k-mm.inter", sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert len(inter) == 100_000 and inter["user_id:token"].nunique() == 943

    items = pd.read_csv(folder / "ml-100k-mm.item", sep="\t")
    assert list(items.columns) == ["item_id:token"] + [f"{f}:float_seq" for f in EXPECTED_WIDTHS]
    assert len(items) == 1682
    for field, width in EXPECTED_WIDTHS.items():
        matrix = np.array([row.split() for row in items[f"{field}:float_seq"]], dtype=float)
        assert matrix.shape == (1682, width) and np.isfinite(matrix).all()
    toy_story = items[items["item_id:token"] == 1].iloc[0]
    genres = np.array(toy_story["genre_feat:float_seq"].split(), dtype=float)
    assert genres.sum() == 3  # Animation, Children's, Comedy
    year = np.array(toy_story["year_feat:float_seq"].split(), dtype=float)
    assert year[7] == 1.0 and abs(year[-1] - 0.95) < 1e-6  # the 1990s, (1995 - 1900) / 100


def test_build_is_deterministic(tmp_path):
    first = ml100k_mm.build(tmp_path / "a") / "ml-100k-mm.item"
    second = ml100k_mm.build(tmp_path / "b") / "ml-100k-mm.item"
    assert first.read_bytes() == second.read_bytes()


def test_the_automatic_build_never_deletes_a_file_it_did_not_write(tmp_path):
    import pytest

    from recbole_invrl.config import Config
    from recbole_invrl.data import MissingDatasetError
    from recbole_invrl.data.utils import ensure_dataset_files

    folder = tmp_path / "ml-100k-mm"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "ml-100k-mm.item").write_text("half a build")
    config = Config("UltraGCNMM", "ml-100k-mm", config_dict={"data_path": str(tmp_path)})
    with pytest.raises(MissingDatasetError, match=r"holds others \(notes.txt\).*move them away"):
        ensure_dataset_files(config)
    assert (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()  # only the build's own (partial) files left: rebuilt in place
    ensure_dataset_files(config)
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k-mm.inter", "ml-100k-mm.item"]
