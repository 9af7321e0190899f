"""``run_recbole_invrl``: config -> dataset -> model -> trainer -> RecBole evaluator;
``run``: the same in one process or in ``nproc`` processes (RecBole's distributed path)."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from logging import getLogger
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole.utils import get_local_time, init_seed, set_color

from recbole_invrl import allocator
from recbole_invrl.threads import start_governor
from recbole_invrl.compat import write_json_atomic
from recbole_invrl.config import Config
from recbole_invrl.data import MissingDatasetError, create_dataset, data_preparation
from recbole_invrl.data.utils import check_content_fields, ensure_dataset_files, refuse_pickled_caches
from recbole_invrl.distributed import agreed_text
from recbole_invrl.settings import check_settings, dataset_suggestion
from recbole_invrl.utils import get_model, get_trainer

RUN_HANDLER = "_recbole_invrl_run"  # marks the log handlers a run installs (removed by the next run)
RESULT_OUTPUTS = ("checkpoint", "mask", "pretrain")  # removed when a run fails


def run_recbole_invrl(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` and evaluate it, like RecBole's ``run_recbole``.

    Returns ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
    ``test_result`` and ``wall_seconds`` (plus what the trainer adds, e.g. InvRL's mask).
    """
    start = time.time()
    config = load_config(model, dataset, config_file_list, config_dict)
    start_governor()  # the thread team follows the load (recbole_invrl/threads.py)
    allocator.apply_config(config)
    init_seed(config["seed"], config["reproducibility"])
    os.makedirs(config["checkpoint_dir"], exist_ok=True)  # ranks started together race on it
    stem = agreed_text(f"{config['model']}-{config['dataset']}-{get_local_time()}-{uuid.uuid4().hex[:6]}", config)
    outputs: dict[str, str | None] = {"log": init_run_logger(config, stem)}
    logger = getLogger()
    logger.info(config)
    try:
        trainer, result = _train_and_test(config, stem, saved, outputs)
    except BaseException as err:
        discard_results(outputs, err)
        raise
    result.update(getattr(trainer, "extra_results", lambda: {})())
    result["outputs"] = {k: v for k, v in outputs.items() if v and os.path.exists(v)}
    result["wall_seconds"] = round(time.time() - start, 3)
    logger.info(format_summary(result))
    if not config["single_spec"]:
        dist.destroy_process_group()
    return result


def load_config(model, dataset, config_file_list=None, config_dict=None) -> Config:
    """``Config`` with every setting checked and the dataset's files found (or the bundled one
    built): what can fail on the settings fails here, before anything is logged or written."""
    config = Config(model, dataset, config_file_list, config_dict)
    check_settings(config)
    refuse_pickled_caches(config)
    try:
        ensure_dataset_files(config)
    except MissingDatasetError as err:
        hint = dataset_suggestion(config["dataset"], os.path.dirname(os.path.normpath(config["data_path"])))
        raise MissingDatasetError(" ".join(f"{err}{hint}".split())) from None
    check_content_fields(config)
    return config


def _train_and_test(config, stem: str, saved: bool, outputs: dict[str, str | None]):
    """Dataset, model, trainer, fit and test; ``outputs`` is filled as the files are named."""
    logger = getLogger()
    dataset_obj = create_dataset(config)
    logger.info(dataset_obj)
    train_data, valid_data, test_data = data_preparation(config, dataset_obj)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, f"{stem}.pth")  # the log's stem
    outputs["checkpoint"] = trainer.saved_model_file if saved else None
    outputs.update(getattr(trainer, "output_files", lambda: {})())
    outputs["tensorboard"] = getattr(trainer.tensorboard, "log_dir", None)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        "saved_model_file": trainer.saved_model_file if saved else None,
    }
    return trainer, result


def init_run_logger(config, stem: str) -> str:
    """RecBole's logging (coloured console, plain file, level from ``state``) into
    ``log/<model>/<stem>.log``, the stem the checkpoint shares. The handlers of an earlier
    run in this process are closed first, so each run writes its own file (RecBole's
    ``init_logger`` adds handlers only to a bare root logger). Returns the log file's path."""
    import colorlog
    from colorama import init
    from recbole.utils.logger import RemoveColorFilter, log_colors_config

    init(autoreset=True)
    rank = config["local_rank"] if not config["single_spec"] else 0
    folder = os.path.join("log", config["model"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{stem}.log" if rank == 0 else f"{stem}-rank{rank}.log")
    level = getattr(logging, str(config["state"] or "info").upper(), logging.INFO)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
    file_handler.addFilter(RemoveColorFilter())
    console = logging.StreamHandler()
    console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s",
                                                   "%d %b %H:%M", log_colors=log_colors_config))
    root = getLogger()
    for handler in [h for h in root.handlers if getattr(h, RUN_HANDLER, False)]:
        root.removeHandler(handler)
        handler.close()
    for handler in (console, file_handler):
        handler.setLevel(level)
        setattr(handler, RUN_HANDLER, True)
        root.handlers.insert(0, handler)  # first: RecBole names the tensorboard folder after it
    root.setLevel(level)
    return path


