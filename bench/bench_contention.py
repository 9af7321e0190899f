"""Run time of a training command alone and beside CPU-bound copies of itself, per thread setting.

Researchers run several experiments at once on shared servers. A process whose OpenMP
threads spin while waiting for each other burns the CPU time its neighbours need. This
script starts the workload alone, then together with 1 and 2 copies of itself, and prints,
for each OpenMP setting, every run's wall time next to its fair share: with n processes
sharing C cores, each needing the CPU time t_cpu that the workload takes alone, the fair
wall time is max(alone wall time, n * t_cpu / C).

    python bench/bench_contention.py [--competitors 0,1,2] [--settings default,passive]
        [--repeats 1] [-- WORKLOAD ARGS FOR run_recbole_invrl.py]

The default workload is the README's quick start (InvRL on ml-100k-mm) cut to 3 epochs per
stage, so that a measurement takes minutes. Settings (environment of the workload):

- ``default``: libgomp as it starts (threads spin up to GOMP_SPINCOUNT before sleeping);
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once when they wait);
- ``spin10k``: ``GOMP_SPINCOUNT=10000`` (a short spin, then sleep);
- ``plugin``: what ``run_recbole_invrl.py`` does when the user set nothing: libgomp's own
  wait policy and the ``ThreadGovernor`` (``recbole_invrl/threads.py``), which shrinks the
  thread team to the CPUs other processes leave free. The other settings switch the
  governor off (``RECBOLE_INVRL_THREADS=keep``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKLOAD = ["--model=InvRL", "--dataset=ml-100k-mm", "--epochs=3", "--pretrain_epochs=3",
                    "--partition_epochs=1", "--mask_epochs=3", "--show_progress=False"]
SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin10k": {"GOMP_SPINCOUNT": "10000"},
    "plugin": None,  # nothing removed or added: run_recbole_invrl.py decides
}
CLEARED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "RECBOLE_INVRL_THREADS")


def environment(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    extra = SETTINGS[setting]
    if extra is None:
        return env
    env["RECBOLE_INVRL_THREADS"] = "keep"  # run_recbole_invrl.py leaves the OpenMP settings alone
    return {**env, **extra}


def run_together(copies: int, setting: str, workload: list[str], log_dir: Path) -> list[tuple[float, float]]:
    """Start ``copies`` workloads at once; (wall seconds, CPU seconds) of each."""
    command = [sys.executable, str(REPO / "run_recbole_invrl.py"), *workload]
    procs = []
    for k in range(copies):
        folder = log_dir / f"{setting}-{copies}-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        out = open(folder / "stdout.txt", "w")
        procs.append((time.perf_counter(), out, subprocess.Popen(
            [*command, f"--checkpoint_dir={folder / 'saved'}"], cwd=folder, env=environment(setting),
            stdout=out, stderr=subprocess.STDOUT)))
    results = []
    for start, out, proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        out.close()
        if status != 0:
            raise SystemExit(f"a workload failed (status {status}); see {out.name}")
        results.append((time.perf_counter() - start, usage.ru_utime + usage.ru_stime))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitors", default="0,1,2")
    parser.add_argument("--settings", default="default,plugin")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="bench/out/contention")
    args, workload = parser.parse_known_args()
    workload = [w for w in workload if w != "--"] or DEFAULT_WORKLOAD
    cores = len(os.sched_getaffinity(0))
    print(f"cores this process may use: {cores}; load before: {os.getloadavg()}")
    print(f"workload: run_recbole_invrl.py {' '.join(workload)}")
    print(f"{'setting':<9}{'copies':>7}{'wall s':>9}{'cpu s':>9}{'fair s':>9}{'slowdown vs fair':>18}")
    for setting in args.settings.split(","):
        alone_wall = alone_cpu = None
        for competitors in (int(c) for c in args.competitors.split(",")):
            copies = competitors + 1
            runs = [r for _ in range(args.repeats) for r in run_together(copies, setting, workload, Path(args.out))]
            wall = sum(w for w, _ in runs) / len(runs)
            cpu = sum(c for _, c in runs) / len(runs)
            if copies == 1:
                alone_wall, alone_cpu = wall, cpu
            fair = max(alone_wall, copies * alone_cpu / cores) if alone_wall else float("nan")
            print(f"{setting:<9}{copies:>7}{wall:>9.1f}{cpu:>9.1f}{fair:>9.1f}{wall / fair:>18.2f}", flush=True)


if __name__ == "__main__":
    main()
