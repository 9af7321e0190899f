"""RecBole ``Config`` that also reads the plugin's model and dataset defaults.

Precedence, lowest to highest (RecBole's own order, with the plugin's layers slotted in):
RecBole defaults < ``recbole_invrl/properties/overall.yaml`` < model yaml
(``recbole_invrl/properties/model/<Model>.yaml``, after the yamls of the classes named in
the model's ``config_bases``: InvRL reads UltraGCNMM.yaml first) < dataset yaml
(``dataset_configs/<dataset>.yaml``, after the files it names in ``base_configs``, then
``<data_path>/<dataset>/<dataset>.yaml`` written by the converters) < config files <
config_dict < command line.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_invrl.distributed import init_cpu_process_group, wants_cuda
from recbole_invrl.evaluator import register_legacy_ndcg
from recbole_invrl.settings import SettingsError, check_external
from recbole_invrl.utils import canonical_model_name, get_model

register_legacy_ndcg()  # metrics: [..., LegacyNDCG] and valid_metric: LegacyNDCG@K

PACKAGE_DIR = Path(__file__).resolve().parent
PROPERTIES_DIR = PACKAGE_DIR / "properties"
# A source checkout's top-level dataset_configs/ (the place to edit); an installed package's copy.
_CHECKOUT_CONFIGS = PACKAGE_DIR.parent / "dataset_configs"
DATASET_CONFIG_DIR = _CHECKOUT_CONFIGS if _CHECKOUT_CONFIGS.is_dir() else PACKAGE_DIR / "dataset_configs"
DATA_PATH_VARIABLE = "RECBOLE_INVRL_DATA_PATH"
# The aliases RecBole 1.2.1's metrics still use, and the builtins they stood for.
NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "complex": complex, "object": object,
                 "str": str, "long": int, "unicode": str}


class Config(RecBoleConfig):
    """``recbole.config.Config`` with plugin models, model yamls and dataset configs."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        if isinstance(model, str):
            model = canonical_model_name(model)
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self):
        """RecBole's ``--key=value`` reading, with a value that holds '=' kept whole and a key
        given twice with different values refused as a ``SettingsError``."""
        given: dict[str, str] = {}
        for arg in sys.argv[1:] if "ipykernel_launcher" not in sys.argv[0] else []:
            if not arg.startswith("--") or "=" not in arg:
                continue  # run_recbole_invrl.py refuses these; other scripts have their own flags
            key, value = arg[2:].split("=", 1)
            if key in given and given[key] != value:
                raise SettingsError(f"--{key}: given twice with different values, {given[key]!r} and {value!r}")
            given[key] = value
        return self._convert_config_dict(given)

    def _convert_config_dict(self, config_dict):
        """Text values (command line, ``config_dict``) read as literals, never evaluated
        (RecBole's own conversion calls ``eval``): ``parse_config_text``."""
        for key, value in config_dict.items():
            if isinstance(value, str):
                config_dict[key] = parse_config_text(key, value)
        return config_dict

    def _load_config_files(self, file_list):
        """RecBole's reading of ``config_files``, each file checked first (``read_settings_file``)."""
        file_config_dict: dict[str, Any] = {}
        for file in file_list or []:
            file_config_dict.update(read_settings_file(file, self.yaml_loader, "config_files"))
        return file_config_dict

    def _update_internal_config_dict(self, file):
        config_dict = read_settings_file(file, self.yaml_loader, "config file") or None
        if config_dict is not None:
            self.internal_config_dict.update(config_dict)
        return config_dict

    def _get_model_and_dataset(self, model, dataset):
        check_external(self.external_config_dict)  # what RecBole's Config acts on while built
        if model is None:
            if "model" not in self.external_config_dict:
                raise KeyError(
                    "model: not given; pass --model=NAME, config_dict['model'] or a config file key"
                )
            model = self.external_config_dict["model"]
        if isinstance(model, str):
            model = canonical_model_name(model)
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            if "dataset" not in self.external_config_dict:
                raise KeyError(
                    "dataset: not given; pass --dataset=NAME, config_dict['dataset'] or a config file key"
                )
            dataset = self.external_config_dict["dataset"]
        if not isinstance(dataset, str) or not DATASET_NAME.match(dataset):
            raise SettingsError(f"dataset: expected a name (letters, digits, '.', '_' and '-', not starting with "
                                f"'.'; no path separators), got {dataset!r:.80}")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for file in self._plugin_config_files(model, model_class, dataset):
            config_dict = self._update_internal_config_dict(str(file))
            if config_dict and file.parent not in (PROPERTIES_DIR, PROPERTIES_DIR / "model"):
                self.parameters["Dataset"] += [
                    k for k in config_dict if k not in self.parameters["Dataset"]
                ]

    def _plugin_config_files(self, model: str, model_class: type, dataset: str) -> list[Path]:
        """Plugin yaml files in increasing precedence; only those that exist."""
        data_path = self.external_config_dict.get("data_path", str(default_data_path()))
        model_yamls = [
            PROPERTIES_DIR / "model" / f"{name}.yaml"
            for name in (*self._config_bases(model_class), model)
        ]
        dataset_yaml = DATASET_CONFIG_DIR / f"{dataset}.yaml"
        candidates = [
            PROPERTIES_DIR / "overall.yaml",
            *model_yamls,
            _recbole_dataset_yaml(dataset),
            *_base_configs(dataset_yaml),
            dataset_yaml,
            Path(data_path) / dataset / f"{dataset}.yaml",
        ]
        return [f for f in candidates if f is not None and f.is_file()]

    def _config_bases(self, model_class: type) -> tuple[str, ...]:
        """The models whose yamls a model reads first: its ``config_bases``, or the model
        its ``backbone_key`` names in the external settings (InvRL: ``invrl_backbone``)."""
        key = getattr(model_class, "backbone_key", None)
        backbone = self.external_config_dict.get(key) if key else None
        return (canonical_model_name(backbone),) if backbone else tuple(getattr(model_class, "config_bases", ()))

    def compatibility_settings(self):
        """RecBole restores the NumPy aliases removed in 1.24 (``np.float`` ...) from
        ``np.float_`` and friends, which NumPy 2 removed too; point them at what they meant."""
        import numpy as np

        for name, meaning in NUMPY_ALIASES.items():
            if name not in np.__dict__:
                setattr(np, name, meaning)

    def _init_device(self):
        """RecBole's device setup; a rank of a multi-process run without CUDA joins with gloo
        (RecBole would ask NCCL for a GPU)."""
        if "local_rank" in self.final_config_dict and not wants_cuda(self.final_config_dict):
            init_cpu_process_group(self.final_config_dict)
        else:
            super()._init_device()
        final = self.final_config_dict
        if final["single_spec"] and final["device"].type == "cuda" and final.get("use_gpu") is False:
            final["device"] = torch.device("cpu")  # RecBole 1.2.1 reads only gpu_id here
        if final["device"].type == "cpu":
            final["use_gpu"] = False  # the dump and the trainers tell the device used

    def _set_default_parameters(self):
        if "data_path" not in self.external_config_dict and self.dataset != "ml-100k":
            self.final_config_dict["data_path"] = str(default_data_path())
        super()._set_default_parameters()