def discard_results(outputs: dict[str, str | None], err: BaseException) -> None:
    """A failed or interrupted run leaves nothing that looks like a result: its checkpoints
    and mask are removed, and its record becomes ``-record.failed.json`` with the error.
    The log, the tensorboard folder and InvRL's resumable state (keyed by the settings) stay."""
    for key in RESULT_OUTPUTS:
        path = outputs.get(key)
        if path and os.path.isfile(path):
            os.remove(path)
    record = outputs.get("record")
    if record and os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            content = json.load(f)
        content.update(status="failed", error=f"{type(err).__name__}: {err}")
        write_json_atomic(content, failed_name(record))
        os.remove(record)
        outputs["record"] = failed_name(record)


def failed_name(path: str) -> str:
    """``x-record.json`` -> ``x-record.failed.json``."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.failed{ext}"


def format_summary(result: dict[str, Any]) -> str:
    """The end-of-run summary: test metrics as a table (a row per metric, a column per K)
    and the paths of the run's files."""
    lines = [set_color("test result", "yellow")]
    table: dict[str, dict[str, float]] = {}
    for key, value in (result.get("test_result") or {}).items():
        metric, _, k = key.partition("@")
        table.setdefault(metric, {})[k] = value
    ks = sorted({k for row in table.values() for k in row}, key=lambda k: (k == "", int(k) if k.isdigit() else 0))
    width = max([len(m) for m in table] + [6])
    lines.append("  " + "metric".ljust(width) + "".join(f"{'@' + k if k else '':>10}" for k in ks))
    for metric, row in table.items():
        lines.append("  " + metric.ljust(width) + "".join(f"{row[k]:>10.4f}" if k in row else f"{'':>10}"
                                                          for k in ks))
    lines.append(set_color("outputs", "yellow"))
    for name, path in result.get("outputs", {}).items():
        lines.append(f"  {name:<12}{path}")
    return "\n".join(lines)


def run(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str | int = "5678",
    group_offset: int = 0,
) -> dict[str, Any] | None:
    """RecBole's ``run``: one process, or ``nproc`` local ranks of a ``world_size`` run
    (ranks ``group_offset`` ... on this machine) that meet at ``ip:port``.

    Returns rank 0's result (None on a machine that does not hold rank 0)."""
    if nproc == 1 and world_size <= 0:
        return run_recbole_invrl(model, dataset, config_file_list, config_dict, saved)
    config_dict = {
        **(config_dict or {}),
        "nproc": nproc, "world_size": nproc if world_size == -1 else world_size,
        "ip": ip, "port": str(port), "offset": group_offset,
    }
    # Check the settings and build a bundled dataset once here, not in every rank at once.
    load_config(model, dataset, config_file_list, config_dict)
    reports = spawn_ranks(_run_rank, (model, dataset, config_file_list, config_dict, saved), nproc)
    return reports[0] if reports else None


def spawn_ranks(worker: Callable[..., None], args: tuple, nproc: int) -> list[Any]:
    """Start ``worker(rank, *args, queue)`` in ``nproc`` spawned processes and return what
    they put on ``queue``. The queue is drained while they run: a report larger than the
    pipe's buffer would otherwise block its rank's exit, and the join would wait forever."""
    queue = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(worker, args=(*args, queue), nprocs=nproc, join=False, start_method="spawn")
    reports: list[Any] = []
    finished = False
    while not finished:
        finished = context.join(timeout=0.5)  # re-raises a rank's exception
        while not queue.empty():
            reports.append(queue.get())
    return reports


def _run_rank(rank: int, model, dataset, config_file_list, config_dict, saved, queue) -> None:
    if "OMP_NUM_THREADS" not in os.environ:  # like torchrun: ranks share the cores, not oversubscribe
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config_dict["nproc"]))
    result = run_recbole_invrl(model, dataset, config_file_list, {**config_dict, "local_rank": rank}, saved)
    if rank == 0 and config_dict["offset"] == 0:
        queue.put(result)


def _plain(result) -> dict[str, float] | None:
    return None if result is None else {k: float(v) for k, v in result.items()}
