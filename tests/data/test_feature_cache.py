"""The binary cache of parsed float_seq files."""
import json
import os

import numpy as np
import pytest
import torch

import recbole_invrl.data.dataset as dataset_module
from recbole_invrl.data import feature_cache

FEATURES = np.array([[0.25, -1.5, 3.0], [0.5, 0.125, -2.0], [4.0, 1e-5, 0.75], [-0.0625, 8.0, 2.5]])


def _tiny(atomic_dataset, tmp_path, dense=None, **kwargs):
    dense = {"v_feat": FEATURES} if dense is None else dense
    pairs = [(1, 1), (2, 2), (1, 3), (2, 4)]
    return atomic_dataset(tmp_path, "tiny", pairs, [(1, 2)], [(2, 3)], dense=dense, **kwargs)


def _entries(folder):
    cache = folder / ".cache"
    if not cache.exists():
        return []
    return sorted(p for p in cache.iterdir() if not p.name.startswith(".tmp-"))


def _item_features(data) -> dict:
    feat = data.get_item_feature()
    return {name: feat[name].clone() for name in feat.interaction}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def parses(monkeypatch):
    """Counts the text parses of float_seq files."""
    calls = []
    original = dataset_module._read_dense_file

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "_read_dense_file", counting)
    return calls


def test_second_load_reads_the_cache(build, atomic_dataset, tmp_path, parses, monkeypatch):
    folder = _tiny(atomic_dataset, tmp_path)
    _, first, *_ = build("UltraGCNMM", "tiny")
    assert len(parses) == 1
    [entry] = _entries(folder)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["key"]["file"]["path"] == str(folder / "tiny.item")
    assert all(p.suffix in (".npy", ".json") for p in entry.iterdir())

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed the text although the cache is valid")

    monkeypatch.setattr(dataset_module, "_read_dense_file", no_parsing)
    _, second, *_ = build("UltraGCNMM", "tiny")
    _assert_same(_item_features(first), _item_features(second))
    row = second.token2id("item_id", "3")
    expected = torch.tensor(FEATURES[2], dtype=torch.float32)
    torch.testing.assert_close(second.get_item_feature()["v_feat"][row], expected)


def test_cached_load_equals_an_uncached_one(build, atomic_dataset, tmp_path):
    dense = {"v_feat": FEATURES, "t_feat": FEATURES[:, :2] * 3}
    words = {"words": [[3, 1], [], [7], [2, 2, 9]]}
    folder = _tiny(atomic_dataset, tmp_path, dense=dense, words=words, item_ids=[4, 2, 3, 1])
    item = folder / "tiny.item"
    lines = [line.split("\t") for line in item.read_text().splitlines()]
    lines[4][2] = ""  # item 1: no t_feat (a zero vector)
    item.write_text("\n".join("\t".join(line) for line in lines) + "\n")
    with pytest.warns(UserWarning, match="t_feat': 1 empty rows"):
        _, plain, *_ = build("UltraGCNMM", "tiny", feature_cache=False)
    _, first, *_ = build("UltraGCNMM", "tiny")
    _, cached, *_ = build("UltraGCNMM", "tiny")
    _assert_same(_item_features(plain), _item_features(first))
    _assert_same(_item_features(plain), _item_features(cached))
    assert plain.field2seqlen == cached.field2seqlen
    assert not cached.get_item_feature()["t_feat"][cached.token2id("item_id", "1")].any()
    words_row = cached.get_item_feature()["words"][cached.token2id("item_id", "1")]
    assert [cached.id2token("words", int(w)) for w in words_row if w] == ["2", "2", "9"]


