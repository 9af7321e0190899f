"""``run_recbole_invrl``: config -> dataset -> model -> trainer -> RecBole evaluator."""
from __future__ import annotations

import time
from logging import getLogger
from typing import Any

from recbole.utils import init_logger, init_seed, set_color

from recbole_invrl.config import Config
from recbole_invrl.data import create_dataset, data_preparation
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
    init_seed(config["seed"], config["reproducibility"])
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
    return result


def _plain(result) -> dict[str, float] | None:
    return None if result is None else {k: float(v) for k, v in result.items()}
