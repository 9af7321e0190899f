"""OpenMP settings chosen before torch starts: kept where the user set them, and set by
every entry script before anything imports torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_invrl import threads
from recbole_invrl.threads import ThreadGovernor, configure_threads, runnable_threads, usable_cpus, wanted_threads

REPO = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = ["run_recbole_invrl.py", "run_benchmark.py", "run_experiment.py", "run_hyper.py"]
CLEARED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "RECBOLE_INVRL_THREADS", "GOMP_SPINCOUNT")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def run_child(code: str, cpus: set[int] | None = None, **extra: str) -> dict:
    """Run ``code`` in a fresh interpreter (optionally pinned to ``cpus``); its last stdout line as JSON."""
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run([sys.executable, "-c", code], env=child_env(**extra), cwd=REPO, text=True,
                         capture_output=True, preexec_fn=preexec, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CONFIGURE = """
import json, os
from recbole_invrl.threads import configure_threads
chosen = configure_threads()
print(json.dumps({"chosen": chosen, "policy": os.environ.get("OMP_WAIT_POLICY"),
                  "threads": os.environ.get("OMP_NUM_THREADS")}))
"""


def test_the_wait_policy_is_left_as_libgomp_starts():
    seen = run_child(CONFIGURE)
    assert seen["policy"] is None and "OMP_WAIT_POLICY" not in seen["chosen"]


def test_user_settings_are_kept():
    seen = run_child(CONFIGURE, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="3")
    assert seen == {"chosen": {}, "policy": "ACTIVE", "threads": "3"}


def test_keep_switch_leaves_everything_unset():
    seen = run_child(CONFIGURE, RECBOLE_INVRL_THREADS="keep")
    assert seen == {"chosen": {}, "policy": None, "threads": None}


def test_whole_machine_leaves_thread_count_to_torch():
    env: dict[str, str] = {}
    chosen = configure_threads(env)
    if usable_cpus() < (os.cpu_count() or 1):
        pytest.skip("this process is pinned to part of the machine")
    assert chosen == {} and env == {}


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"),
                    reason="needs 2 CPUs and sched_setaffinity")
def test_thread_count_follows_the_affinity_mask():
    seen = run_child(CONFIGURE, cpus={sorted(os.sched_getaffinity(0))[0]})
    assert seen["threads"] == "1" and seen["chosen"] == {"OMP_NUM_THREADS": "1"}
    kept = run_child(CONFIGURE, cpus={sorted(os.sched_getaffinity(0))[0]}, OMP_NUM_THREADS="2")
    assert kept["threads"] == "2" and "OMP_NUM_THREADS" not in kept["chosen"]


ENTRY = """
import json, os, runpy, sys
import recbole_invrl.threads as threads
calls = []
real = threads.configure_threads
def spy(*args, **kwargs):
    calls.append("torch" in sys.modules or "numpy" in sys.modules)
    return real(*args, **kwargs)
threads.configure_threads = spy
runpy.run_path(sys.argv[1], run_name="entry_script_under_test")  # not __main__: main() does not run
import torch
print(json.dumps({"calls": calls,
                  "policy": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": torch.get_num_threads()}))
"""


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_script_configures_threads_before_torch(script):
    code = ENTRY.replace("sys.argv[1]", repr(str(REPO / script)))
    pinned = {sorted(os.sched_getaffinity(0))[0]} if (os.cpu_count() or 1) > 1 else None
    seen = run_child(code, cpus=pinned)
    assert seen["calls"] == [False], "configure_threads must run once, before torch or numpy is imported"
    assert seen["policy"] is None  # libgomp's own wait policy: the governor sizes the team
    if pinned:
        assert seen["torch_threads"] == 1  # torch started with the pinned process's one CPU


# --------------------------------------------------------------------------- the governor

@pytest.mark.parametrize("others, most, wanted", [(0, 2, 2), (0.4, 2, 2), (1, 2, 1), (3, 2, 1),
                                                   (0, 8, 8), (2.6, 8, 5), (20, 8, 1)])
def test_the_team_takes_the_cpus_the_others_leave(others, most, wanted):
    assert wanted_threads(others, most) == wanted


def test_runnable_threads_reads_the_machine_and_this_process(tmp_path):
    (tmp_path / "loadavg").write_text("1.50 0.90 0.40 5/321 4242\n")
    for tid, state in ((10, "R"), (11, "S"), (12, "R")):
        (tmp_path / "task" / str(tid)).mkdir(parents=True)
        (tmp_path / "task" / str(tid) / "stat").write_text(f"{tid} (py (th) on) {state} 1 2 3\n")
    assert runnable_threads(str(tmp_path / "loadavg"), str(tmp_path / "task")) == (5, 2)


def test_the_governor_shrinks_the_team_under_load_and_restores_it_after():
    samples = iter([(2, 2)] * 3 + [(5, 2)] * 12 + [(2, 2)] * 12)  # (machine, own) runnable threads
    governor = ThreadGovernor(most=2, sample=lambda: next(samples))
    seen = [governor.observe() for _ in range(27)]
    assert seen[:3] == [2, 2, 2]  # alone: the whole team
    assert seen[14] == 1  # three other runnable threads: one thread left
    assert seen[-1] == 2  # they are gone: the team is back
    assert 1 < seen.index(1) < 8  # a running mean, not a single sample


def test_the_team_size_changes_at_the_next_optimizer_step():
    code = """
import json, torch
from recbole_invrl.threads import ThreadGovernor
torch.set_num_threads(2)
governor = ThreadGovernor(most=2, sample=lambda: (6, 1), interval=3600).start()
governor.observe()
param = torch.nn.Parameter(torch.ones(3))
optimizer = torch.optim.Adam([param])
before = torch.get_num_threads()
param.sum().backward()
optimizer.step()
during = torch.get_num_threads()
governor.stop()
print(json.dumps([before, during, torch.get_num_threads()]))
"""
    assert run_child(code) == [2, 1, 2]


def test_the_governor_stays_off_where_the_user_fixed_the_threads(monkeypatch):
    monkeypatch.setattr(threads, "_GOVERNOR", None)
    assert threads.start_governor({"OMP_NUM_THREADS": "3"}) is None
    assert threads.start_governor({threads.SWITCH: "keep"}) is None
    chosen_by_us = {"OMP_NUM_THREADS": "1", threads.CHOSEN: "OMP_NUM_THREADS"}
    governor = threads.start_governor(chosen_by_us)
    try:
        assert governor is not None and threads.start_governor(chosen_by_us) is governor  # once per process
    finally:
        governor.stop()
