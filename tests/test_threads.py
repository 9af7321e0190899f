"""OpenMP settings chosen before torch starts: kept where the user set them, and set by
every entry script before anything imports torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_invrl.threads import configure_threads, usable_cpus

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


def test_passive_wait_policy_when_unset():
    seen = run_child(CONFIGURE)
    assert seen["policy"] == "PASSIVE" and seen["chosen"]["OMP_WAIT_POLICY"] == "PASSIVE"


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
    assert "OMP_NUM_THREADS" not in chosen and env == {"OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"),
                    reason="needs 2 CPUs and sched_setaffinity")
def test_thread_count_follows_the_affinity_mask():
    seen = run_child(CONFIGURE, cpus={sorted(os.sched_getaffinity(0))[0]})
    assert seen["threads"] == "1"
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
    assert seen["policy"] == "PASSIVE"
    if pinned:
        assert seen["torch_threads"] == 1  # torch started with the pinned process's one CPU
