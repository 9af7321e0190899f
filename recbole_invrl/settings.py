"""Settings checked before any data loads: types, ranges, choices and the keys that must agree.

Every key the plugin's yaml files define (``recbole_invrl/properties/overall.yaml`` and
``properties/model/*.yaml``) and the RecBole keys the plugin relies on has a ``Rule``; its
type is the type of the yaml default (a test holds them together) and its range the one
documented in ``--help``. A broken setting raises ``SettingsError``, one line that names the
key, the value and what was expected; ``run_recbole_invrl.py`` prints it and exits with 2.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PROPERTIES_DIR = PACKAGE_DIR / "properties"
PLUGIN_YAMLS = {"overall": PROPERTIES_DIR / "overall.yaml",
                **{p.stem: p for p in sorted((PROPERTIES_DIR / "model").glob("*.yaml"))}}
# Options of run_recbole_invrl.py itself; RecBole's Config sees them on the command line too.
SCRIPT_KEYS = ("model", "dataset", "config_files", "result_json", "nproc", "world_size", "ip", "port",
               "group_offset")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")


class SettingsError(ValueError):
    """A setting that cannot work; the message is one line naming key, value and expectation."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Rule:
    """What a key accepts: a kind with an optional range ``[low, high]`` (``low_open``:
    ``(low, ...``), a set of choices, and ``~`` if ``nullable``."""

    kind: str  # int, float, bool, str, names (a name or a list of them), dict
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str) and value != ""
        elif self.kind == "names":
            ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        else:
            ok = isinstance(value, dict)
        if not ok:
            return False
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def expected(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        else:
            text = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string",
                    "names": "a name or a list of names", "dict": "a mapping"}[self.kind]
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {_num(self.low)}"
        return text + (" or ~" if self.nullable else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def I(low=None, high=None, **kw) -> Rule:  # noqa: E743 - short names keep the table readable
    return Rule("int", low, high, **kw)


def F(low=None, high=None, **kw) -> Rule:
    return Rule("float", low, high, **kw)


def B() -> Rule:
    return Rule("bool")


def S(*choices: str, nullable: bool = False) -> Rule:
    return Rule("str", choices=choices, nullable=nullable)


POSITIVE = F(0, low_open=True)
WEIGHT = F(0)
COUNT = I(1)
MAX_WIDTH = 16384  # widest embedding or projection: 1,000,000 rows of it are 61 GiB in float32
WIDTH = I(1, MAX_WIDTH)
MAX_ENVS = 1024  # environments are trained as one batch of models; beyond this none fits in memory

# Keys of the plugin's yaml files; the model yamls' keys apply to the models that read them.
PLUGIN_RULES: dict[str, Rule] = {
    # overall.yaml (metrics, topk and valid_metric are RecBole's, see KEY_CHECKS)
    "feature_cache": B(), "feature_cache_dir": S(nullable=True), "ddp_timeout": I(1),
    "keep_freed_memory": B(), "fused_optimizer": B(),
    # UltraGCNMM.yaml
    "embedding_size": WIDTH, "content_size": WIDTH, "word_embedding_size": WIDTH,
    "content_fields": Rule("names", nullable=True), "init_std": POSITIVE, "neg_num": COUNT,
    "negative_weight": WEIGHT, "gamma_c": WEIGHT, "w1": WEIGHT, "w2": F(0, nullable=True), "w3": WEIGHT,
    "w4": F(0, nullable=True), "gamma_i": WEIGHT, "num_neighbors": I(0), "id_reg_weight": WEIGHT,
    "proj_reg_weight": WEIGHT, "normalize_all": B(),
    # VBPR.yaml
    "visual_size": I(1, MAX_WIDTH, nullable=True), "reg_weight": WEIGHT,
    # DUIF.yaml, MMGCN.yaml
    "latent_size": I(1, MAX_WIDTH, nullable=True), "n_layers": COUNT, "combination": S("concat", "add"),
    # FREEDOM.yaml, LATTICE.yaml
    "knn_k": COUNT, "n_mm_layers": COUNT, "n_ui_layers": I(0), "edge_dropout": F(0, 1), "visual_weight": F(0, 1),
    "mm_loss_weight": WEIGHT, "feat_embed_dim": WIDTH, "lambda_coeff": F(0, 1),
    # GRCN.yaml
    "num_routing": COUNT, "weight_mode": S("confid", "max", "mean"), "pruning": B(),
    # InvRL.yaml
    "invrl_backbone": S(), "invariance_path": S("auto", "eq14", "forward"), "pretrain_epochs": COUNT, "pretrained_path": S(nullable=True),
    "fixed_mask": S(nullable=True), "invrl_iterations": COUNT, "num_envs": I(1, MAX_ENVS),
    "partition_models": S("shared", "fresh"), "partition_start": S("score", "random"),
    "partition_assign": S("likelihood", "score"), "partition_samples": COUNT, "partition_epochs": COUNT, "partition_rounds": COUNT,
    "moved_threshold": F(-1, 1), "partition_l1_weight": WEIGHT, "mask_epochs": COUNT, "mask_travel": POSITIVE,
    "mask_sigma": WEIGHT, "alpha": WEIGHT, "mask_lambda": WEIGHT, "mask_reg": S("l2", "l2_half", "l0"),
    "mask_model_start": S("pretrained", "random"), "penalty_growth": POSITIVE, "mask_type": S("float", "binary"),
    "final_mask_forms": Rule("names", nullable=True),
    "final_mask_top": F(0, 1, low_open=True), "final_mask_sharpness": POSITIVE,
    "resume": B(), "truth_dir": S(nullable=True),
}
# RecBole keys the plugin relies on (RecBole's overall.yaml; the ranges its code needs).
RECBOLE_RULES: dict[str, Rule] = {
    "learning_rate": POSITIVE, "epochs": COUNT, "train_batch_size": COUNT, "eval_batch_size": COUNT,
    "stopping_step": COUNT, "eval_step": COUNT, "seed": I(0, 2**32 - 1), "weight_decay": WEIGHT,
    "use_gpu": B(), "reproducibility": B(), "show_progress": B(), "shuffle": B(), "checkpoint_dir": S(),
    "worker": I(0), "metric_decimal_place": I(0), "loss_decimal_place": I(0),
    "learner": S(*LEARNERS), "enable_amp": B(), "enable_scaler": B(), "repeatable": B(),
    "save_dataset": B(), "save_dataloaders": B(), "log_wandb": B(),
    "clip_grad_norm": Rule("dict", nullable=True),
}
# Keys of RecBole's own model yamls: a RecBole model's key is checked where the model's default
# passes the rule (``recbole_model_keys``), so a key of the same name but another meaning is not.
RECBOLE_MODEL_RULES: dict[str, Rule] = {
    "hidden_size": WIDTH, "inner_size": WIDTH, "dropout_prob": F(0, 1), "hidden_dropout_prob": F(0, 1),
    "attn_dropout_prob": F(0, 1), "n_heads": COUNT, "require_pow": B(),
}
RULES = {**RECBOLE_MODEL_RULES, **RECBOLE_RULES, **PLUGIN_RULES}


# ---------------------------------------------------------------------------------- checks
def fail(key: str, value: Any, expected: str) -> None:
    raise SettingsError(f"{key}: expected {expected}, got {value!r}")


def check_value(key: str, value: Any) -> None:
    """``value`` of ``key`` against its rule (or its check in ``KEY_CHECKS``)."""
    if key in KEY_CHECKS:
        KEY_CHECKS[key](value)
    elif key in RULES and not RULES[key].accepts(value):
        fail(key, value, RULES[key].expected())


def _check_topk(value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in values):
        fail("topk", value, "an integer >= 1 or a list of them")


def _check_metrics(value: Any) -> None:
    from recbole.evaluator.register import metric_types

    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(m, str) for m in values):
        fail("metrics", value, "a metric name or a list of them")
    for metric in values:
        if metric.lower() not in metric_types:
            raise SettingsError(f"metrics: unknown metric {metric!r}{_close(metric, _metric_names())}")


