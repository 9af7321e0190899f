"""The restricted unpickler: real release-style files load, crafted payloads are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_invrl.data.convert import ConversionError, UnsafePickleError, load_npy, load_pt


def obj_array(items) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        arr[i] = x
    return arr


def write_object_npy(path: Path, payload: bytes, shape=(1,)) -> Path:
    """An .npy file with an object-dtype header followed by an arbitrary pickle payload."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": shape}
        )
        f.write(payload)
    return path


class SystemCall:
    """Pickles to ``os.system(cmd)``."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class WritesMarker:
    """A custom ``__reduce__`` that writes a marker file through builtins.exec."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class OpensFile:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------- legitimate data


def test_numeric_array_loads(tmp_path):
    arr = np.arange(12, dtype=np.int64).reshape(6, 2)
    np.save(tmp_path / "train.npy", arr)
    np.testing.assert_array_equal(load_npy(tmp_path / "train.npy"), arr)
    mm = load_npy(tmp_path / "train.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm, arr)


def test_release_style_object_arrays_load(tmp_path):
    lists = [[0, 5, 6], [1], [2, np.int64(7)], [3, 8]]
    np.save(tmp_path / "val_full.npy", obj_array(lists))
    loaded = load_npy(tmp_path / "val_full.npy")
    assert loaded.dtype == object and [list(x) for x in loaded] == lists

    d = {0: [5, 6], 1: {7, 8}, 2: np.array([9]), 3: frozenset({1}), 4: (2, 3)}
    np.save(tmp_path / "user_item_dict.npy", d)
    loaded = load_npy(tmp_path / "user_item_dict.npy")  # 0-d object array unwrapped
    assert isinstance(loaded, dict) and loaded.keys() == d.keys()
    assert loaded[1] == {7, 8} and loaded[3] == frozenset({1}) and loaded[4] == (2, 3)
    np.testing.assert_array_equal(loaded[2], [9])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol(tmp_path, protocol):
    arr = obj_array([[0, 4], {1: {2}}, np.arange(3, dtype=np.int32), np.uint8(3)])
    path = write_object_npy(tmp_path / "x.npy", pickle.dumps(arr, protocol=protocol), (4,))
    loaded = load_npy(path)
    assert loaded[0] == [0, 4] and loaded[1] == {1: {2}} and loaded[3] == 3
    np.testing.assert_array_equal(loaded[2], [0, 1, 2])


@pytest.mark.parametrize("module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_numpy1_and_numpy2_module_names(tmp_path, module):
    """Files written by numpy 1 reference numpy.core.multiarray, by numpy 2 numpy._core.multiarray;
    both load whichever numpy is installed."""
    payload = pickle.dumps(obj_array([[0, 4], [1, np.int64(5)]]), protocol=2)
    written = b"numpy._core.multiarray" if b"numpy._core.multiarray" in payload else b"numpy.core.multiarray"
    assert written in payload
    payload = payload.replace(written, module)
    loaded = load_npy(write_object_npy(tmp_path / "x.npy", payload, (2,)))
    assert [list(x) for x in loaded] == [[0, 4], [1, 5]]


def test_self_referencing_list_terminates(tmp_path):
    lst: list = [1]
    lst.append(lst)
    np.save(tmp_path / "x.npy", obj_array([lst]))
    loaded = load_npy(tmp_path / "x.npy")
    assert loaded[0][1] is loaded[0]


# ----------------------------------------------------------------------------- refused


def test_os_system_payload_refused(tmp_path):
    marker = tmp_path / "SENTINEL"
    path = write_object_npy(tmp_path / "val_full.npy", pickle.dumps(SystemCall(f"touch {marker}"), protocol=3))
    with pytest.raises(UnsafePickleError) as info:
        load_npy(path)
    msg = str(info.value)
    assert msg.startswith(f"refused to unpickle {os.system.__module__}.system from val_full.npy")
    assert "only arrays, lists, dicts, sets and integers are allowed" in msg
    assert not marker.exists()


def test_custom_reduce_refused_and_payload_is_live(tmp_path):
    marker = tmp_path / "marker.txt"
    path = write_object_npy(tmp_path / "test_full.npy", pickle.dumps(WritesMarker(marker), protocol=4))
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle builtins.exec from test_full.npy"):
        load_npy(path)
    assert not marker.exists()
    # The same file really is dangerous for a plain np.load: this proves the test is meaningful.
    np.load(path, allow_pickle=True)
    assert marker.read_text() == "pwned"


def test_payload_nested_in_a_real_object_array_refused(tmp_path):
    marker = tmp_path / "opened"
    np.save(tmp_path / "val_full.npy", obj_array([[0, 4], [1, OpensFile(marker)]]), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle (_?io|builtins)\.open from val_full.npy"):
        load_npy(tmp_path / "val_full.npy")
    assert not marker.exists()


@pytest.mark.parametrize("item, what", [
    ("abc", "an object of type str"),
    (b"abc", "an object of type bytes"),
    (1.5, "an object of type float"),
    (None, "an object of type NoneType"),
    (np.array(["a"]), "an array of dtype <U1"),
])
def test_disallowed_contents(tmp_path, item, what):
    np.save(tmp_path / "val_full.npy", obj_array([[0, 4], [1, item]]))
    with pytest.raises(UnsafePickleError) as info:
        load_npy(tmp_path / "val_full.npy")
    assert str(info.value).startswith(f"val_full.npy: pickled data holds {what}")


def test_float_scalar_refused_at_unpickling(tmp_path):
    np.save(tmp_path / "x.npy", obj_array([[0, np.float64(1.5)]]))
    with pytest.raises(UnsafePickleError, match=r"refused to unpickle numpy scalar of dtype float64 from x.npy"):
        load_npy(tmp_path / "x.npy")


def test_object_arrays_refused_when_numeric_expected(tmp_path):
    np.save(tmp_path / "v_feat.npy", obj_array([[0.5]]))
    with pytest.raises(ConversionError, match=r"v_feat.npy: holds pickled Python objects"):
        load_npy(tmp_path / "v_feat.npy", allow_pickle_types=False)


def test_truncated_files(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((10, 3)))
    (tmp_path / "a.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-1])
    with pytest.raises(ConversionError, match=r"^a.npy: truncated or corrupt file"):
        load_npy(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", obj_array([[0, 1], [2, 3]]))
    (tmp_path / "b.npy").write_bytes((tmp_path / "b.npy").read_bytes()[:-3])
    with pytest.raises(ConversionError, match=r"^b.npy: truncated or corrupt file"):
        load_npy(tmp_path / "b.npy")
    (tmp_path / "c.npy").write_bytes(b"")
    with pytest.raises(ConversionError, match=r"^c.npy: truncated or corrupt file"):
        load_npy(tmp_path / "c.npy")


# ----------------------------------------------------------------------------- .pt


def test_pt_tensor_loads(tmp_path):
    torch.save(torch.arange(6).reshape(2, 3), tmp_path / "feat_t.pt")
    assert torch.equal(load_pt(tmp_path / "feat_t.pt"), torch.arange(6).reshape(2, 3))


def test_pt_payload_refused(tmp_path):
    marker = tmp_path / "SENTINEL"
    torch.save(SystemCall(f"touch {marker}"), tmp_path / "feat_v.pt")
    with pytest.raises(ConversionError) as info:
        load_pt(tmp_path / "feat_v.pt")
    assert str(info.value).startswith("feat_v.pt: refused or unreadable pickle")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_pt_corrupt(tmp_path):
    (tmp_path / "feat_a.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(ConversionError, match=r"^feat_a.pt: "):
        load_pt(tmp_path / "feat_a.pt")


def test_every_npy_format_version_loads(tmp_path):
    """Headers 1.0, 2.0 and 3.0, for numeric and for object arrays."""
    numeric = np.arange(6, dtype=np.int64).reshape(2, 3)
    objects = obj_array([np.array([1, 2]), [3, 4]])
    for version in ((1, 0), (2, 0), (3, 0)):
        for name, arr in (("n", numeric), ("o", objects)):
            path = tmp_path / f"{name}{version[0]}.npy"
            with open(path, "wb") as f:
                np.lib.format.write_array(f, arr, version=version, allow_pickle=True)
            loaded = load_npy(path)
            if name == "n":
                np.testing.assert_array_equal(loaded, numeric)
            else:
                assert loaded[0].tolist() == [1, 2] and loaded[1] == [3, 4]


def test_messages_name_the_file_and_the_fault(tmp_path):
    np.save(tmp_path / "o.npy", obj_array([[1]]), allow_pickle=True)
    with pytest.raises(ConversionError, match=r"^o\.npy: holds pickled Python objects \(dtype object\); expected a "
                                              r"numeric array$"):
        load_npy(tmp_path / "o.npy", allow_pickle_types=False)
    with pytest.raises(ConversionError, match=rf"^gone\.npy: file not found \({tmp_path / 'gone.npy'}\)$"):
        load_npy(tmp_path / "gone.npy")
    write_object_npy(tmp_path / "s.npy", pickle.dumps(obj_array([1, 2]), protocol=2), shape=(3,))
    with pytest.raises(ConversionError, match=r"^s\.npy: corrupt object array \(header says shape \(3,\)\)$"):
        load_npy(tmp_path / "s.npy")
    write_object_npy(tmp_path / "l.npy", pickle.dumps([1, 2], protocol=2), shape=(2,))  # not an array at all
    with pytest.raises(ConversionError, match=r"^l\.npy: corrupt object array \(header says shape \(2,\)\)$"):
        load_npy(tmp_path / "l.npy")
    write_object_npy(tmp_path / "t.npy", b"\x80\x02]q\x00(K\x01")  # cut short
    with pytest.raises(ConversionError, match=r"^t\.npy: truncated or corrupt file \((?!None\))[^)\n]+\)$"):
        load_npy(tmp_path / "t.npy")
    np.save(tmp_path / "n.npy", np.arange(100, dtype=np.int64))
    data = (tmp_path / "n.npy").read_bytes()
    (tmp_path / "n.npy").write_bytes(data[:-40])  # a numeric array cut short: numpy's own error, named
    with pytest.raises(ConversionError, match=r"^n\.npy: truncated or corrupt file \((?!None\))[^\n]+\)$"):
        load_npy(tmp_path / "n.npy")


def test_a_corrupt_file_message_takes_the_first_line_or_the_error_type():
    from recbole_invrl.data.convert.safe_pickle import _corrupt

    assert str(_corrupt("f.npy", ValueError("first\nsecond"))) == "f.npy: truncated or corrupt file (first)"
    assert str(_corrupt("f.npy", EOFError())) == "f.npy: truncated or corrupt file (EOFError)"


def test_persistent_ids_and_array_subclasses_are_refused(tmp_path):
    import io

    class Persistent(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref" if obj == "x" else None

    buffer = io.BytesIO()
    Persistent(buffer, protocol=2).dump(["x"])
    write_object_npy(tmp_path / "p.npy", buffer.getvalue())
    with pytest.raises(UnsafePickleError, match=r"^refused to unpickle persistent id from p\.npy: only arrays, lists, "
                                                r"dicts, sets and integers are allowed$"):
        load_npy(tmp_path / "p.npy")
    class NotAnArray:  # numpy's _reconstruct asked to build another (allowed) class
        def __reduce__(self):
            return np.ndarray.__reduce__(np.zeros(1))[0], (np.dtype, (0,), b"b")

    write_object_npy(tmp_path / "m.npy", pickle.dumps(obj_array([NotAnArray()]), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"^refused to unpickle array subclass <class 'numpy\.dtype'> from m\.npy"):
        load_npy(tmp_path / "m.npy")


def test_codecs_encode_is_admitted_for_latin1_strings_only():
    from recbole_invrl.data.convert.safe_pickle import _latin1_encode, _Refused

    assert _latin1_encode("a\xff", "latin1") == b"a\xff" and _latin1_encode("b", "latin-1") == b"b"
    for args, message in ((("abc",), "_codecs.encode(str, 'utf-8')"), ((b"abc", "latin1"), "_codecs.encode(bytes, 'latin1')"),
                          (("abc", "latin1", "strict"), "_codecs.encode(str, 'latin1')")):
        with pytest.raises(_Refused) as refused:
            _latin1_encode(*args)
        assert str(refused.value) == message


def test_the_contents_walk_checks_every_entry():
    from recbole_invrl.data.convert.safe_pickle import check_contents

    inner = [1, 2]
    for bad in (["bad", np.int64(3)], ["bad", inner, inner], {1: "bad"}, [np.array(["a", "b"])]):
        with pytest.raises(UnsafePickleError, match="x.npy: pickled data holds an"):
            check_contents(bad, "x.npy")
    check_contents({1: [np.int32(2), {3, 4}], 5: (np.bool_(True), np.zeros(2))}, "x.npy")


def test_pt_messages_name_the_file(tmp_path):
    with pytest.raises(ConversionError, match=rf"^gone\.pt: file not found \({tmp_path / 'gone.pt'}\)$"):
        load_pt(tmp_path / "gone.pt")
    torch.save({"f": SystemCall("true")}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError) as refused:  # what torch itself says, first line
        torch.load(tmp_path / "evil.pt", weights_only=True)
    first_line = str(refused.value).strip().splitlines()[0]
    with pytest.raises(ConversionError) as error:
        load_pt(tmp_path / "evil.pt")
    assert str(error.value) == ("evil.pt: refused or unreadable pickle in a .pt file (only tensors load with "
                                f"weights_only=True): {first_line}")
    torch.save(torch.ones(3), tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=r"^half\.pt: truncated or corrupt file \(PytorchStreamReader failed[^\n]+\)$"):
        load_pt(tmp_path / "half.pt")
