"""The search-space file of ``run_hyper.py``: RecBole's line format, parsed safely.

One parameter a line::

    num_envs choice [1,5,10,20,30]      # NAME choice PYTHON_LIST_LITERAL
    learning_rate uniform 0.0001,0.01   # NAME uniform LOW,HIGH
    neg_num quniform 10,100,10          # NAME quniform LOW,HIGH,Q  (all integers: int values)
    learning_rate loguniform -9,-4      # NAME loguniform LOW,HIGH  (natural-log bounds)

Blank lines and lines starting with ``#`` are skipped. Values are read with
``ast.literal_eval`` (RecBole's own parser calls ``eval``), and every name must be a key of
the RecBole ``Config`` of that model and dataset.
"""
from __future__ import annotations

import ast
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


SPACE_FORMATS = {
    "choice": "a non-empty Python list literal, e.g. [1, 5, 10]",
    "uniform": "LOW,HIGH (two numbers, LOW < HIGH)",
    "quniform": "LOW,HIGH,Q (three numbers, LOW < HIGH, Q > 0)",
    "loguniform": "LOW,HIGH (natural-log bounds, LOW < HIGH)",
}
LINE_FORMAT = "NAME TYPE VALUES, e.g. 'num_envs choice [1,5,10]'"
RESERVED_NAMES = {"model": "--model", "dataset": "--dataset"}
CHOICE_TYPES = (bool, int, float, str, list, tuple, dict, type(None))
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class HyperError(Exception):
    """A bad argument, search space or parameter: ``error: ...``, exit code 2, no trial run."""


class SearchSpaceError(HyperError):
    """A bad search-space file; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")




@dataclass(frozen=True)
class SearchParam:
    """One line of a search-space file."""

    name: str
    kind: str  # choice | uniform | quniform | loguniform
    values: tuple  # the choices, or (low, high[, q])
    line: int = 0

    @property
    def integer(self) -> bool:
        """A quniform over integers yields ints (hyperopt gives floats such as 5.0)."""
        return self.kind == "quniform" and all(float(v).is_integer() for v in self.values)

    def expression(self):
        """The hyperopt expression of this parameter."""
        from hyperopt import hp

        if self.kind == "choice":
            return hp.choice(self.name, list(self.values))
        return getattr(hp, self.kind)(self.name, *self.values)

    def plain(self, value: Any) -> Any:
        """A sampled value as a plain Python value (numpy scalars, tuples and x.0 ints undone)."""
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, tuple):
            value = list(value)
        if self.integer:
            value = int(round(value))
        return value


def parse_space_line(text: str, path: str | Path, number: int) -> SearchParam | None:
    """One line -> ``SearchParam`` (None for a blank or comment line); ``SearchSpaceError`` if bad."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split(None, 2)
    if len(fields) < 3:
        raise SearchSpaceError(path, f"expected {LINE_FORMAT}; got '{stripped}'", number)
    name, kind, raw = fields
    if not NAME_PATTERN.match(name):
        raise SearchSpaceError(path, f"'{name}' is not a parameter name; expected {LINE_FORMAT}",
                               number)
    if kind not in SPACE_FORMATS:
        close = difflib.get_close_matches(kind, SPACE_FORMATS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SearchSpaceError(
            path, f"unknown type '{kind}' for {name}{hint}; expected one of "
                  f"{', '.join(SPACE_FORMATS)}", number)
    if kind == "choice":
        values = _parse_choice(raw, name, path, number)
    else:
        values = _parse_bounds(raw, name, kind, path, number)
    return SearchParam(name, kind, values, number)


def _parse_choice(raw: str, name: str, path: str | Path, number: int) -> tuple:
    expected = f"choice values of {name}: expected {SPACE_FORMATS['choice']}"
    try:
        values = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        reason = getattr(err, "msg", None) or str(err) or type(err).__name__
        raise SearchSpaceError(path, f"{expected}; got '{raw}' ({reason})", number) from None
    if not isinstance(values, (list, tuple)) or not values:
        raise SearchSpaceError(path, f"{expected}; got '{raw}'", number)
    seen = set()
    for value in values:
        if not isinstance(value, CHOICE_TYPES):
            raise SearchSpaceError(
                path, f"{expected}; {value!r} is a {type(value).__name__} (use numbers, "
                      "strings, booleans, None, lists or dicts)", number)
        text = override_text(value)
        if "=" in text or "\n" in text:
            raise SearchSpaceError(path, f"choice value {value!r} of {name} holds '=' or a line "
                                         "break, which a RecBole command line cannot carry",
                                   number)
        if repr(value) in seen:
            raise SearchSpaceError(path, f"choice value {value!r} of {name} is listed twice",
                                   number)
        seen.add(repr(value))
    return tuple(values)


def _parse_bounds(raw: str, name: str, kind: str, path: str | Path, number: int) -> tuple:
    expected = f"{kind} values of {name}: expected {SPACE_FORMATS[kind]}"
    parts = [p.strip() for p in raw.split(",")]
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        raise SearchSpaceError(path, f"{expected}; got '{raw}'", number) from None
    if len(numbers) != (3 if kind == "quniform" else 2) or not all(map(math.isfinite, numbers)):
        raise SearchSpaceError(path, f"{expected}; got '{raw}'", number)
    if numbers[0] >= numbers[1] or (kind == "quniform" and numbers[2] <= 0):
        raise SearchSpaceError(path, f"{expected}; got '{raw}'", number)
    return numbers


def load_search_space(path: str | Path) -> list[SearchParam]:
    """Parse a search-space file; ``SearchSpaceError`` for a missing, malformed or empty file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SearchSpaceError(path, "no such search-space file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SearchSpaceError(path, f"cannot read the search-space file: {err}") from None
    params: dict[str, SearchParam] = {}
    for number, line in enumerate(text.splitlines(), 1):
        param = parse_space_line(line, path, number)
        if param is None:
            continue
        if param.name in params:
            raise SearchSpaceError(
                path, f"{param.name} is defined twice (first on line {params[param.name].line})",
                number)
        params[param.name] = param
    if not params:
        raise SearchSpaceError(path, f"empty search space: no line {LINE_FORMAT}")
    return list(params.values())


def grid_size(params: Sequence[SearchParam]) -> int:
    """How many points an exhaustive search visits (all parameters must be choices)."""
    return math.prod(len(p.values) for p in params)


def check_param_names(params: Sequence[SearchParam], config_keys: Sequence[str],
                      fixed: Sequence[str], path: str | Path, where: str) -> None:
    """Every name must be a config key, not ``model``/``dataset``, and not also a fixed override."""
    keys = sorted(set(config_keys))
    for param in params:
        if param.name in RESERVED_NAMES:
            raise SearchSpaceError(path, f"{param.name} cannot be searched; set it with "
                                         f"{RESERVED_NAMES[param.name]}", param.line)
        if param.name not in config_keys:
            close = difflib.get_close_matches(param.name, keys, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SearchSpaceError(path, f"unknown parameter '{param.name}': not a config key "
                                         f"of {where}{hint}", param.line)
        if param.name in fixed:
            raise SearchSpaceError(
                path, f"{param.name} is searched here and also fixed by --{param.name}=... on "
                      "the command line (which would win in every trial); drop one", param.line)


def override_text(value: Any) -> str:
    """A value as RecBole's command line reads it back (strings as they are)."""
    return value if isinstance(value, str) else repr(value)


def params_to_overrides(params: dict[str, Any]) -> list[str]:
    """``{"num_envs": 5}`` -> ``["--num_envs=5"]``."""
    return [f"--{name}={override_text(value)}" for name, value in params.items()]