def _metric_names() -> list[str]:
    from recbole.evaluator.register import metrics_dict

    return sorted({metric.__name__ for metric in metrics_dict.values()})


def _check_valid_metric(value: Any) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]+(@\d+)?", value):
        fail("valid_metric", value, "a metric name such as NDCG@10")


def _check_state(value: Any) -> None:
    if value is not None and (not isinstance(value, str) or value.lower() not in LOG_LEVELS):
        fail("state", value, "one of " + ", ".join(s.upper() for s in LOG_LEVELS))


def _check_gpu_id(value: Any) -> None:
    if not isinstance(value, (str, int, tuple)) or isinstance(value, bool):
        fail("gpu_id", value, "a GPU id such as '0' or '0,1' ('' for the CPU)")


def _check_eval_args(value: Any) -> None:
    if not isinstance(value, dict):
        fail("eval_args", value, "a mapping with split, group_by, order and mode")
    mode = value.get("mode", "full")
    modes = mode.values() if isinstance(mode, dict) else [mode]
    for m in modes:
        if not isinstance(m, str) or not re.fullmatch(r"full|labeled|(uni|pop)\d+", m):
            fail("eval_args.mode", m, "full, labeled, uniN or popN")


def _check_train_neg_sample_args(value: Any) -> None:
    if value is None or value == "None":
        return
    if not isinstance(value, dict):
        fail("train_neg_sample_args", value, "a mapping (distribution, sample_num, ...) or ~")
    distribution = value.get("distribution", "uniform")
    if distribution not in (None, "None", "none", "uniform", "popularity"):
        fail("train_neg_sample_args.distribution", distribution, "uniform, popularity or ~")
    num = value.get("sample_num", 1)
    if num != "none" and (not isinstance(num, int) or isinstance(num, bool) or num < 1):
        fail("train_neg_sample_args.sample_num", num, "an integer >= 1")


