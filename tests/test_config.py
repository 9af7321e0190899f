import sys

import numpy as np
import pytest
import yaml
from recbole.model.general_recommender import BPR

from recbole_invrl.config import Config
from recbole_invrl.model.general_recommender import UltraGCNMM


@pytest.fixture
def tiny(tmp_path, atomic_dataset):
    dense = {"v_feat": np.eye(4, 3)}
    atomic_dataset(tmp_path, "tiny", [(1, 1), (2, 2)], [(1, 2)], [(2, 3)], dense=dense,
                   config={"neg_num": 7, "learning_rate": 0.5, "embedding_size": 8,
                           "id_reg_weight": 0.3, "proj_reg_weight": 0.2})
    return tmp_path


def test_five_layers_of_precedence(tiny, tmp_path, monkeypatch):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"learning_rate": 0.25, "embedding_size": 16,
                                           "id_reg_weight": 0.03}))
    monkeypatch.setattr(sys, "argv", ["run", "--embedding_size=32"])
    config = Config("UltraGCNMM", "tiny", config_file_list=[str(config_file)],
                    config_dict={"data_path": str(tiny), "embedding_size": 24,
                                 "id_reg_weight": 0.003, "learning_rate": 0.125})

    assert config["eval_step"] == 1                  # RecBole default
    assert config["valid_metric"] == "NDCG@10"       # plugin overall.yaml over RecBole's MRR@10
    assert config["content_size"] == 64              # model yaml
    assert config["neg_num"] == 7                    # dataset yaml over model yaml (50)
    assert config["proj_reg_weight"] == 0.2          # dataset yaml over model yaml (0.01)
    assert config["learning_rate"] == 0.125          # config_dict over file over dataset yaml
    assert config["id_reg_weight"] == 0.003          # config_dict over file
    assert config["embedding_size"] == 32            # command line over everything


def test_config_file_over_dataset_yaml(tiny, tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"learning_rate": 0.25}))
    config = Config("UltraGCNMM", "tiny", config_file_list=[str(config_file)],
                    config_dict={"data_path": str(tiny)})
    assert config["learning_rate"] == 0.25
    assert config["embedding_size"] == 8


def test_plugin_model_found_under_both_names(tiny):
    for name in ("UltraGCNMM", "UltraGCN-MM"):
        config = Config(name, "tiny", config_dict={"data_path": str(tiny)})
        assert config["model"] == "UltraGCNMM"
        assert config.model_class is UltraGCNMM


def test_recbole_model_falls_back_to_recbole(tiny):
    config = Config("BPR", "tiny", config_dict={"data_path": str(tiny)})
    assert config.model_class is BPR
    assert config["neg_num"] == 7  # the dataset yaml still applies
    assert "content_size" not in config.final_config_dict  # no UltraGCNMM defaults


def test_unknown_model_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="model: unknown model 'NoSuchModel'"):
        Config("NoSuchModel", "tiny", config_dict={"data_path": str(tiny)})


def test_invrl_reads_the_backbone_yaml_then_its_own(tiny):
    from recbole_invrl.model.general_recommender import InvRL

    config = Config("InvRL", "tiny", config_dict={"data_path": str(tiny)})
    assert config.model_class is InvRL
    assert config["content_size"] == 64 and config["num_envs"] == 10  # UltraGCNMM.yaml, InvRL.yaml
    assert config["neg_num"] == 7  # the dataset yaml still wins over both


def test_numpy_aliases_survive_numpy_2(tiny, monkeypatch):
    """NumPy 2 dropped np.float_ & co., from which RecBole's Config rebuilds np.float & co."""
    for name in ("float_", "complex_", "unicode_", "float", "complex", "unicode", "object", "str", "long"):
        monkeypatch.delattr(np, name, raising=False)
    Config("BPR", "tiny", config_dict={"data_path": str(tiny)})
    assert np.float is float and np.long is int and np.unicode is str
    assert np.zeros(2, dtype=np.float).dtype == np.float64  # how RecBole's metrics use it


