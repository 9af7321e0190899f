"""Corrupt and hostile data files through the run script: the run ends with one line naming
the file, the line and the column (after the log lines of the run so far), exit status 2, no
traceback; hostile content runs nothing."""
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("run_recbole_invrl", REPO / "run_recbole_invrl.py")
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)

MARKER = "ran.txt"  # the file hostile content would create


class Touch:
    """Pickled, it creates ``path`` when unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def hostile_dataset_yaml(folder: Path, tmp: Path) -> None:
    (folder / "tiny.yaml").write_text(f"epochs: !!python/object/apply:os.system ['touch {tmp / MARKER}']\n")


def hostile_checkpoint(folder: Path, tmp: Path) -> None:
    torch.save({"state_dict": {}, "payload": Touch(str(tmp / MARKER))}, tmp / "evil.pth")


def hostile_mask(folder: Path, tmp: Path) -> None:
    np.save(tmp / "evil.npy", np.array([Touch(str(tmp / MARKER))], dtype=object), allow_pickle=True)


def short_checkpoint(folder: Path, tmp: Path) -> None:
    torch.save({"state_dict": {"no_such_weight": torch.zeros(3)}}, tmp / "other.pth")


# (name, how the files are spoiled, extra command line, parts of the one line)
BAD_FILES = [
    ("duplicate column", lambda f, t: edit_line(f / "tiny.train.inter", 1, "user_id:token\tuser_id:token"), [],
     ["tiny.train.inter: line 1, column 2: field 'user_id' is named twice"]),
    ("last line without an item", lambda f, t: append(f / "tiny.train.inter", "3\n"), [],
     ["tiny.train.inter: line", "field 'item_id': expected an id"]),
    ("empty user cell", lambda f, t: edit_line(f / "tiny.valid.inter", 3, "\t4"), [],
     ["tiny.valid.inter: line 3, field 'user_id': expected an id"]),
    ("extra field", lambda f, t: edit_line(f / "tiny.test.inter", 2, "1\t2\t3"), [],
     ["tiny.test.inter: line 2 has more fields than the 2 the header names"]),
    ("header without type", lambda f, t: edit_line(f / "tiny.train.inter", 1, "user_id\titem_id:token"), [],
     ["tiny.train.inter: header column 'user_id' is not of the form name:type"]),
    ("unknown type", lambda f, t: edit_line(f / "tiny.item", 1, "item_id:tok\tv_feat:float_seq"), [],
     ["tiny.item: field 'item_id' has type 'tok'"]),
    ("feature not a number", lambda f, t: edit_line(f / "tiny.item", 3, "2\t1 x"), [],
     ["tiny.item: field 'v_feat' (float_seq) line 3: 'x' is not a number"]),
    ("feature of another width", lambda f, t: edit_line(f / "tiny.item", 4, "3\t1 0 1"), [],
     ["tiny.item: field 'v_feat' (float_seq) line 4 has 3 values; expected 2"]),
    ("feature not finite", lambda f, t: edit_line(f / "tiny.item", 5, "4\tnan 1"), [],
     ["tiny.item: field 'v_feat' (float_seq) line 5 holds NaN or inf"]),
    ("not UTF-8", lambda f, t: (f / "tiny.test.inter").write_bytes(b"user_id:token\titem_id:token\n1\t\xff\n"), [],
     ["tiny.test.inter", "utf-8"]),
    ("checkpoint of another model", short_checkpoint, ["--model=InvRL", "--pretrained_path={tmp}/other.pth"],
     ["pretrained_path: {tmp}/other.pth is not a checkpoint of UltraGCNMM with these sizes"]),
    ("hostile dataset yaml", hostile_dataset_yaml, [],
     ["config file: '", "tiny.yaml', line 1, column 9", "python/object/apply:os.system"]),
    ("hostile checkpoint", hostile_checkpoint, ["--model=InvRL", "--pretrained_path={tmp}/evil.pth"],
     ["cannot load checkpoint {tmp}/evil.pth with weights_only=True"]),
    ("hostile mask", hostile_mask, ["--model=InvRL", "--fixed_mask={tmp}/evil.npy"],
     ["fixed_mask: expected a .npy file of one number per content dimension", "dtype object"]),
]


@pytest.fixture
def tiny(tmp_path, atomic_dataset, clustered):
    train, valid, test, item_cluster = clustered(n_users=10, n_items=30)
    atomic_dataset(tmp_path / "data", "tiny", train, valid, test, dense={"v_feat": np.eye(2)[item_cluster]})
    return tmp_path / "data"


@pytest.mark.parametrize("spoil, extra, parts", [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_data_file_is_one_line_naming_file_and_line(tiny, tmp_path, capsys, spoil, extra, parts):
    spoil(tiny / "tiny", tmp_path)
    argv = ["--dataset=tiny", f"--data_path={tiny}", "--epochs=1", "--pretrain_epochs=1", "--show_progress=False",
            *(a.format(tmp=tmp_path) for a in extra)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err, err
    for part in parts:
        assert part.format(tmp=tmp_path) in last, err
    assert not (tmp_path / MARKER).exists()  # nothing in the files ran


def test_the_hostile_payloads_do_run_when_unpickled(tmp_path):
    """The fixtures are live: unpickling them without restriction creates the marker."""
    pickle.loads(pickle.dumps(Touch(str(tmp_path / MARKER))))
    assert (tmp_path / MARKER).exists()