def _check_final_mask_forms(value: Any) -> None:
    from recbole_invrl.model.mask_forms import MASK_FORMS

    names = [value] if isinstance(value, str) else value
    if value is not None and (not isinstance(names, list) or not names
                              or any(n not in MASK_FORMS for n in names) or len(set(names)) < len(names)):
        fail("final_mask_forms", value, f"a form or a list of distinct forms among {', '.join(MASK_FORMS)}")


def _check_data_path(value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        fail("data_path", value, "a folder path")
    if Path(value).exists() and not Path(value).is_dir():
        fail("data_path", value, "a folder, not a file")
    if Path(value).is_dir() and not os.access(value, os.R_OK | os.X_OK):
        fail("data_path", value, "a folder this user can read")


def _check_mask_lr(value: Any) -> None:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                            or not math.isfinite(value) or value <= 0):
        fail("mask_lr", value, "auto or a number > 0")


def _check_final_proj_reg_weight(value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(WEIGHT.accepts(v) for v in values) or len(set(values)) < len(values):
        fail("final_proj_reg_weight", value, "a number >= 0 or a list of distinct ones (each tried on validation)")


def _check_final_mask_cut(value: Any) -> None:
    if value == "otsu":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        fail("final_mask_cut", value, "otsu or a number in (0, 1]")


KEY_CHECKS: dict[str, Callable[[Any], None]] = {
    "topk": _check_topk, "metrics": _check_metrics, "valid_metric": _check_valid_metric,
    "state": _check_state, "gpu_id": _check_gpu_id, "eval_args": _check_eval_args,
    "train_neg_sample_args": _check_train_neg_sample_args,
    "data_path": _check_data_path, "mask_lr": _check_mask_lr, "final_mask_forms": _check_final_mask_forms,
    "final_mask_cut": _check_final_mask_cut, "final_proj_reg_weight": _check_final_proj_reg_weight,
}
# What RecBole's own Config reads while it is built; checked on the given values first.
EARLY_KEYS = (*KEY_CHECKS, "use_gpu")  # use_gpu: Config sets it to the device it chose


def check_external(external: Mapping[str, Any]) -> None:
    """The given (file, dict, command-line) values RecBole's ``Config`` acts on while it is
    built, so that a bad one is a ``SettingsError`` instead of an error inside RecBole."""
    for key in EARLY_KEYS:
        if key in external:
            check_value(key, external[key])


def check_settings(config) -> None:
    """Every rule on the final settings of ``config``, then the keys that must agree."""
    final = config.final_config_dict
    scoped = set(model_plugin_keys(config.model, final.get("invrl_backbone")))
    scoped.update(recbole_model_keys(config.model))
    for key, value in final.items():
        if key in RECBOLE_RULES or key in KEY_CHECKS or key in scoped or key in _overall_keys():
            check_value(key, value)
    check_conflicts(final)
    check_files(final)


@lru_cache(maxsize=None)
def recbole_model_keys(model: str) -> tuple[str, ...]:
    """Keys of a RecBole model's own yaml that the rule table checks: those with a rule that
    the model's default passes (a key of the same name and meaning as the plugin's)."""
    import recbole

    path = Path(recbole.__file__).parent / "properties" / "model" / f"{model}.yaml"
    if not path.is_file():
        return ()
    defaults = load_yaml_defaults(path)
    return tuple(k for k, v in defaults.items() if k in RULES and k not in KEY_CHECKS and RULES[k].accepts(v))


def check_conflicts(final: Mapping[str, Any]) -> None:
    """Keys whose values contradict each other."""
    metric, _, k = str(final["valid_metric"]).partition("@")
    metrics = [m.lower() for m in (final["metrics"] if isinstance(final["metrics"], list) else [final["metrics"]])]
    if metric.lower() not in metrics:
        raise SettingsError(f"valid_metric: {final['valid_metric']!r} is not among metrics {final['metrics']}; "
                            "add it to metrics or choose one of them")
    topk = final["topk"] if isinstance(final["topk"], list) else [final["topk"]]
    if k and int(k) not in topk:
        raise SettingsError(f"valid_metric: {final['valid_metric']!r} needs {k} in topk, got topk {topk}")
    if final.get("fixed_mask") and final.get("pretrained_path"):
        raise SettingsError(f"fixed_mask and pretrained_path: set only one (fixed_mask skips the stage that "
                            f"pretrained_path replaces), got {final['fixed_mask']!r} and {final['pretrained_path']!r}")
    size, visual = final.get("embedding_size"), final.get("visual_size")
    if final.get("model") == "VBPR" or final.get("invrl_backbone") == "VBPR":
        if visual is not None and isinstance(size, int) and visual >= size:
            raise SettingsError(f"visual_size: expected an integer below embedding_size = {size}, got {visual!r}")
    if final.get("model") == "InvRL":
        from recbole_invrl.model.general_recommender.invrl import backbone_class_of

        backbone_class_of(final)  # invrl_backbone and invariance_path, before any data loads
    nproc, world = final.get("nproc"), final.get("world_size")
    if isinstance(nproc, int) and isinstance(world, int) and world < nproc:
        raise SettingsError(f"world_size: expected at least nproc = {nproc}, got {world}")


def check_files(final: Mapping[str, Any]) -> None:
    """Files and folders a setting names must exist and be of their kind; folders a run
    writes to must be creatable."""
    for key in ("pretrained_path", "fixed_mask"):
        if final.get(key) and not Path(final[key]).is_file():
            raise SettingsError(f"{key}: expected an existing file, got {final[key]!r} (no such file)")
    if final.get("pretrained_path"):
        check_checkpoint_file("pretrained_path", final["pretrained_path"])
    if final.get("fixed_mask"):
        check_mask_file("fixed_mask", final["fixed_mask"])
    if final.get("truth_dir") and not Path(final["truth_dir"]).is_dir():
        raise SettingsError(f"truth_dir: expected an existing folder, got {final['truth_dir']!r} (no such folder)")
    if isinstance(final.get("checkpoint_dir"), str):
        check_output_path("checkpoint_dir", final["checkpoint_dir"], folder=True)


def check_checkpoint_file(key: str, path: str) -> None:
    """A file ``torch.save`` wrote (a zip archive); its content is read later, weights only."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise SettingsError(f"{key}: expected a checkpoint written by torch.save (a .pth file of this plugin), "
                            f"got {path!r}, which is not one")


def check_mask_file(key: str, path: str) -> None:
    """A ``.npy`` file of one number per content dimension (its header, read without unpickling)."""
    from recbole_invrl.data.convert.safe_pickle import read_npy_header

    try:
        with open(path, "rb") as f:
            shape, _, dtype = read_npy_header(f)
    except (OSError, ValueError) as err:
        raise SettingsError(f"{key}: expected a .npy file (np.save) of one number per content dimension, "
                            f"got {path!r} ({err})") from None
    if len(shape) != 1 or dtype.kind not in "fiub":
        raise SettingsError(f"{key}: expected a .npy file of one number per content dimension, got {path!r} "
                            f"(shape {shape}, dtype {dtype})")


def check_output_path(key: str, path: str, folder: bool = False) -> None:
    """A folder (``folder``) or file a run will write: its nearest existing ancestor is a
    writable folder, and the path itself is not of the other kind."""
    target = Path(path)
    if not str(path).strip():
        fail(key, path, "a folder path" if folder else "a file path")
    if target.exists() and target.is_dir() != folder:
        fail(key, path, "a folder, not a file" if folder else "a file path, not a folder")
    parent = target if folder else target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        fail(key, path, f"a path that can be created ({str(parent)!r} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(key, path, f"a path that can be written ({str(parent)!r} is not writable)")


def check_script_options(nproc: int, world_size: int, group_offset: int) -> None:
    """run_recbole_invrl.py's own process options."""
    if nproc < 1:
        fail("nproc", nproc, "an integer >= 1")
    if world_size != -1 and world_size < nproc:
        fail("world_size", world_size, f"-1 (= nproc) or an integer >= nproc = {nproc}")
    if group_offset < 0 or (world_size != -1 and group_offset + nproc > world_size):
        fail("group_offset", group_offset, "an integer >= 0 with group_offset + nproc <= world_size")


def check_command_line_keys(keys: Iterable[str], config) -> None:
    """Every ``--key=value`` names a key some layer of settings or some code reads."""
    known = known_keys(config)
    for key in keys:
        if key not in known and key not in _keys_read_in_code():
            raise SettingsError(f"--{key}: unknown key{_close(key, known)}")


def known_keys(config) -> set[str]:
    from recbole.utils import argument_list

    lists = (argument_list.general_arguments, argument_list.training_arguments,
             argument_list.evaluation_arguments, argument_list.dataset_arguments)
    return {*config.internal_config_dict, *SCRIPT_KEYS, *RULES, *KEY_CHECKS, *(k for lst in lists for k in lst),
            *(key for path in PLUGIN_YAMLS.values() for key in yaml_keys(path))}


@lru_cache(maxsize=1)
def _keys_read_in_code() -> frozenset[str]:
    """Keys that RecBole's or the plugin's code reads as ``config["key"]`` (some have no default)."""
    import recbole

    pattern = re.compile(r"""config(?:_dict)?(?:\[|\.get\()\s*["'](\w+)["']""")
    keys: set[str] = set()
    for root in (Path(recbole.__file__).parent, PACKAGE_DIR):
        for path in root.rglob("*.py"):
            keys.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(keys)


def _close(name: str, candidates: Iterable[str]) -> str:
    """``; did you mean A, B?`` for close matches (case-insensitive), or nothing."""
    candidates = sorted(set(candidates))
    lowered = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(lowered[m] for m in matches)}?" if matches else ""


