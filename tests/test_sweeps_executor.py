"""The local executor with a fake trainer (transformer_ablations.sweeps.testing.fake_train):
claims, parallel workers and processes, kills and resumes, failures, the index."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from transformer_ablations.cli import dispatch
from transformer_ablations.config import ConfigError
from transformer_ablations.runs import records
from transformer_ablations.runs.summary import RunSummary
from transformer_ablations.sweeps.executor import Executor, ExecutorOptions, RunLock, lock_path, run_sweep
from transformer_ablations.sweeps.testing import read_call_log, src_pythonpath, write_fake_sweep

RUNNER = "transformer_ablations.sweeps.testing:fake_train"
FAKE_VARS = ("FAKE_TRAIN_SLEEP", "FAKE_TRAIN_DIVERGE", "FAKE_TRAIN_RAISE", "FAKE_TRAIN_EXIT", "FAKE_TRAIN_SIGKILL")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake grid of 8 points, a call log, and quiet options writing under tmp_path/runs."""
    for var in FAKE_VARS:
        monkeypatch.delenv(var, raising=False)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    class F:
        path = write_fake_sweep(tmp_path)
        runs = tmp_path / "runs"
        calls = staticmethod(lambda: read_call_log(log))
        out = io.StringIO()

        @classmethod
        def options(cls, **kw):
            kw.setdefault("runs_dir", cls.runs)
            kw.setdefault("quiet", True)
            kw.setdefault("stream", cls.out)
            kw.setdefault("retry_busy_s", 0.3)
            return ExecutorOptions(**kw)

    return F


def summaries(sweep_dir: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob("*/summary.json"))}


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "FAKE_TRAIN_"))}
    env.update(PYTHONPATH=src_pythonpath(), OMP_NUM_THREADS="1", FAKE_TRAIN_LOG=str(tmp_path / "calls.log"))
    env.update(extra)
    return env


def _executor_cmd(path, runs, *more):
    return [sys.executable, "-m", "transformer_ablations.cli", "sweep", str(path), "--runs-dir", str(runs),
            "--runner", RUNNER, "--quiet", *more]


# --- one executor ----------------------------------------------------------------------------
def test_grid_runs_every_point_once_and_never_again(fake):
    result = run_sweep(fake.path, fake.options(workers=2), run_fn=RUNNER)
    assert result.total == 8 and result.count("finished") == 8 and result.ok
    sweep_dir = fake.runs / "quick" / "fake"
    recs = summaries(sweep_dir)
    assert len(recs) == 8 and all(r["status"] == "finished" for r in recs.values())
    calls = fake.calls()
    assert len(calls) == 8 and len({c["run_dir"] for c in calls}) == 8
    index = json.loads((sweep_dir / "sweep.json").read_text())
    assert index["method"] == "grid" and index["n_points"] == 8 and index["n_runs"] == 8
    assert index["counts"] == {"finished": 8}
    assert {p["run_id"] for p in index["points"]} == set(recs)
    assert all(isinstance(p["metric"], float) for p in index["points"])
    # the metric and the best run are reported
    out = fake.out.getvalue()
    assert "8/8 done: 8 finished, 0 diverged, 0 failed" in out and "best val/acc" in out
    # a second invocation finds every record finished and runs nothing
    again = run_sweep(fake.path, fake.options(workers=2), run_fn=RUNNER)
    assert again.count("finished") == 8 and not any(o.ran_here for o in again.outcomes.values())
    assert len(fake.calls()) == 8


def test_max_runs_and_scale(fake):
    result = run_sweep(fake.path, fake.options(scale="smoke", max_runs=3), run_fn=RUNNER)
    assert result.total == 3
    recs = summaries(fake.runs / "smoke" / "fake")  # suite defaults to the scale
    assert len(recs) == 3 and all(r["config"]["scale"] == "smoke" for r in recs.values())
    assert all(r["config"]["train.out_dir"] == str(fake.runs / "smoke") for r in recs.values())