def test_a_dataset_config_reads_its_base_configs_first(tiny, tmp_path, monkeypatch):
    import recbole_invrl.config as config_module

    configs = tmp_path / "dataset_configs"
    configs.mkdir()
    (configs / "schedule.yaml").write_text("epochs: 7\nmask_epochs: 3\n")
    (configs / "tiny.yaml").write_text("base_configs: [schedule]\nmask_epochs: 4\n")
    monkeypatch.setattr(config_module, "DATASET_CONFIG_DIR", configs)
    config = Config("InvRL", "tiny", config_dict={"data_path": str(tiny)})
    assert config["epochs"] == 7 and config["mask_epochs"] == 4  # the dataset's own key wins
    (configs / "tiny.yaml").write_text("base_configs: [nowhere]\n")
    with pytest.raises(FileNotFoundError, match=r"tiny.yaml: base_configs names 'nowhere'"):
        Config("InvRL", "tiny", config_dict={"data_path": str(tiny)})


@pytest.mark.parametrize("text, value", [
    ("5", 5), ("1e-3", 0.001), ("-1", -1), ("True", True), ("false", False), ("None", None),
    ("[10,20]", [10, 20]), ("['NDCG','Recall']", ["NDCG", "Recall"]), ("{'mode': 'full'}", {"mode": "full"}),
    ("[soft,cut]", ["soft", "cut"]), ("VBPR", "VBPR"), ("/tmp/a b/m.npy", "/tmp/a b/m.npy"), ("ml-100k-mm", "ml-100k-mm"),
    ("'quoted'", "quoted"), ("", ""), ("nowhere.pth", "nowhere.pth"), ("saved/x.pth", "saved/x.pth"),
])
def test_setting_text_is_read_as_a_literal(text, value):
    from recbole_invrl.config import parse_config_text

    assert parse_config_text("key", text) == value


HOSTILE = ["__import__('pathlib').Path('{marker}').touch()",
           "__import__('os').system('touch {marker}') or None",
           "[open('{marker}', 'w') for _ in '1']",
           "(lambda: __import__('os').system('touch {marker}'))()"]


@pytest.mark.parametrize("template", HOSTILE)
def test_configuration_text_never_runs(tiny, tmp_path, monkeypatch, template):
    from recbole_invrl.settings import SettingsError

    marker = tmp_path / "ran"
    text = template.format(marker=marker)
    with pytest.raises(SettingsError, match=r"^epochs: expected a literal .* would have to be evaluated$"):
        Config("UltraGCNMM", "tiny", config_dict={"data_path": str(tmp_path), "epochs": text})
    monkeypatch.setattr(sys, "argv", ["run", f"--content_fields={text}"])
    with pytest.raises(SettingsError, match="^content_fields: expected a literal"):
        Config("UltraGCNMM", "tiny", config_dict={"data_path": str(tmp_path)})
    assert not marker.exists()


def test_hostile_text_on_the_command_line_and_in_a_search_space_runs_nothing(tiny, tmp_path):
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    marker = tmp_path / "ran"
    text = HOSTILE[1].format(marker=marker)
    proc = subprocess.run([sys.executable, str(repo / "run_recbole_invrl.py"), "--model=UltraGCNMM",
                           "--dataset=tiny", f"--data_path={tmp_path}", f"--epochs={text}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: epochs: expected a literal (a number, True/False, None, ")
    assert lines[0].endswith(", which would have to be evaluated")
    space = tmp_path / "evil.hyper"
    space.write_text(f'content_fields choice ["{text}"]\n')
    subprocess.run([sys.executable, str(repo / "run_hyper.py"), "--model=UltraGCNMM", "--dataset=tiny",
                    f"--data_path={tmp_path}", f"--params_file={space}", "--max_evals=1", "--epochs=1",
                    f"--output_file={tmp_path / 'out.txt'}"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert not marker.exists() and not (tmp_path / "log").exists()


def test_datasets_are_looked_for_in_the_current_folder_or_the_variable(tmp_path, monkeypatch):
    from recbole_invrl.config import DATA_PATH_VARIABLE, default_data_path

    monkeypatch.delenv(DATA_PATH_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_data_path() == tmp_path / "atomic_data"
    monkeypatch.setenv(DATA_PATH_VARIABLE, str(tmp_path / "elsewhere"))
    assert default_data_path() == tmp_path / "elsewhere"
