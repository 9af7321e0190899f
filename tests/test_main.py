"""python -m recbole_invrl and the console commands' entry points."""
import subprocess
import sys

import pytest

from recbole_invrl import __main__ as entry


def test_python_m_recbole_invrl_is_the_run_script_s_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recbole_invrl", "--model=NoSuchModel", "--dataset=tiny"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: model: unknown model 'NoSuchModel'")
    assert proc.stderr.count("\n") == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("command, module", [("run_model", "recbole_invrl.cli"),
                                             ("benchmark", "recbole_invrl.benchmark.runner"),
                                             ("experiment", "recbole_invrl.benchmark.experiments"),
                                             ("hyper", "recbole_invrl.hyper")])
def test_each_console_command_runs_its_module_s_main(monkeypatch, command, module):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), "main", lambda: f"{module} ran")
    assert getattr(entry, command)() == f"{module} ran"
