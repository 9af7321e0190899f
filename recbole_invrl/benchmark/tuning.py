"""Equal-budget tuning for the benchmark (``run_benchmark.py --tune=N``).

Every model entry gets the same number N of trials over its own search space,
``hyper/<Model>.hyper`` (RecBole's line format, ``recbole_invrl.search_space``): the whole
grid when it has at most N points, else N points drawn at random (seeded). All trials of an
entry run on the first seed; the one with the best validation score (``valid_metric``) is
kept and runs on the other seeds. The test split is recorded for the table but never read
by a choice. A model without a search-space file runs untuned, and the table says so.

A trial is the model entry with the trial's settings appended, ``UltraGCNMM@proj_reg_weight=1.0``,
so it is recorded in ``runs.jsonl`` like any other run (tagged ``tuning_of``), and a rerun of
the same command skips what finished.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from recbole_invrl.benchmark.table import latest_rows
from recbole_invrl.search_space import SearchParam, grid_size, load_search_space, override_text
from recbole_invrl.utils import best_on_validation

HYPER_DIR = Path(__file__).resolve().parents[2] / "hyper"


def choose_on_validation(trials: Iterable[dict[str, Any]], bigger: bool = True) -> dict[str, Any]:
    """The trial with the best ``best_valid_score`` (the first of equals). Only the
    validation score is read: a trial's test result cannot change the choice."""
    return best_on_validation(trials, lambda trial: trial["best_valid_score"], bigger)


def space_file(entry: str, folder: Path | None = None) -> Path | None:
    """``hyper/<Model>.hyper`` (or in ``folder``) of an entry's model class, if there is one."""
    path = (folder or HYPER_DIR) / f"{entry.split('@', 1)[0]}.hyper"
    return path if path.is_file() else None


def trial_points(params: Sequence[SearchParam], n: int, seed: int) -> list[dict[str, Any]]:
    """N settings: the whole grid, in file order, when every parameter is a choice and the
    grid has at most N points; else N distinct points drawn with ``seed``."""
    if not params:
        return []
    if all(p.kind == "choice" for p in params) and grid_size(params) <= n:
        return [dict(zip((p.name for p in params), values))
                for values in itertools.product(*(p.values for p in params))]
    rng = np.random.default_rng(seed)
    points: list[dict[str, Any]] = []
    for _ in range(100 * n):
        point = {p.name: p.plain(_draw(p, rng)) for p in params}
        if point not in points:
            points.append(point)
        if len(points) == n:
            break
    return points


def _draw(param: SearchParam, rng: np.random.Generator) -> Any:
    if param.kind == "choice":
        return param.values[int(rng.integers(len(param.values)))]
    low, high = param.values[:2]
    if param.kind == "loguniform":
        return math.exp(rng.uniform(low, high))
    value = rng.uniform(low, high)
    if param.kind == "quniform":
        q = param.values[2]
        value = round(value / q) * q
    return value


def trial_entry(entry: str, point: dict[str, Any]) -> str:
    """The entry with a trial's settings appended: ``InvRL@mask_travel=1.0``."""
    return "@".join([entry, *(f"{name}={override_text(value)}" for name, value in point.items())])


def entry_trials(entry: str, n: int, seed: int, folder: Path | None = None) -> list[str]:
    """The trial entries of ``entry`` (``[entry]`` itself when it has no search space)."""
    path = space_file(entry, folder)
    if path is None:
        return [entry]
    own = {pair.split("=", 1)[0] for pair in entry.split("@")[1:]}
    params = [p for p in load_search_space(path) if p.name not in own]  # the entry's own settings stay
    return [trial_entry(entry, point) for point in trial_points(params, n, seed)] or [entry]


def tuned_choices(rows: Iterable[dict[str, Any]], models: Sequence[str], first_seed: int,
                  bigger: bool = True) -> dict[str, tuple[str, str]]:
    """{chosen trial entry: (the model entry it was chosen for, how)} from the recorded
    trials: for each entry, its finished trials on ``first_seed``, chosen on validation."""
    latest = latest_rows(rows)
    chosen = {}
    for model in models:
        trials = [row for (entry, seed), row in latest.items()
                  if row.get("tuning_of") == model and seed == first_seed and row.get("status") == "ok"
                  and row.get("best_valid_score") is not None]
        if trials:
            best = choose_on_validation(trials, bigger)
            chosen[best["model"]] = (model, f"tuned on validation: best of {len(trials)} trials")
    return chosen
