"""OpenMP settings that hold up when other processes share the CPUs.

libgomp's threads spin (up to ``GOMP_SPINCOUNT``) while they wait for each other. Alone on
a machine that costs nothing; beside other CPU-bound processes the spinning threads burn
the CPU time their neighbours need, and every process slows down far beyond its fair share.
With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once: the results are the same
and a process alone runs as fast (``bench/bench_contention.py`` measures both).

The entry scripts call ``configure_threads()`` before anything imports torch, since
libgomp and torch read these variables once, when they start:

- ``RECBOLE_INVRL_THREADS=keep`` leaves every OpenMP setting as the user made it;
- ``OMP_WAIT_POLICY`` is set to ``PASSIVE`` unless the user set it;
- ``OMP_NUM_THREADS`` is kept where the user set it; otherwise, when this process may use
  fewer CPUs than the machine has (``taskset``, cgroup cpusets), it is set to that number,
  since torch would otherwise start one thread per core of the machine.

This module must not import torch (nor numpy, which may start an OpenMP runtime too).
"""
from __future__ import annotations

import os
from typing import MutableMapping

SWITCH = "RECBOLE_INVRL_THREADS"
KEEP = "keep"


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def configure_threads(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP variables the user left unset (see the module docstring) in ``environ``
    (default ``os.environ``); return the ones it set. Call it before torch is imported."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "").strip().lower() == KEEP:
        return {}
    chosen: dict[str, str] = {}
    if not environ.get("OMP_WAIT_POLICY"):
        chosen["OMP_WAIT_POLICY"] = "PASSIVE"
    cpus = usable_cpus()
    if not environ.get("OMP_NUM_THREADS") and cpus < (os.cpu_count() or cpus):
        chosen["OMP_NUM_THREADS"] = str(cpus)
    environ.update(chosen)
    return chosen
