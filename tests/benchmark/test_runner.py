import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_invrl.benchmark import child, runner
from recbole_invrl.benchmark.child import describe_failure, last_error_line
from recbole_invrl.benchmark.plan import Plan, parse_command_line, prepare
from recbole_invrl.benchmark.runner import execute

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(tiny_clusters):
    return tiny_clusters


class FakeRuns:
    """Stands in for the per-run subprocess: records what was launched."""

    def __init__(self, crash=(), on_call=None):
        self.crash, self.on_call, self.calls = set(crash), on_call, []

    def __call__(self, spec, timeout):
        self.calls.append((spec.model, spec.seed))
        if self.on_call:
            self.on_call(spec, len(self.calls))
        if (spec.model, spec.seed) in self.crash:
            return {"status": "crashed", "error": f"RuntimeError: {spec.model} fell over",
                    "test_result": None, "wall_seconds": None}
        value = 0.1 * spec.seed
        return {"status": "ok", "error": None, "wall_seconds": 1.5,
                "test_result": {"precision@10": value, "recall@10": value, "ndcg@10": value}}


def read_runs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def argv_for(data_path, *extra, models="Pop,BPR", seeds="1,2"):
    return ["--dataset=tiny", f"--data_path={data_path}", f"--models={models}",
            f"--seeds={seeds}", "--out=out", "--epochs=1", *extra]


def test_rerun_skips_finished_runs_and_retries_crashed_ones(tiny, tmp_path):
    argv = argv_for(tiny)
    first = FakeRuns(crash={("BPR", 2)})
    assert runner.main(argv, run_fn=first) == 1  # a crash is reported in the exit code
    assert first.calls == [("Pop", 1), ("Pop", 2), ("BPR", 1), ("BPR", 2)]
    runs = read_runs(tmp_path / "out")
    assert [(r["model"], r["seed"], r["status"]) for r in runs] == [
        ("Pop", 1, "ok"), ("Pop", 2, "ok"), ("BPR", 1, "ok"), ("BPR", 2, "crashed")]
    assert "crashed (seed 2): RuntimeError: BPR fell over" in (tmp_path / "out/table.md").read_text()

    second = FakeRuns()
    assert runner.main(argv, run_fn=second) == 0
    assert second.calls == [("BPR", 2)]  # only the crashed run is launched again
    assert len(read_runs(tmp_path / "out")) == 5
    table = (tmp_path / "out/table.md").read_text()
    assert "crashed" not in table and "| BPR |" in table and "| Pop |" in table

    third = FakeRuns()
    assert runner.main(argv, run_fn=third) == 0
    assert third.calls == []


def test_each_run_is_recorded_as_soon_as_it_finishes(tiny, tmp_path):
    runs_file = tmp_path / "out" / "runs.jsonl"
    seen = []

    def on_call(spec, n):
        seen.append(len(runs_file.read_text().splitlines()) if runs_file.exists() else 0)
        if n == 3:
            raise KeyboardInterrupt

    argv = argv_for(tiny)
    assert runner.main(argv, run_fn=FakeRuns(on_call=on_call)) == runner.EXIT_INTERRUPTED
    assert seen == [0, 1, 2]
    assert [(r["model"], r["seed"]) for r in read_runs(tmp_path / "out")] == [("Pop", 1), ("Pop", 2)]
    resumed = FakeRuns()
    assert runner.main(argv, run_fn=resumed) == 0
    assert resumed.calls == [("BPR", 1), ("BPR", 2)]


def test_a_half_written_record_is_skipped_and_the_run_retried(tiny, tmp_path):
    argv = argv_for(tiny, models="Pop", seeds="1")
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text('{"model": "Pop", "seed": 1, "stat')  # cut by a crash
    fake = FakeRuns()
    assert runner.main(argv, run_fn=fake) == 0
    assert fake.calls == [("Pop", 1)]
    assert read_runs_lenient(out) == 1


def read_runs_lenient(out: Path) -> int:
    count = 0
    for line in (out / "runs.jsonl").read_text().splitlines():
        try:
            json.loads(line)
            count += 1
        except ValueError:
            pass
    return count


