"""Dataset and dataloader construction without RecBole's pickled caches."""
from __future__ import annotations

import importlib
from logging import getLogger
import sys
from pathlib import Path

from recbole.data.utils import create_samplers, get_dataloader
from recbole.utils import ModelType, set_color

from recbole_invrl.data.dataset import MultimodalDataset

PICKLED_CACHE_KEYS = ("save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path")
RECBOLE_DATASET_CLASS = {
    ModelType.SEQUENTIAL: "SequentialDataset",
    ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
}


class MissingDatasetError(FileNotFoundError):
    """The atomic files of a dataset are not where the config says."""


def create_dataset(config):
    """Build the dataset for ``config``: ``MultimodalDataset`` for general and context models,
    RecBole's class for the others. Unlike RecBole, never unpickles a saved dataset."""
    refuse_pickled_caches(config)
    ensure_dataset_files(config)
    recbole_datasets = importlib.import_module("recbole.data.dataset")
    special = getattr(recbole_datasets, f"{config['model']}Dataset", None)
    if special is not None:
        return special(config)
    class_name = RECBOLE_DATASET_CLASS.get(config["MODEL_TYPE"])
    if class_name is not None:
        return getattr(recbole_datasets, class_name)(config)
    return MultimodalDataset(config)


def data_preparation(config, dataset):
    """Split ``dataset`` and build RecBole's train/valid/test dataloaders (no pickled cache)."""
    built_datasets = dataset.build()
    train_dataset, valid_dataset, test_dataset = built_datasets
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built_datasets)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE:
        from recbole.sampler import KGSampler

        kg_sampler = KGSampler(
            dataset,
            config["train_neg_sample_args"]["distribution"],
            config["train_neg_sample_args"]["alpha"],
        )
        train_data = get_dataloader(config, "train")(
            config, train_dataset, train_sampler, kg_sampler, shuffle=True
        )
    else:
        train_data = get_dataloader(config, "train")(
            config, train_dataset, train_sampler, shuffle=config["shuffle"]
        )
    valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
    test_data = get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False)
    getLogger().info(
        set_color("[Training]: ", "pink")
        + f"train_batch_size = [{config['train_batch_size']}] "
        + f"train_neg_sample_args: [{config['train_neg_sample_args']}]"
    )
    getLogger().info(
        set_color("[Evaluation]: ", "pink")
        + f"eval_batch_size = [{config['eval_batch_size']}] eval_args: [{config['eval_args']}]"
    )
    return train_data, valid_data, test_data


def refuse_pickled_caches(config) -> None:
    """RecBole saves datasets and dataloaders as pickles, which run code when loaded."""
    for key in PICKLED_CACHE_KEYS:
        if config[key]:
            from recbole_invrl.settings import SettingsError

            raise SettingsError(
                f"{key}: not supported by recbole_invrl. RecBole stores datasets and dataloaders "
                "as pickles, and loading a pickle can run arbitrary code; set it to False/None"
            )


def expected_atomic_files(config) -> list[Path]:
    """The interaction files RecBole will read for ``config``."""
    folder = Path(config["data_path"])
    name = config["dataset"]
    suffixes = config["benchmark_filename"]
    if suffixes:
        return [folder / f"{name}.{suffix}.inter" for suffix in suffixes]
    return [folder / f"{name}.inter"]


def refuse_foreign_files(folder: Path, own: frozenset[str]) -> None:
    """A build replaces ``folder`` whole: refuse when it holds files the build does not write."""
    if not folder.is_dir():
        return
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in own)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise MissingDatasetError(
            f"dataset '{folder.name}': {folder} lacks the built files but holds others ({shown}); the build "
            "replaces the folder whole, so move them away or pass another --data_path")


CONTENT_TYPE_NAMES = ("float_seq", "token_seq")


def check_content_fields(config) -> None:
    """``content_fields`` against the ``.item`` file's header, before the data loads."""
    fields = config.final_config_dict.get("content_fields")
    item_file = Path(config["data_path"]) / f"{config['dataset']}.item"
    if fields is None or not item_file.is_file():
        return
    from recbole_invrl.data.dataset import _read_header
    from recbole_invrl.settings import SettingsError

    header = dict(_read_header(item_file, config["encoding"], config["field_separator"]))
    for field in [fields] if isinstance(fields, str) else fields:
        if field not in header:
            raise SettingsError(f"content_fields: {field!r} is not a column of {item_file} (its columns: "
                                f"{', '.join(f'{n}:{t}' for n, t in header.items())})")
        if header[field] not in CONTENT_TYPE_NAMES:
            raise SettingsError(f"content_fields: {field!r} in {item_file} has type {header[field]}; a modality "
                                "column must be float_seq (dense features) or token_seq (word ids)")


def ensure_dataset_files(config) -> None:
    """Build a bundled dataset on first use; otherwise fail with what to obtain and run."""
    missing = [f for f in expected_atomic_files(config) if not f.is_file()]
    if not missing:
        return
    from recbole_invrl.data import ml100k_mm

    if config["dataset"] == ml100k_mm.NAME:
        refuse_foreign_files(Path(config["data_path"]), ml100k_mm.OWN_FILES)
        print(f"building {ml100k_mm.NAME} into {config['data_path']} (first use, about 7 s)", file=sys.stderr)
        ml100k_mm.build(Path(config["data_path"]).parent)
        return
    hint = config["missing_data_hint"] or (
        "Convert your data to RecBole atomic files first, e.g. "
        f"`python -m recbole_invrl.data.convert grcn --src RAW_DIR --name {config['dataset']} "
        f"--out {Path(config['data_path']).parent}`"
    )
    raise MissingDatasetError(
        f"dataset '{config['dataset']}': missing {', '.join(str(f) for f in missing)}. "
        f"{hint.strip()}"
    )