def test_points_with_the_same_config_hash_run_once(fake, tmp_path):
    # train.wandb is not part of the config hash: 2 x 2 points, 2 runs
    path = write_fake_sweep(tmp_path, "dedup", parameters={
        "train.wandb": {"values": ["auto", "offline"]}, "seed": {"values": [0, 1]}})
    result = run_sweep(path, fake.options(), run_fn=RUNNER)
    assert result.total == 2 and result.count("finished") == 2
    assert len(fake.calls()) == 2
    index = json.loads((fake.runs / "quick" / "dedup" / "sweep.json").read_text())
    assert index["n_points"] == 4 and index["n_runs"] == 2
    assert len({p["run_id"] for p in index["points"]}) == 2


def test_diverged_and_crashed_runs_are_recorded_and_the_sweep_goes_on(fake, tmp_path, monkeypatch):
    path = write_fake_sweep(tmp_path, "bad", parameters={
        "model.positional": {"values": ["none", "sinusoidal", "learned", "rope", "alibi"]}, "seed": {"value": 0}})
    monkeypatch.setenv("FAKE_TRAIN_DIVERGE", "model.positional=none")
    monkeypatch.setenv("FAKE_TRAIN_EXIT", "model.positional=sinusoidal")  # dies without a summary
    monkeypatch.setenv("FAKE_TRAIN_SIGKILL", "model.positional=learned")  # like the OOM killer
    monkeypatch.setenv("FAKE_TRAIN_RAISE", "model.positional=rope")  # an exception in train()
    result = run_sweep(path, fake.options(workers=2), run_fn=RUNNER)
    by_pos = {r["config"]["model.positional"]: r for r in summaries(fake.runs / "quick" / "bad").values()}
    assert by_pos["none"]["status"] == "diverged"
    assert by_pos["sinusoidal"]["status"] == "failed" and "exited with code 3" in by_pos["sinusoidal"]["error"]
    assert by_pos["sinusoidal"]["exit_code"] == 3
    assert by_pos["learned"]["status"] == "failed" and "SIGKILL" in by_pos["learned"]["error"]
    assert by_pos["learned"]["exit_code"] == -signal.SIGKILL
    assert by_pos["rope"]["status"] == "failed" and "RuntimeError: fake training error" in by_pos["rope"]["error"]
    assert by_pos["alibi"]["status"] == "finished"
    assert result.count("failed") == 3 and result.count("diverged") == 1 and not result.ok
    assert "Traceback" in (fake.runs / "quick" / "bad" / by_pos["rope"]["run_id"] / "stdout.log").read_text()
    # failed and diverged records are final: nothing runs again ...
    n = len(fake.calls())
    run_sweep(path, fake.options(), run_fn=RUNNER)
    assert len(fake.calls()) == n
    # ... unless asked to retry the failed ones (still failing: recorded again, then final)
    monkeypatch.delenv("FAKE_TRAIN_EXIT")
    again = run_sweep(path, fake.options(retry_failed=True), run_fn=RUNNER)
    assert len(fake.calls()) == n + 3
    assert again.outcomes[by_pos["sinusoidal"]["run_id"]].status == "finished"
    assert again.outcomes[by_pos["none"]["run_id"]].status == "diverged"
    after = summaries(fake.runs / "quick" / "bad")
    assert "exited with code 3" in after[by_pos["sinusoidal"]["run_id"]]["previous_error"]
    for record in after.values():  # every key the executor, its children and the runner wrote is a named field
        assert RunSummary.from_dict(record).extra == {} and RunSummary.from_dict(record).to_dict() == record


