"""Keep freed memory in the process while training on a CPU (glibc's malloc).

PyTorch takes CPU tensors from ``malloc``. glibc serves large blocks with ``mmap`` and
hands them back to the kernel on ``free``, and trims the top of its heap likewise, so the
multi-MB temporaries a training step frees are faulted in again, page by page, at the
next step. Fixing the two thresholds below removes those page faults and shortens an
epoch (``bench/bench_step.py`` prints both).
The cost: up to ``TRIM_THRESHOLD`` of freed heap stays in the process's resident set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper bound on 64-bit systems: blocks up to this use the heap
TRIM_THRESHOLD = 256 * 2**20  # free heap kept before it is returned to the kernel
ENVIRONMENT_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; True if they were set.

    Nothing is changed off Linux/glibc, or where the user chose allocator settings
    through the environment (``MALLOC_*_`` variables, or another malloc via ``LD_PRELOAD``)."""
    if not sys.platform.startswith("linux") or any(os.environ.get(v) for v in ENVIRONMENT_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def apply_config(config) -> bool:
    """``keep_freed_memory()`` when ``config["keep_freed_memory"]`` asks for it, as every
    run does (``run_recbole_invrl``) and the benchmarks that build their own pipeline."""
    return bool(config["keep_freed_memory"]) and keep_freed_memory()