def test_runs_with_other_settings_are_not_mixed_into_the_table(tiny, tmp_path, capsys):
    assert runner.main(argv_for(tiny), run_fn=FakeRuns()) == 0
    fake = FakeRuns()
    assert runner.main(argv_for(tiny, "--learning_rate=0.01"), run_fn=fake) == 2
    assert fake.calls == []
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--models=BPR,NoSuchModel"], "unknown model 'NoSuchModel'"),
    (["--dataset=nowhere"], "unknown dataset 'nowhere'"),
    (["--metrics=P@10,Foo@10"], "unknown metric 'Foo@10'"),
    (["--metrics=N@20"], "metric N@20 (ndcg@20) is not computed"),
    (["--seed=7"], "use --seeds"),
    (["--seeds=1,x"], "'x' is not an integer"),
    (["--epochs", "3"], "--key=value"),
    (["--config_files=missing.yaml"], "no such file missing.yaml"),
    (["--models=BPR@seed=3"], "seed is set by the runner"),
    (["--models=BPR@epochs=2"], "epochs is also given for every model"),
    (["--models=BPR@embedding_size"], "--key=value"),
    (["--models=BPR@embedding_size=8@embedding_size=4"], "more than once"),
    (["--models=NoSuchModel@embedding_size=8"], "unknown model 'NoSuchModel'"),
])
def test_bad_arguments_exit_2_before_anything_runs(tiny, tmp_path, capsys, extra, message):
    fake = FakeRuns()
    assert runner.main(argv_for(tiny) + extra, run_fn=fake) == 2
    assert fake.calls == []
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_dataset_config_without_precision_is_refused(tmp_path, atomic_dataset, clustered, capsys):
    train, valid, test, item_cluster = clustered(n_users=10, n_items=30)
    atomic_dataset(tmp_path / "data", "np", train, valid, test,
                   dense={"v_feat": np.eye(2)[item_cluster]}, config={"metrics": ["Recall", "NDCG"]})
    fake = FakeRuns()
    argv = ["--dataset=np", f"--data_path={tmp_path / 'data'}", "--models=BPR", "--out=out"]
    assert runner.main(argv, run_fn=fake) == 2 and fake.calls == []
    assert "metric P@10 (precision@10) is not computed for BPR" in capsys.readouterr().err


def test_known_dataset_without_its_files_names_the_convert_command(tmp_path, capsys):
    fake = FakeRuns()
    argv = ["--dataset=kwai", f"--data_path={tmp_path}", "--models=BPR", "--out=out"]
    assert runner.main(argv, run_fn=fake) == 2 and fake.calls == []
    assert "python -m recbole_invrl.data.convert grcn" in capsys.readouterr().err


