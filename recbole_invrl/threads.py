"""Threads that hold up when other processes share the CPUs.

libgomp's threads spin (up to ``GOMP_SPINCOUNT``) while they wait for each other. Alone on
a machine that is the fastest setting; beside other CPU-bound processes a team's threads
wait for team mates the scheduler has put aside, burn the CPU time their neighbours need,
and every process slows down far beyond its fair share. ``OMP_WAIT_POLICY=PASSIVE`` (sleep
at once) holds the fair share but costs a process alone about a third of its speed;
``bench/bench_contention.py`` measures each setting. So the team size follows the load:

- ``configure_threads()``, called by the entry scripts before anything imports torch
  (libgomp and torch read the variables once): ``OMP_NUM_THREADS`` is kept where the user
  set it; otherwise, when this process may use fewer CPUs than the machine has
  (``taskset``, cgroup cpusets), it is set to that number, since torch would otherwise start
  one thread per core of the machine. The wait policy is left as libgomp starts.
- ``start_governor()``, called by every run: a ``ThreadGovernor`` shrinks torch's team to
  the CPUs that other processes leave free, and grows it back when they are gone.
- ``RECBOLE_INVRL_THREADS=keep`` leaves every setting as the user made it, and a user's
  ``OMP_NUM_THREADS`` switches the governor off.

The part above the governor must not import torch (nor numpy, which may start an OpenMP
runtime too).
"""
from __future__ import annotations

import os
import threading
from typing import Callable, MutableMapping

SWITCH = "RECBOLE_INVRL_THREADS"
KEEP = "keep"
CHOSEN = "RECBOLE_INVRL_THREADS_CHOSEN"  # the variables configure_threads set, comma-separated


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
    cpus = usable_cpus()
    if not environ.get("OMP_NUM_THREADS") and cpus < (os.cpu_count() or cpus):
        chosen["OMP_NUM_THREADS"] = str(cpus)
    environ.update(chosen)
    if chosen:
        environ[CHOSEN] = ",".join(chosen)
    return chosen


# --------------------------------------------------------------------------- the governor

GOVERNOR_INTERVAL = 0.25  # seconds between two samples of the runnable threads
GOVERNOR_SMOOTHING = 0.3  # weight of the newest sample in the running mean


def runnable_threads(loadavg: str = "/proc/loadavg", tasks: str = "/proc/self/task") -> tuple[int, int]:
    """(runnable threads on the machine, runnable threads of this process), from procfs:
    the fourth field of ``/proc/loadavg`` (``running/total``) and the state of each of
    this process's threads."""
    with open(loadavg) as handle:
        running = int(handle.read().split()[3].split("/")[0])
    own = 0
    for task in os.listdir(tasks):
        try:
            with open(os.path.join(tasks, task, "stat")) as handle:
                own += handle.read().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:  # the thread ended meanwhile
            continue
    return running, own


def wanted_threads(others: float, most: int) -> int:
    """Threads for a process beside ``others`` runnable threads of other processes on ``most``
    CPUs: the CPUs the others leave free, at least 1."""
    return max(1, min(most, most - int(round(others))))


class ThreadGovernor:
    """Shrinks torch's thread team while other processes want the CPUs, and grows it back
    when they are gone.

    A thread of an OpenMP team that waits for its team mates spins; beside other CPU-bound
    processes the team's threads wait for each other while the scheduler runs the others,
    and every process slows down far beyond its fair share. A team no larger than the CPUs
    the others leave free never waits that way, and alone the process keeps its whole team
    and libgomp's spinning, which is the fastest setting on a quiet machine.

    A daemon thread samples the runnable threads of other processes every
    ``GOVERNOR_INTERVAL`` seconds (a running mean, ``GOVERNOR_SMOOTHING``). The team size
    can only be changed from the thread that runs the computation (OpenMP keeps it per
    thread), so ``apply`` is called there: before every optimizer step, through torch's
    global optimizer-step hook, which every model's training reaches."""

    def __init__(self, most: int, sample: Callable[[], tuple[int, int]] = runnable_threads,
                 interval: float = GOVERNOR_INTERVAL):
        self.most, self.sample, self.interval = most, sample, interval
        self.others = 0.0
        self.wanted = most
        self._stop = threading.Event()

    def observe(self) -> int:
        """Take one sample; returns the team size it now asks for."""
        running, own = self.sample()
        others = max(0, running - own)  # both counts include the sampling thread
        self.others += GOVERNOR_SMOOTHING * (others - self.others)
        self.wanted = wanted_threads(self.others, self.most)
        return self.wanted

    def apply(self, *_: object) -> None:
        """Set torch's team to the size asked for (a no-op when it already has it)."""
        import torch

        if torch.get_num_threads() != self.wanted:
            torch.set_num_threads(self.wanted)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.observe()
            except (OSError, ValueError, IndexError):  # procfs unreadable: stop governing
                self.wanted = self.most
                return

    def start(self) -> "ThreadGovernor":
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._hook = register_optimizer_step_pre_hook(self.apply)  # called as (optimizer, args, kwargs)
        threading.Thread(target=self._watch, name="recbole-invrl-threads", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._hook.remove()
        self.wanted = self.most
        self.apply()


_GOVERNOR: ThreadGovernor | None = None


def start_governor(environ: MutableMapping[str, str] | None = None) -> ThreadGovernor | None:
    """Start the process's ``ThreadGovernor`` once, unless the user fixed the threads
    (``OMP_NUM_THREADS`` set by them, or ``RECBOLE_INVRL_THREADS=keep``) or procfs is
    missing (not Linux). Its largest team is torch's thread count at the call."""
    global _GOVERNOR
    environ = os.environ if environ is None else environ
    if _GOVERNOR is not None or environ.get(SWITCH, "").strip().lower() == KEEP:
        return _GOVERNOR
    if environ.get("OMP_NUM_THREADS") and "OMP_NUM_THREADS" not in environ.get(CHOSEN, "").split(","):
        return None
    try:
        runnable_threads()
    except (OSError, ValueError, IndexError):
        return None
    import torch

    _GOVERNOR = ThreadGovernor(torch.get_num_threads()).start()
    return _GOVERNOR