# ---------------------------------------------------------------------------------- models
@lru_cache(maxsize=1)
def recbole_model_names() -> tuple[str, ...]:
    """RecBole's models (from its model files and yamls, without importing them); the
    xgboost/lightgbm wrappers, which need optional packages, are left out."""
    import recbole

    root = Path(recbole.__file__).parent
    by_lower = {p.stem.lower(): p.stem for p in (root / "properties" / "model").glob("*.yaml")}
    by_lower["random"] = "Random"
    names = {by_lower.get(p.stem, p.stem) for p in root.glob("model/*_recommender/*.py")
             if p.parent.name != "exlib_recommender" and not p.stem.startswith("_")}
    return tuple(sorted(names, key=str.lower))


def unknown_model_message(name: str, plugin_models: list[str]) -> str:
    """One line: the unknown ``name`` and close matches among plugin and RecBole models."""
    candidates = [*plugin_models, *recbole_model_names()]
    return (f"model: unknown model {name!r}{_close(name, candidates)} (recbole_invrl models: "
            f"{', '.join(plugin_models)}; RecBole models: see --help)")


def is_recbole_model(name: str) -> bool:
    return name in recbole_model_names()


# ---------------------------------------------------------------------------------- datasets
def known_datasets(data_path: str | Path | None = None) -> list[str]:
    """Datasets with a config here or in RecBole, or with a folder of atomic files in ``data_path``."""
    import recbole

    from recbole_invrl.config import DATASET_CONFIG_DIR

    names = {p.stem for p in DATASET_CONFIG_DIR.glob("*.yaml")}
    url_file = Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml"
    if url_file.is_file():
        names.update((yaml.safe_load(url_file.read_text()) or {}).keys())
    if data_path and Path(data_path).is_dir():
        names.update(p.name for p in Path(data_path).iterdir() if p.is_dir() and any(p.glob("*.inter")))
    return sorted(names)