def test_cli_unknown_model_exits_2_without_a_traceback(tiny, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_benchmark.py"), "--dataset=tiny", f"--data_path={tiny}",
         "--models=Pop,NoSuchModel", "--out=out"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "unknown model 'NoSuchModel'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


CHILDREN = {
    # model -> what the fake child process does
    "Crash": "import sys; print('INFO some log line', file=sys.stderr); "
             "raise ValueError('boom ' + 'x' * 1000)",
    "Killed": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "Slow": "import time; time.sleep(60)",
    "Silent": "pass",
}


def test_crashed_killed_and_timed_out_runs_are_recorded_and_the_others_still_run(tmp_path,
                                                                                monkeypatch):
    def fake_child_command(spec):
        if spec.model == "Good":
            result = {"test_result": {"precision@10": 0.5, "recall@10": 0.25, "ndcg@10": 0.125},
                      "best_valid_result": {}, "wall_seconds": 0.01}
            code = (f"import json, pathlib; pathlib.Path({str(spec.result_path)!r})"
                    f".write_text({json.dumps(json.dumps(result))})")
        else:
            code = CHILDREN[spec.model]
        return [sys.executable, "-c", code]

    monkeypatch.setattr(child, "child_command", fake_child_command)
    plan = Plan(dataset="d", models=["Crash", "Killed", "Slow", "Silent", "Good"], seeds=[1],
                out_dir=tmp_path / "out", timeout=3.0)
    assert execute(plan, log=lambda _: None) == 1
    runs = {r["model"]: r for r in read_runs(tmp_path / "out")}
    assert runs["Good"]["status"] == "ok"
    assert runs["Good"]["test_result"]["precision@10"] == 0.5
    crash = runs["Crash"]
    assert crash["status"] == "crashed" and crash["error"].startswith("ValueError: boom xxx")
    assert len(crash["error"]) <= child.MAX_ERROR_CHARS and crash["error"].endswith("...")
    assert "Traceback" in Path(crash["stderr_log"]).read_text()  # the full log is kept
    assert runs["Killed"]["error"].startswith("killed by SIGKILL")
    assert runs["Slow"]["error"] == "timed out after 3 s"
    assert runs["Silent"]["error"] == "exited without writing its result"
    with open(tmp_path / "out" / "table.csv") as handle:
        table = {row["model"]: row for row in csv.DictReader(handle)}
    assert table["Good"]["P@10 mean"] == "0.5" and table["Killed"]["error"].startswith(
        "crashed (seed 1): killed by SIGKILL")


def test_the_error_is_the_last_line_or_the_child_marker():
    assert last_error_line("a\nTraceback\nValueError: bad\n\n") == "ValueError: bad"
    marker = child.ERROR_MARKER
    assert last_error_line(f"x\n{marker}KeyError: 'k'\nlater noise\n") == "KeyError: 'k'"
    assert describe_failure(1, "") == "exit code 1"
    assert describe_failure(-9, "log line") == "killed by SIGKILL (out of memory?): log line"


def run_benchmark_cli(data_path, cwd, models):
    """``run_benchmark.py`` on the tiny set, seed 2020, 1 epoch, into ``cwd/out``; must exit 0."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_benchmark.py"), "--dataset=tiny", f"--data_path={data_path}",
         f"--models={models}", "--seeds=2020", "--out=out", "--epochs=1"],
        capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_smoke_pop_and_bpr_through_the_real_runner(tiny, tmp_path):
    proc = run_benchmark_cli(tiny, tmp_path, "Pop,BPR")
    out = tmp_path / "out"
    runs = read_runs(out)
    assert [(r["model"], r["seed"], r["status"]) for r in runs] == [("Pop", 2020, "ok"),
                                                                    ("BPR", 2020, "ok")]
    for run in runs:
        assert set(run["test_result"]) >= {"precision@10", "recall@10", "ndcg@10"}
        assert run["wall_seconds"] > 0
    md = (out / "table.md").read_text()
    assert "| Pop |" in md and "| BPR |" in md and "| Model | P@10 | R@10 | N@10 |" in md
    with open(out / "table.csv") as handle:
        table = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(table) == {"Pop", "BPR"}
    for row in table.values():
        assert 0.0 <= float(row["N@10 mean"]) <= 1.0 and row["N@10 std"] == ""
    assert md in proc.stdout  # the table is printed at the end


def test_a_model_entry_with_its_own_overrides_is_a_row_of_its_own(tiny, tmp_path):
    fake = FakeRuns()
    argv = argv_for(tiny, models="BPR,BPR@embedding_size=8@learning_rate=0.01", seeds="1")
    assert runner.main(argv, run_fn=fake) == 0
    assert fake.calls == [("BPR", 1), ("BPR@embedding_size=8@learning_rate=0.01", 1)]
    plan = prepare(*parse_command_line(argv))
    plain, variant = (plan.spec(m, 1) for m in plan.models)
    def after_dashes(command):
        return command[command.index("--") + 1:]

    assert "--epochs=1" in plan.overrides
    assert after_dashes(child.child_command(plain)) == plan.overrides
    command = child.child_command(variant)
    assert "--model=BPR" in command
    assert after_dashes(command) == [*plan.overrides, "--embedding_size=8", "--learning_rate=0.01"]
    assert "@" not in str(variant.result_path) and variant.result_path != plain.result_path
    md = (tmp_path / "out/table.md").read_text()
    assert "| BPR |" in md and "| BPR (embedding_size=8, learning_rate=0.01) |" in md


def test_a_model_entry_reaches_the_child_run(tiny, tmp_path):
    run_benchmark_cli(tiny, tmp_path, "BPR@embedding_size=8")
    [run] = read_runs(tmp_path / "out")
    assert run["model"] == "BPR@embedding_size=8" and run["status"] == "ok"
    logs = tmp_path / "out/logs"
    log = "".join((logs / f"BPR-embedding_size-8-seed2020.{k}.txt").read_text() for k in ("stdout", "stderr"))
    assert "embedding_size = 8" in log


def test_table_rows_follow_the_default_model_list_whatever_the_command_order():
    entries = ["GRCN", "MyModel", "InvRL@invrl_backbone=VBPR", "Pop", "InvRL", "VBPR", "GRCN"]
    assert runner.table_order(entries) == ["Pop", "VBPR", "GRCN", "InvRL", "InvRL@invrl_backbone=VBPR", "MyModel"]
