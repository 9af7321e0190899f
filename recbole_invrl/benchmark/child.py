"""One benchmark run in a child process, and the child's side of it.

The runner starts ``python -m recbole_invrl.benchmark.runner --one --model=M --dataset=D
--seed=S --result=PATH [...] -- --key=value ...`` in a session of its own
(``run_one_subprocess``), so that a crash, a timeout or an out-of-memory kill costs that run
only. The child (``one_main``) runs ``run_recbole_invrl`` and writes its result JSON; on
failure it prints one ``ERROR_MARKER`` line, which becomes the run's error in the table.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    from recbole_invrl.benchmark.plan import RunSpec

ERROR_MARKER = "benchmark-run-error: "
MAX_ERROR_CHARS = 300
STDERR_TAIL_BYTES = 64 * 1024
EXIT_INTERRUPTED = 130


@contextmanager
def command_line(args: Sequence[str]) -> Iterator[None]:
    """RecBole's ``Config`` reads overrides from ``sys.argv``; give it exactly ``args``."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "run_benchmark.py", *args]
    try:
        yield
    finally:
        sys.argv = saved


def child_config_dict(seed: int, checkpoint_dir: Path | str) -> dict[str, Any]:
    """What every run sets below the command line (so an override still wins)."""
    return {"seed": seed, "show_progress": False, "checkpoint_dir": str(checkpoint_dir)}


def child_command(spec: RunSpec) -> list[str]:
    """The command line of one run's child process."""
    command = [sys.executable, "-m", "recbole_invrl.benchmark.runner", "--one",
               f"--model={spec.model_class}", f"--dataset={spec.dataset}", f"--seed={spec.seed}",
               f"--result={spec.result_path}", f"--checkpoint_dir={spec.checkpoint_dir}"]
    if spec.config_files:
        command.append(f"--config_files={' '.join(spec.config_files)}")
    return [*command, "--", *spec.all_overrides]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child and everything it started (it leads its own session)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def read_tail(path: Path, size: int = STDERR_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def last_error_line(stderr: str) -> str:
    """The child's ``ERROR_MARKER`` line if it wrote one, else the last non-empty line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(ERROR_MARKER):
            return line[len(ERROR_MARKER):].strip()
    return lines[-1] if lines else ""


def truncate(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_failure(returncode: int | None, stderr: str, timed_out: bool = False,
                     timeout: float | None = None) -> str:
    """One line: why the run failed (signal, timeout) and the last line of its stderr."""
    last = last_error_line(stderr)
    if timed_out:
        head = f"timed out after {timeout:g} s"
    elif returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        head = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    elif returncode == 0:
        head = "exited without writing its result"
    else:
        head = "" if last else f"exit code {returncode}"
    return truncate(": ".join(p for p in (head, last) if p))


def run_one_subprocess(spec: RunSpec, timeout: float | None = None) -> dict[str, Any]:
    """Run ``spec`` in a child process; return its record (``status`` ok or crashed)."""
    for path in (spec.result_path, spec.stdout_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    spec.result_path.unlink(missing_ok=True)
    command = child_command(spec)
    start = time.time()
    timed_out, returncode = False, None
    with open(spec.stdout_path, "w", encoding="utf-8") as out, \
            open(spec.stderr_path, "w", encoding="utf-8") as err:
        out.write("# " + " ".join(command) + "\n")
        out.flush()
        try:
            proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=_child_env(), start_new_session=True)
        except OSError as error:
            err.write(f"{ERROR_MARKER}cannot start the run: {error}\n")
        else:
            try:
                returncode = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                timed_out, returncode = True, proc.returncode
            except BaseException:
                _kill(proc)
                raise
    row: dict[str, Any] = {"model": spec.model, "seed": spec.seed, "dataset": spec.dataset,
                           "returncode": returncode, "run_seconds": round(time.time() - start, 3),
                           "stderr_log": str(spec.stderr_path)}
    result = None
    if returncode == 0 and not timed_out:
        try:
            result = json.loads(spec.result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            result = None
    if result is not None:
        row.update(status="ok", error=None, test_result=result.get("test_result"),
                   best_valid_result=result.get("best_valid_result"),
                   best_valid_score=result.get("best_valid_score"),
                   wall_seconds=result.get("wall_seconds"),
                   saved_model_file=result.get("saved_model_file"))
    else:
        row.update(status="crashed", test_result=None, best_valid_result=None, wall_seconds=None,
                   error=describe_failure(returncode, read_tail(spec.stderr_path), timed_out, timeout))
    return row


def one_main(argv: Sequence[str]) -> int:
    """The child: ``--one --model=M --dataset=D --seed=S --result=PATH [...] -- --key=value ...``."""
    parser = argparse.ArgumentParser(prog="recbole_invrl.benchmark.runner --one", allow_abbrev=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--config_files", default=None)
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    overrides = argv[split + 1:]
    config_files = args.config_files.split() if args.config_files else None
    try:
        from recbole_invrl.compat import write_json_atomic
        from recbole_invrl.quick_start import run_recbole_invrl

        with command_line(overrides):
            result = run_recbole_invrl(args.model, args.dataset, config_file_list=config_files,
                                       config_dict=child_config_dict(args.seed, args.checkpoint_dir))
        result["seed"] = args.seed
        write_json_atomic(result, args.result)
    except BaseException as err:  # noqa: BLE001 - reported as one line for the table
        traceback.print_exc()
        message = " ".join(str(err).split())
        print(f"{ERROR_MARKER}{type(err).__name__}: {message}" if message else
              f"{ERROR_MARKER}{type(err).__name__}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED if isinstance(err, KeyboardInterrupt) else 1
    return 0