def test_command_exit_code_reports_failures(fake, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_TRAIN_RAISE", "model.head_dim=16;seed=1;model.attention.scaling=none")
    rc = dispatch(["sweep", str(fake.path), "--runs-dir", str(fake.runs), "--runner", RUNNER, "--quiet", "--offline"])
    assert rc == 1
    assert "1 run(s) failed" in capsys.readouterr().err
    assert len(summaries(fake.runs / "quick" / "fake")) == 8


def test_interrupted_record_is_run_again(fake):
    """summary says `running` and nobody holds its lock: it was interrupted -> train() again (resume)."""
    plan = Executor(fake.options()).plan(fake.path)
    victim = plan.runs[2]
    victim.run_dir.mkdir(parents=True)
    summary = records.new_summary(victim.cfg)
    summary.resumed = 0
    records.write_summary(victim.run_dir, summary)
    run_sweep(fake.path, fake.options(), run_fn=RUNNER)
    recs = summaries(fake.runs / "quick" / "fake")
    assert recs[victim.run_id]["status"] == "finished"
    assert recs[victim.run_id]["resumed"] == 1
    assert sum(c["run_dir"] == str(victim.run_dir) for c in fake.calls()) == 1


def test_runs_held_by_another_executor_are_waited_for_or_taken_over(fake):
    """Point A: another executor finishes it. Point B: its owner dies (lock freed, still `running`)."""
    plan = Executor(fake.options()).plan(fake.path)
    a, b = plan.runs[0], plan.runs[1]
    lock_a, lock_b = RunLock(lock_path(a.run_dir)), RunLock(lock_path(b.run_dir))
    assert lock_a.try_acquire() and lock_b.try_acquire()
    assert not RunLock(lock_path(a.run_dir)).try_acquire()  # exclusive, also within one process
    for p in (a, b):
        p.run_dir.mkdir(parents=True)
        records.write_summary(p.run_dir, records.new_summary(p.cfg))

    def other_executor():
        time.sleep(3.0)  # longer than planning the sweep takes on a loaded 2-core machine
        done = records.new_summary(a.cfg)
        done.status, done.metrics = "finished", {"val/acc": 0.5}
        records.write_summary(a.run_dir, done)
        lock_a.release()
        lock_b.release()  # "dies" with b unfinished

    t = threading.Thread(target=other_executor)
    t.start()
    t0 = time.monotonic()
    result = run_sweep(fake.path, fake.options(workers=2), run_fn=RUNNER)
    t.join()
    assert time.monotonic() - t0 >= 3.0
    ran = {c["run_dir"] for c in fake.calls()}
    assert str(a.run_dir) not in ran, "a run finished elsewhere must not run again"
    assert str(b.run_dir) in ran, "a run whose owner died must be taken over"
    assert len(fake.calls()) == 7 and result.count("finished") == 8
    assert result.outcomes[a.run_id].metric == 0.5
    assert "held by another executor" in fake.out.getvalue()


def test_workers_are_pinned_to_gpus_and_cpu_threads(fake):
    ex = Executor(fake.options(gpus=["0", "3"]))
    assert ex.workers == 2
    assert ex._child_env(0)["CUDA_VISIBLE_DEVICES"] == "0"
    assert ex._child_env(1)["CUDA_VISIBLE_DEVICES"] == "3"
    ex4 = Executor(fake.options(gpus=["0", "1", "2", "3"], gpus_per_run=2))
    assert ex4.workers == 2 and ex4._child_env(1)["CUDA_VISIBLE_DEVICES"] == "2,3"
    cpu = Executor(fake.options(workers=2))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert "CUDA_VISIBLE_DEVICES" not in cpu._child_env(0)
    assert cpu._child_env(0)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    with pytest.raises(ConfigError):
        Executor(fake.options(gpus=["0", "1", "2"], gpus_per_run=2))
    with pytest.raises(ConfigError):
        Executor(fake.options(workers=0))


def test_random_and_bayes_run_max_runs(fake, tmp_path):
    for method in ("random", "bayes"):
        path = write_fake_sweep(tmp_path, method, method=method, parameters={
            "train.lr": {"min": 0.0001, "max": 0.01}, "seed": {"values": [0, 1]}})
        with pytest.raises(ConfigError, match="--max-runs"):
            Executor(fake.options(), run_fn=RUNNER).run([path])
        result = run_sweep(path, fake.options(max_runs=3), run_fn=RUNNER)
        assert result.count("finished") == 3
        recs = summaries(fake.runs / "quick" / method)
        assert len(recs) == 3
        assert all(type(r["config"]["train.lr"]) is float for r in recs.values())
        index = json.loads((fake.runs / "quick" / method / "sweep.json").read_text())
        assert index["n_runs"] == 3


def test_finetune_sweep_needs_its_pretrain_sweep(fake, tmp_path):
    pre = write_fake_sweep(tmp_path, "fake_pre")
    ft = write_fake_sweep(tmp_path, "fake_ft", parameters={"seed": {"values": [0, 1]}}, experiment=(
        "experiment: fake_ft\nobjective: mlm\nmodel: {arch: encoder}\ndata: {task: pair}\n"
        "finetune: {pretrained: 'auto:fake_pre'}\ntrain: {monitor: val/acc, monitor_mode: max}\n"))
    with pytest.raises(ConfigError, match=r"fake_ft reads the runs of sweep fake_pre \(a checkpoint, the lr it chose or its tokenizer\), but .* has no finished run; run both in order"):
        Executor(fake.options(), run_fn=RUNNER).run([ft])
    assert not fake.runs.exists()
    results = Executor(fake.options(max_runs=2), run_fn=RUNNER).run([ft, pre])  # given out of order
    assert [r.name for r in results] == ["fake_pre", "fake_ft"]
    Executor(fake.options()).plan_all([ft])  # now fake_pre has finished runs


@pytest.mark.parametrize("reads_it", [False, True])
def test_the_next_sweep_starts_beside_the_last_runs_of_one_it_does_not_read(fake, tmp_path, monkeypatch, reads_it):
    """Three runs on two workers: while fake_a's third runs, a free worker starts fake_b's first, unless
    fake_b fine-tunes fake_a's runs (then it waits for all of them)."""
    a = write_fake_sweep(tmp_path, "fake_a", parameters={"seed": {"values": [0, 1, 2]}})
    b = write_fake_sweep(tmp_path, "fake_b", parameters={"seed": {"values": [0, 1]}}, experiment=(
        "experiment: fake_b\nobjective: mlm\nmodel: {arch: encoder}\ndata: {task: pair}\n"
        "finetune: {pretrained: 'auto:fake_a'}\ntrain: {monitor: val/acc, monitor_mode: max}\n") if reads_it else None)
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0.2")
    monkeypatch.setenv("FAKE_TRAIN_AWAIT", f"experiment=fake_a;seed=2|/fake_b/|{3 if reads_it else 30}")
    results = Executor(fake.options(workers=2), run_fn=RUNNER).run([a, b])
    assert [r.name for r in results] == ["fake_a", "fake_b"] and all(r.ok for r in results)
    assert [r.count("finished") for r in results] == [3, 2]
    last = next(r for r in summaries(fake.runs / "quick" / "fake_a").values() if r["config"]["seed"] == 2)
    assert last["metrics"]["awaited"] == (0.0 if reads_it else 1.0)
    calls = [c["run_dir"] for c in fake.calls()]
    first_b = min(i for i, d in enumerate(calls) if "/fake_b/" in d)
    assert first_b == 3  # after fake_a's three starts either way: sweeps keep their order


# --- several processes -------------------------------------------------------------------------
def test_two_executor_processes_share_one_grid(tmp_path):
    path = write_fake_sweep(tmp_path)
    runs = tmp_path / "runs"
    env = _env(tmp_path, FAKE_TRAIN_SLEEP="0.4")
    procs = [subprocess.Popen(_executor_cmd(path, runs, "--workers", "2"), env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    calls = read_call_log(tmp_path / "calls.log")
    assert len(calls) == 8, outs
    assert len({c["run_dir"] for c in calls}) == 8
    recs = summaries(runs / "quick" / "fake")
    assert len(recs) == 8 and all(r["status"] == "finished" for r in recs.values())
    index = json.loads((runs / "quick" / "fake" / "sweep.json").read_text())
    assert index["counts"] == {"finished": 8}


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_sigkill_executor_mid_run_then_resume(tmp_path):
    path = write_fake_sweep(tmp_path, parameters={"model.head_dim": {"values": [8, 16]}, "seed": {"values": [0, 1]}})
    runs = tmp_path / "runs"
    log = tmp_path / "calls.log"
    proc = subprocess.Popen(_executor_cmd(path, runs), env=_env(tmp_path, FAKE_TRAIN_SLEEP="1.5"), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(read_call_log(log)) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "executor did not start its second run"
        time.sleep(0.05)
    victim = read_call_log(log)[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # the run process dies with the executor (PR_SET_PDEATHSIG) ...
    deadline = time.monotonic() + 10
    while not _dead(victim["pid"]):
        assert time.monotonic() < deadline, "the run process outlived a SIGKILLed executor"
        time.sleep(0.05)
    # ... leaving its record `running` with a free lock
    assert records.read_summary(Path(victim["run_dir"])).status == "running"
    rc = subprocess.run(check=False, args=_executor_cmd(path, runs), env=_env(tmp_path), cwd=tmp_path, timeout=120,
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    calls = read_call_log(log)
    by_dir = {}
    for c in calls:
        by_dir[c["run_dir"]] = by_dir.get(c["run_dir"], 0) + 1
    assert len(by_dir) == 4
    assert by_dir[victim["run_dir"]] == 2, "the killed run must be run (resumed) again"
    assert sorted(by_dir.values()) == [1, 1, 1, 2], "no other run may be duplicated"
    recs = summaries(runs / "quick" / "fake")
    assert len(recs) == 4 and all(r["status"] == "finished" for r in recs.values())
    assert recs[Path(victim["run_dir"]).name]["resumed"] == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_sigterm_stops_the_executor_and_leaves_runs_resumable(tmp_path):
    """SIGTERM (preemption) or Ctrl-C: runs are stopped, not recorded as failed, and resume next time,
    even when train() turns the interrupt into SystemExit(1) as Lightning does."""
    path = write_fake_sweep(tmp_path, parameters={"model.head_dim": {"values": [8, 16]}, "seed": {"values": [0]}})
    runs = tmp_path / "runs"
    log = tmp_path / "calls.log"
    proc = subprocess.Popen(_executor_cmd(path, runs, "--workers", "2"), env=_env(tmp_path, FAKE_TRAIN_SLEEP="30"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while len(read_call_log(log)) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "executor did not start its runs"
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0]
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 143, out  # 128 + SIGTERM
    assert "resume" in out and "Traceback" not in out
    calls = read_call_log(log)
    for c in calls:
        assert _dead(c["pid"])
        assert records.read_summary(Path(c["run_dir"])).status == "running"
        assert "fake_train: interrupted" in (Path(c["run_dir"]) / "stdout.log").read_text()
    rc = subprocess.run(check=False, args=_executor_cmd(path, runs), env=_env(tmp_path), cwd=tmp_path, timeout=120,
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    recs = summaries(runs / "quick" / "fake")
    assert len(recs) == 2 and all(r["status"] == "finished" and r["resumed"] == 1 for r in recs.values())


def test_no_credentials_no_network_uses_the_local_executor(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    path = write_fake_sweep(tmp_path)
    env = _env(tmp_path, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    for var in ("WANDB_MODE", "WANDB_API_KEY", "NETRC"):
        env.pop(var, None)
    proc = subprocess.run(check=False, args=_executor_cmd(path, tmp_path / "runs", "--max-runs", "2"), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "local executor" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    calls = read_call_log(tmp_path / "calls.log")
    assert len(calls) == 2
    assert all(c["WANDB_MODE"] == "offline" for c in calls), "runs must log offline without a login"
    assert not any(home.iterdir()), "nothing may be written to HOME (no login prompt, no settings)"


def test_a_sweep_leaves_the_live_view_to_the_next_and_still_reports_its_last_runs():
    from transformer_ablations.sweeps.progress import SweepProgress

    out = io.StringIO()
    first = SweepProgress("fake_a", 2, "val/acc", quiet=False, stream=out)
    first.run_started("r1", "seed=1")
    first.release_view()  # Rich allows one live view at a time: the next sweep's could not start otherwise
    second = SweepProgress("fake_b", 1, "val/acc", quiet=False, stream=out)
    first.run_finished("r1", "seed=1", "finished", 0.5, 1.0)
    second.run_started("r2", "seed=0")
    second.run_finished("r2", "seed=0", "finished", 0.7, 1.0)
    second.close()
    first.close()
    text = out.getvalue()
    assert "fake_a [1/2] finished r1 seed=1 val/acc=0.5" in text
    assert "fake_a: 1/2 done: 1 finished" in text and "fake_b: 1/1 done: 1 finished" in text