def default_data_path() -> Path:
    """Where datasets live without ``data_path``: ``$RECBOLE_INVRL_DATA_PATH``, else
    ``./atomic_data`` of the current folder (as RecBole's ``dataset/``)."""
    return Path(os.environ.get(DATA_PATH_VARIABLE) or "atomic_data").absolute()


DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a folder and file stem, never a path
LITERAL_TYPES = (str, int, float, bool, list, tuple, dict, type(None))
# Expression parts that would run something if the text were evaluated (a dotted name such as
# a file name, "model.pth", is read as text).
COMPUTING_NODES = (ast.Call, ast.Lambda, ast.NamedExpr, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                   ast.Await, ast.Yield, ast.YieldFrom)


def parse_config_text(key: str, text: str) -> Any:
    """A setting given as text, as RecBole users write them: a Python literal (``5``, ``1e-3``,
    ``True``, ``None``, ``[10,20]``, ``{'mode': 'full'}``, ``'x'``), ``true``/``false`` in any
    case, a list of bare names (``[soft,cut]``: strings), or else the text itself (a name, a
    path). Nothing is evaluated: text that would call,
    index or look up something (``__import__('os')...``) is a ``SettingsError``."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    else:
        if isinstance(value, LITERAL_TYPES):
            return value
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return text  # not an expression: a path, a name with dashes, ...
    if any(isinstance(node, COMPUTING_NODES) for node in ast.walk(tree)):
        raise SettingsError(f"{key}: expected a literal (a number, True/False, None, a string, a list or a dict), "
                            f"got {text!r:.80}, which would have to be evaluated")
    if isinstance(tree.body, ast.List) and all(isinstance(e, (ast.Name, ast.Constant)) for e in tree.body.elts):
        return [e.id if isinstance(e, ast.Name) else e.value for e in tree.body.elts]  # [soft,cut]: names
    return text


def read_settings_file(file: str | Path, loader, key: str) -> dict[str, Any]:
    """A yaml settings file as a mapping, read with RecBole's loader (safe: no Python tags); a
    file that cannot be read, is not YAML or holds no mapping is a ``SettingsError`` naming the
    file and the line."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{key}: cannot read {str(file)!r} ({err})") from None
    try:
        content = yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SettingsError(f"{key}: {str(file)!r}{where}: expected YAML of key: value lines "
                            f"(plain values, no tags), {problem}") from None
    if content is not None and not isinstance(content, dict):
        raise SettingsError(f"{key}: {str(file)!r}: expected a mapping of keys to values, "
                            f"got a {type(content).__name__}")
    return content or {}


def _base_configs(dataset_yaml: Path) -> list[Path]:
    """The files a dataset config names in ``base_configs`` (in ``dataset_configs/``), e.g.
    a schedule shared by several datasets; they rank below the dataset config itself."""
    if not dataset_yaml.is_file():
        return []
    names = (yaml.safe_load(dataset_yaml.read_text()) or {}).get("base_configs") or []
    files = [DATASET_CONFIG_DIR / f"{name}.yaml" for name in names]
    for name, file in zip(names, files):
        if not file.is_file():
            raise FileNotFoundError(f"{dataset_yaml}: base_configs names '{name}', but {file} does not exist")
    return files


def _recbole_dataset_yaml(dataset: str) -> Path | None:
    """RecBole's bundled dataset yaml (re-applied so it stays above plugin model defaults)."""
    import recbole

    path = Path(recbole.__file__).resolve().parent / "properties" / "dataset" / f"{dataset}.yaml"
    return path if path.is_file() else None

