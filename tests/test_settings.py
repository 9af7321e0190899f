"""The command line's settings check: one line, exit status 2, no traceback, nothing written."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_invrl.model import general_recommender as plugin_models
from recbole_invrl.settings import (
    KEY_CHECKS,
    PLUGIN_YAMLS,
    RULES,
    SettingsError,
    check_value,
    load_yaml_defaults,
    yaml_entries,
)

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("run_recbole_invrl", REPO / "run_recbole_invrl.py")
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)


@pytest.fixture
def data(tmp_path, atomic_dataset, clustered):
    train, valid, test, item_cluster = clustered(n_users=10, n_items=30)
    atomic_dataset(tmp_path / "data", "tiny", train, valid, test, dense={"v_feat": np.eye(2)[item_cluster]})
    for name in ("backbone.pth", "mask.npy"):
        (tmp_path / name).write_bytes(b"x")
    np.save(tmp_path / "matrix.npy", np.ones((2, 3), dtype=np.float32))
    (tmp_path / "syntax.yaml").write_text("epochs: [1,\n")
    (tmp_path / "list.yaml").write_text("- epochs\n- 5\n")
    return tmp_path / "data"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# (command line, start of the one-line message)
BAD_COMMAND_LINES = [
    (["--learning_rate=abc"], "learning_rate: expected a number > 0, got 'abc'"),
    (["--epochs=0"], "epochs: expected an integer >= 1, got 0"),
    (["--train_batch_size=1.5"], "train_batch_size: expected an integer >= 1, got 1.5"),
    (["--seed=-3"], "seed: expected an integer in [0, 4294967295], got -3"),
    (["--use_gpu=maybe"], "use_gpu: expected True or False, got 'maybe'"),
    (["--state=LOUD"], "state: expected one of DEBUG, INFO"),
    (["--topk=0"], "topk: expected an integer >= 1 or a list of them, got 0"),
    (["--metrics=['Recal']"], "metrics: unknown metric 'Recal'; did you mean Recall"),
    (["--valid_metric=MRR@10"], "valid_metric: 'MRR@10' is not among metrics"),
    (["--valid_metric=NDCG@5"], "valid_metric: 'NDCG@5' needs 5 in topk"),
    (["--model=InvRL", "--num_envs=0"], "num_envs: expected an integer in [1, 1024], got 0"),
    (["--model=InvRL", "--mask_type=bin"], "mask_type: expected one of float, binary, got 'bin'"),
    (["--model=InvRL", "--moved_threshold=2"], "moved_threshold: expected a number in [-1, 1], got 2"),
    (["--model=InvRL", "--penalty_growth=0"], "penalty_growth: expected a number > 0, got 0"),
    (["--model=InvRL", "--pretrained_path=nowhere.pth"], "pretrained_path: expected an existing file"),
    (["--model=InvRL", "--fixed_mask={tmp}/mask.npy", "--pretrained_path={tmp}/backbone.pth"],
     "fixed_mask and pretrained_path: set only one"),
    (["--model=VBPR", "--visual_size=64"], "visual_size: expected an integer below embedding_size = 64"),
    (["--model=NoSuchModel"], "model: unknown model 'NoSuchModel'"),
    (["--model=lightgcn"], "model: unknown model 'lightgcn'; did you mean LightGCN"),
    (["--dataset=tiyn"], "dataset 'tiyn': missing"),
    (["--learnin_rate=0.1"], "--learnin_rate: unknown key; did you mean learning_rate"),
    (["--seed=1", "--seed=2"], "--seed: given twice with different values, '1' and '2'"),
    (["--epochs", "5"], "--epochs: expected an override of the form --key=value"),
    (["--nproc=0"], "nproc: expected an integer >= 1, got 0"),
    (["--nproc=two"], "argument --nproc: invalid int value: 'two'"),
    (["--config_files=nowhere.yaml"], "config_files: expected existing yaml files"),
    (["--dataset=../../../evil"], "dataset: expected a name (letters, digits"),
    (["--dataset="], "dataset: expected a name (letters, digits"),
    (["--epochs=__import__('os').getcwd()"], "epochs: expected a literal"),
    (["--model=InvRL", "--final_mask_forms=[soft,hard]"], "final_mask_forms: expected a form or a list of distinct"),
    (["--model=InvRL", "--final_mask_cut=2"], "final_mask_cut: expected otsu or a number in (0, 1], got 2"),
    (["--model=InvRL", "--mask_lr=fast"], "mask_lr: expected auto or a number > 0, got 'fast'"),
    # files a setting names, and paths a run writes
    (["--config_files={tmp}/syntax.yaml"], "config_files: '{tmp}/syntax.yaml', line 2, column 1: expected YAML"),
    (["--config_files={tmp}/list.yaml"], "config_files: '{tmp}/list.yaml': expected a mapping of keys to values"),
    (["--content_fields=['nope']"], "content_fields: 'nope' is not a column of"),
    (["--content_fields=item_id"], "content_fields: 'item_id' in"),
    (["--model=InvRL", "--invrl_backbone=Foo"], "invrl_backbone: unknown model 'Foo'"),
    (["--model=InvRL", "--invrl_backbone=BPR"], "invrl_backbone: 'BPR' cannot be InvRL's backbone"),
    (["--model=InvRL", "--invrl_backbone=MMGCN", "--invariance_path=eq14"],
     "invariance_path: eq14 needs invariance_parts"),
    (["--model=InvRL", "--pretrained_path={tmp}/backbone.pth"], "pretrained_path: expected a checkpoint written by"),
    (["--model=InvRL", "--fixed_mask={tmp}/mask.npy"], "fixed_mask: expected a .npy file (np.save)"),
    (["--model=InvRL", "--fixed_mask={tmp}/matrix.npy"], "fixed_mask: expected a .npy file of one number per"),
    (["--model=InvRL", "--truth_dir={tmp}/nowhere"], "truth_dir: expected an existing folder"),
    (["--checkpoint_dir={tmp}/backbone.pth/saved"], "checkpoint_dir: expected a path that can be created"),
    (["--checkpoint_dir={tmp}/backbone.pth"], "checkpoint_dir: expected a folder, not a file"),
    (["--result_json={tmp}/backbone.pth/r.json"], "result_json: expected a path that can be created"),
    (["--result_json={tmp}"], "result_json: expected a file path, not a folder"),
    (["--save_dataset=True"], "save_dataset: not supported by recbole_invrl"),
    # sizes
    (["--model=InvRL", "--num_envs=100000"], "num_envs: expected an integer in [1, 1024], got 100000"),
    (["--embedding_size=10000000"], "embedding_size: expected an integer in [1, 16384], got 10000000"),
    (["--model=VBPR", "--embedding_size=64", "--visual_size=100000"], "visual_size: expected an integer in [1, 16384]"),
    # RecBole's own models get the same rules for the keys they share
    (["--model=LightGCN", "--embedding_size=-5"], "embedding_size: expected an integer in [1, 16384], got -5"),
    (["--model=LightGCN", "--n_layers=0"], "n_layers: expected an integer >= 1, got 0"),
    (["--model=BPR", "--embedding_size=0"], "embedding_size: expected an integer in [1, 16384], got 0"),
    (["--model=LightGCN", "--reg_weight=-1"], "reg_weight: expected a number >= 0, got -1"),
    (["--model=NeuMF", "--dropout_prob=2"], "dropout_prob: expected a number in [0, 1], got 2"),
]


@pytest.mark.parametrize("value, message", [("", "expected a folder path"), ("{tmp}/a-file", "expected a folder, not")])
def test_a_data_path_that_is_no_folder_is_one_line(tmp_path, capsys, value, message):
    (tmp_path / "a-file").write_text("")
    before = files_under(tmp_path)
    assert cli.main(["--dataset=ml-100k-mm", f"--data_path={value.format(tmp=tmp_path)}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data_path: {message}") and err.count("\n") == 1
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("args, message", BAD_COMMAND_LINES, ids=[" ".join(a) for a, _ in BAD_COMMAND_LINES])
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(data, tmp_path, capsys, args, message):
    before = files_under(tmp_path)
    dataset = [] if any(a.startswith("--dataset=") for a in args) else ["--dataset=tiny"]
    argv = [*dataset, f"--data_path={data}", *(a.format(tmp=tmp_path) for a in args)]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {message.format(tmp=tmp_path)}"), err
    assert err.count("\n") == 1 and "Traceback" not in err and "lightgbm" not in err
    assert "Hyper Parameters" not in out + err  # before the config dump
    assert files_under(tmp_path) == before  # no log, no saved/, no tensorboard folder


def test_an_unknown_dataset_suggests_a_close_name(data, capsys):
    assert cli.main(["--dataset=tiyn", f"--data_path={data}"]) == 2
    assert "did you mean tiny" in capsys.readouterr().err


def test_from_the_shell_a_bad_value_is_one_line_without_traceback(data, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "run_recbole_invrl.py"), "--model=NoSuchModel",
                           "--dataset=tiny", f"--data_path={data}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: model: unknown model 'NoSuchModel'") and proc.stderr.count("\n") == 1
    assert "lightgbm" not in proc.stderr and not (tmp_path / "log").exists()


def test_help_shows_override_syntax_models_and_plugin_keys(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "[--key=value ...]" in out and "--epochs=5" in out
    assert ", ".join(plugin_models.__all__) in out and "LightGCN" in out and "NGCF" in out
    assert "lightgbm" not in out.lower()
    for path in PLUGIN_YAMLS.values():
        for key, default, _ in yaml_entries(path):
            assert f"--{key}={default}" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("--num_envs="))
    assert "|E|" in line and "[an integer in [1, 1024]]" in line


@pytest.mark.parametrize("name", list(PLUGIN_YAMLS))
def test_every_plugin_key_has_a_rule_its_default_passes_and_a_description(name):
    defaults = load_yaml_defaults(PLUGIN_YAMLS[name])
    for key, _, comment in yaml_entries(PLUGIN_YAMLS[name]):
        assert key in RULES or key in KEY_CHECKS, f"{name}.yaml: {key} has no rule"
        check_value(key, defaults[key])  # must not raise
        assert comment, f"{name}.yaml: {key} has no description"


@pytest.mark.parametrize("key, good, bad", [
    ("num_neighbors", 0, -1), ("w2", None, -0.5), ("content_fields", ["v_feat"], 3),
    ("init_std", 1e-4, 0.0), ("learning_rate", 1, float("nan")), ("resume", False, 1),
    ("eval_args", {"mode": "uni100"}, {"mode": "sometimes"}),
    ("train_neg_sample_args", {"distribution": "popularity", "sample_num": 2}, {"distribution": "zipf"}),
])
def test_rules_accept_the_range_and_refuse_outside_it(key, good, bad):
    check_value(key, good)
    with pytest.raises(SettingsError, match=f"^{key}"):
        check_value(key, bad)