def test_changed_file_is_parsed_again(build, atomic_dataset, tmp_path, parses):
    folder = _tiny(atomic_dataset, tmp_path)
    build("UltraGCNMM", "tiny")
    item = folder / "tiny.item"
    stat = item.stat()
    item.write_text(item.read_text().replace("0.25", "0.75"))  # same size
    os.utime(item, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    _, data, *_ = build("UltraGCNMM", "tiny")
    assert len(parses) == 2
    assert data.get_item_feature()["v_feat"][data.token2id("item_id", "1")][0] == 0.75
    assert len(_entries(folder)) == 1  # the entry for the old file is gone


@pytest.mark.parametrize("config", [
    {"seq_len": {"v_feat": 2}},
    {"load_col": {"inter": ["user_id", "item_id"], "item": ["item_id", "v_feat"]}},
])
def test_changed_settings_rebuild(build, atomic_dataset, tmp_path, parses, config):
    dense = {"v_feat": FEATURES, "t_feat": FEATURES[:, :2]}
    folder = _tiny(atomic_dataset, tmp_path, dense=dense)
    _, before, *_ = build("UltraGCNMM", "tiny", content_fields=["v_feat"])
    _, after, *_ = build("UltraGCNMM", "tiny", content_fields=["v_feat"], **config)
    assert len(parses) == 2 and len(_entries(folder)) == 2
    if "seq_len" in config:
        assert after.get_item_feature()["v_feat"].shape[1] == 2
    else:
        assert "t_feat" in before.get_item_feature() and "t_feat" not in after.get_item_feature()
    build("UltraGCNMM", "tiny", content_fields=["v_feat"], **config)
    assert len(parses) == 2


@pytest.mark.parametrize("damage", ["manifest", "truncate", "delete", "dtype", "flip", "rows"])
def test_damaged_entry_is_rebuilt(build, atomic_dataset, tmp_path, parses, damage):
    folder = _tiny(atomic_dataset, tmp_path)
    _, first, *_ = build("UltraGCNMM", "tiny")
    [entry] = _entries(folder)
    matrix = next(entry.glob("*.matrix.npy"))
    if damage == "manifest":
        (entry / "manifest.json").write_text('{"key": ')
    elif damage == "truncate":
        matrix.write_bytes(matrix.read_bytes()[:-5])
    elif damage == "delete":
        matrix.unlink()
    elif damage == "rows":  # valid arrays and manifest, but fewer lengths than rows
        manifest = json.loads((entry / "manifest.json").read_text())
        spec = manifest["columns"]["v_feat"]["lengths"]
        lengths = entry / spec["file"]
        np.save(lengths, np.load(lengths)[:-1])
        spec.update(shape=[len(FEATURES) - 1], bytes=lengths.stat().st_size,
                    crc32=feature_cache._crc32(np.load(lengths)))
        (entry / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "flip":  # same size, valid header, one value changed
        contents = bytearray(matrix.read_bytes())
        contents[-1] ^= 0x40
        matrix.write_bytes(bytes(contents))
    else:  # a whole, valid .npy of the wrong type in its place
        np.save(matrix, np.zeros(FEATURES.shape, dtype=np.float64))
    _, second, *_ = build("UltraGCNMM", "tiny")
    assert len(parses) == 2
    _assert_same(_item_features(first), _item_features(second))
    [rebuilt] = _entries(folder)
    json.loads((rebuilt / "manifest.json").read_text())
    build("UltraGCNMM", "tiny")
    assert len(parses) == 2


def test_cache_off_writes_nothing(build, atomic_dataset, tmp_path, parses):
    folder = _tiny(atomic_dataset, tmp_path)
    build("UltraGCNMM", "tiny", feature_cache=False)
    build("UltraGCNMM", "tiny", feature_cache=False)
    assert len(parses) == 2
    assert not (folder / ".cache").exists()


def test_cache_dir_setting(build, atomic_dataset, tmp_path, parses):
    folder = _tiny(atomic_dataset, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    build("UltraGCNMM", "tiny", feature_cache_dir=str(elsewhere))
    build("UltraGCNMM", "tiny", feature_cache_dir=str(elsewhere))
    assert len(parses) == 1
    assert not (folder / ".cache").exists()
    assert [p.name.startswith("tiny.item.") for p in elsewhere.iterdir()] == [True]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_leaves_no_entry(build, atomic_dataset, tmp_path, monkeypatch, error):
    folder = _tiny(atomic_dataset, tmp_path)

    def failing_save(*args, **kwargs):
        raise error

    monkeypatch.setattr(feature_cache.np, "save", failing_save)
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            build("UltraGCNMM", "tiny")
    else:
        build("UltraGCNMM", "tiny")
    assert list((folder / ".cache").iterdir()) == []


def test_quoted_file_is_split_by_pandas(build, atomic_dataset, tmp_path):
    words = {"title": [["a"], ["x"], ['"b c"'], ["d"]]}  # pandas unquotes: words b, c
    folder = _tiny(atomic_dataset, tmp_path, words=words)
    _, quoted, *_ = build("UltraGCNMM", "tiny", feature_cache=False)
    item = folder / "tiny.item"
    item.write_text(item.read_text().replace('"b c"', "b c"))
    _, plain, *_ = build("UltraGCNMM", "tiny", feature_cache=False)
    _assert_same(_item_features(quoted), _item_features(plain))


def test_released_pages_of_a_cached_matrix_read_back_the_same(tmp_path):
    """Pages handed back by ``release_pages`` are mapped again from the file on the next read."""
    from recbole_invrl.data.feature_cache import file_mapping, release_pages

    matrix = np.random.default_rng(0).random((64, 1024), dtype=np.float32)
    np.save(tmp_path / "m.npy", matrix)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    rows = list(np.asarray(mapped))
    mapping = file_mapping(rows[3])
    assert mapping is mapped._mmap
    np.testing.assert_array_equal(np.stack(rows), matrix)
    release_pages(mapping)
    np.testing.assert_array_equal(np.stack(rows), matrix)
    assert file_mapping(matrix[3]) is None  # an array in memory: nothing to release