def dataset_suggestion(dataset: str, data_path: str | Path | None) -> str:
    """`` Did you mean ...?`` for a dataset name that no config or folder knows."""
    known = known_datasets(data_path)
    if dataset in known:
        return ""
    close = _close(dataset, known)
    return f" (unknown dataset{close[:-1]}?)" if close else f" (unknown dataset; known: {', '.join(known)})"


# ---------------------------------------------------------------------------------- yaml docs
_LINE = re.compile(r"^([A-Za-z_]\w*):[ \t]*(.*?)(?:[ \t]+#[ \t]*(.*))?$")


@lru_cache(maxsize=None)
def yaml_entries(path: Path) -> tuple[tuple[str, str, str], ...]:
    """``(key, default text, comment)`` for each top-level key of a plugin yaml file."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _LINE.match(line)
        if match:
            key, default, comment = match.groups()
            entries.append((key, default or "~", (comment or "").strip()))
    return tuple(entries)


def yaml_keys(path: Path) -> list[str]:
    return [key for key, _, _ in yaml_entries(path)]


@lru_cache(maxsize=None)
def _overall_keys() -> frozenset[str]:
    return frozenset(yaml_keys(PLUGIN_YAMLS["overall"]))


def model_yaml_names(model: str, backbone: str | None = None) -> list[str]:
    """The plugin model yamls ``model`` reads (InvRL: its backbone's, then its own)."""
    return {"InvRL": [backbone or "UltraGCNMM", "InvRL"]}.get(model, [model])


def model_plugin_keys(model: str, backbone: str | None = None) -> list[str]:
    """Keys of the plugin yamls that ``model`` reads."""
    files = model_yaml_names(model, backbone)
    return [key for name in files if name in PLUGIN_YAMLS for key in yaml_keys(PLUGIN_YAMLS[name])]


def load_yaml_defaults(path: Path) -> dict[str, Any]:
    """A plugin yaml as RecBole's Config reads it (``1e-4`` is a float there too)."""
    from recbole.config import Config as RecBoleConfig

    loader = RecBoleConfig._build_yaml_loader(None)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}


def settings_help(effective: Mapping[str, Any] | None = None, dataset: str = "") -> str:
    """The plugin's keys with defaults, one line each, grouped by the file that sets them;
    with ``effective`` (a dataset's final settings) a value it changes is shown instead,
    the model's default after it."""
    lines = []
    read = set()
    if effective is not None:  # the yamls the run reads
        read = {"overall", *model_yaml_names(effective.get("model"), effective.get("invrl_backbone"))}
    for name, path in PLUGIN_YAMLS.items():
        title = "every model" if name == "overall" else name
        lines.append(f"{title} ({path.relative_to(PACKAGE_DIR.parent)}):")
        defaults = load_yaml_defaults(path) if name in read else {}
        for key, default, comment in yaml_entries(path):
            rule = RULES.get(key)
            expected = f" [{rule.expected()}]" if rule else ""
            shown = default
            if name in read and key in effective and effective[key] != defaults.get(key):
                shown = _yaml_text(effective[key])
                expected += f" ({dataset}; model default {default})"
            lines.append(f"  --{key}={shown}".ljust(32) + f" {comment}{expected}")
    return "\n".join(lines)


def _yaml_text(value: Any) -> str:
    return "~" if value is None else str(value)
