"""``run_recbole_invrl``: config -> dataset -> model -> trainer -> RecBole evaluator;
``run``: the same in one process or in ``nproc`` processes (RecBole's distributed path)."""
from __future__ import annotations

import os
import time
from logging import getLogger
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole.utils import init_logger, init_seed, set_color

from recbole_invrl import allocator
from recbole_invrl.config import Config
from recbole_invrl.data import create_dataset, data_preparation
from recbole_invrl.data.utils import ensure_dataset_files
from recbole_invrl.utils import get_model, get_trainer


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
    config = Config(model, dataset, config_file_list, config_dict)
    allocator.apply_config(config)
    init_seed(config["seed"], config["reproducibility"])
    # RecBole makes ./log/<model> (init_logger) and checkpoint_dir (Trainer) without
    # exist_ok: ranks started together race on them (FileExistsError).
    for folder in (os.path.join("log", config["model"]), config["checkpoint_dir"]):
        os.makedirs(folder, exist_ok=True)
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    dataset_obj = create_dataset(config)
    logger.info(dataset_obj)
    train_data, valid_data, test_data = data_preparation(config, dataset_obj)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        "saved_model_file": trainer.saved_model_file if saved else None,
    }
    result.update(getattr(trainer, "extra_results", lambda: {})())
    result["wall_seconds"] = round(time.time() - start, 3)
    if not config["single_spec"]:
        dist.destroy_process_group()
    return result


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
    # Build a bundled dataset once here, not in every rank at the same time.
    ensure_dataset_files(Config(model, dataset, config_file_list, config_dict))
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
