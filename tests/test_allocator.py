import subprocess
import sys

import pytest

SCRIPT = "from recbole_invrl.allocator import keep_freed_memory; print(keep_freed_memory())"


def _run(env_extra: dict[str, str]) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_are_set_on_glibc_unless_the_environment_chose_them():
    assert _run({}) == "True"
    assert _run({"MALLOC_TRIM_THRESHOLD_": "1000"}) == "False"
    assert _run({"LD_PRELOAD": "/nonexistent/libjemalloc.so"}) == "False"
