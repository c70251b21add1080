"""Issue 7, parts 2-5: crash safety, divergence in a sweep, concurrent runs, resource bounds.

- atomic writes: a failure in the middle of writing a record or a checkpoint leaves the previous
  file byte-identical (and no temp file);
- ``kill -9`` at any point of a run, then the same command: it resumes from the last checkpoint
  and ends with the metrics of an uninterrupted run, bit-identical on CPU; a finished run is
  never overwritten;
- a diverging run in a sweep is recorded as ``diverged`` and the sweep goes on;
- three identical ``ablate fit`` at once: one run record, the others say it exists or is in
  progress, caches intact;
- peak RSS is recorded; an out-of-memory error or a DataLoader worker crash fails that run with a
  clear status and error line, and a failing run does not stop its sweep.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from transformer_ablations.atomic import atomic_write_bytes
from transformer_ablations.cli import parse_run_config
from transformer_ablations.runs import records
from transformer_ablations.runs.summary import RunSummary
from transformer_ablations.training.checkpoints import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
TIMING = {"train/tokens_per_s", "train/step_time_ms", "train/tflops", "train/mfu"}


def env_for(tmp: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp / "hf_home"),
               CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore", **extra)
    env.pop("ABLATE_RUN_LOCK_HELD", None)
    return env


def ablate_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "transformer_ablations.cli", *args]


def fit_args(out: Path, cache: Path, *extra: str, experiment: str = "q5_pretrain") -> list[str]:
    return ["fit", "--config", str(EXP / f"{experiment}.yaml"), "--scale=smoke", "--train.wandb=disabled",
            f"--train.out_dir={out}", f"--data.cache_dir={cache}", *extra]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def strip_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def csv_without_timing(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def tree_bytes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- 2. atomic writes -------------------------------------------------------------------------
class Boom(OSError):
    pass


def _raise(*args, **kwargs):
    raise Boom(28, "No space left on device (simulated)")


@pytest.mark.parametrize("where", ["replace", "fsync", "write"])
def test_failed_summary_write_leaves_the_previous_record(tmp_path, monkeypatch, where):
    run_dir = tmp_path / "run"
    records.write_summary(run_dir, RunSummary("run", None, "running", {}, step=8, metrics={"val/loss": 1.5}))
    before = (run_dir / "summary.json").read_bytes()
    if where == "replace":
        monkeypatch.setattr(os, "replace", _raise)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _raise)
    else:  # the data write itself fails half-way: a partial temp file exists at that moment
        real_fdopen = os.fdopen

        def half_writing_fdopen(fd, mode="r", *a, **k):
            fh = real_fdopen(fd, mode, *a, **k)

            class Half:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    fh.close()

                def write(self, data):
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    raise Boom(28, "No space left on device (simulated)")

                def __getattr__(self, name):
                    return getattr(fh, name)

            return Half()

        monkeypatch.setattr(os, "fdopen", half_writing_fdopen)
    with pytest.raises(Boom):
        records.write_summary(run_dir, RunSummary("run", None, "finished", {}, step=16, metrics={"val/loss": 1.2}))
    monkeypatch.undo()
    assert (run_dir / "summary.json").read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["summary.json"]  # no temp file left


def test_failed_checkpoint_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 8}, path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", _raise)
    with pytest.raises(Boom):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 16}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=False)["global_step"] == 8
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_process_killed_between_write_and_rename_keeps_the_old_file(tmp_path):
    """A child killed after writing the temp file (so the except clause never runs): the old file
    stays, and only a hidden ``.*.tmp`` is left, which the next ``train`` of that run removes."""
    path = tmp_path / "run" / "summary.json"
    atomic_write_bytes(path, b'{"status": "running", "step": 8}')
    before = path.read_bytes()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
            atomic_write_bytes(path, b'{"status": "finished", "step": 24}')
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert path.read_bytes() == before
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "summary.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".summary.json.") and leftovers[0].endswith(".tmp")
    from transformer_ablations.training.run import _remove_stale_temp_files

    _remove_stale_temp_files(path.parent)
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_metrics_csv_of_a_killed_attempt_is_trimmed_on_resume(tmp_path):
    """Rows a killed attempt logged after its last checkpoint (the resumed run logs them again) and a
    row torn by the kill are dropped; rows up to the checkpoint stay."""
    from transformer_ablations.training.tracking import trim_metrics_csv

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/loss\n0,1,5.6,\n0,3,5.5,\n0,7,,5.3\n1,9,5.2,\n1,11,5.1,\n1,1")
    trim_metrics_csv(path, from_step=8)
    assert path.read_text().splitlines() == ["epoch,step,train/loss,val/loss", "0,1,5.6,", "0,3,5.5,", "0,7,,5.3"]
    trim_metrics_csv(path, from_step=0)  # a killed attempt without any checkpoint: the run starts over
    assert path.read_text().splitlines() == ["epoch,step,train/loss,val/loss"]


# --- 2. kill -9 and resume --------------------------------------------------------------------
KILL_EXTRA = ("--train.max_steps=24", "--train.val_every=8", "--model.dropout=0.1")


def _start(args: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(ablate_argv(*args), cwd=cwd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _poll_then_kill(proc: subprocess.Popen, summary_path: Path, ready, timeout: float = 240,
                    sig=signal.SIGKILL) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = read_json(summary_path)
        if summary is not None and ready(summary):
            proc.send_signal(sig)
            proc.wait(timeout=30)
            return summary
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before it could be killed; last record: {summary}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the run to reach the kill point")


def _at(summary: dict, resumed_from: int, step: int) -> bool:
    """The attempt resumed from ``resumed_from`` is running and its record (so its checkpoint) is at ``step``."""
    return summary.get("status") == "running" and summary.get("resumed_from_step") == resumed_from and \
        (summary.get("step") or 0) >= step


def _interrupt_and_check(args, cwd, env, summary_path: Path, sig, code: int, ready) -> dict:
    """Send ``sig`` to a run once ``ready(record)``: it exits ``code``, records `interrupted` with the
    signal and the step of its last checkpoint, and prints one line holding the command that resumes."""
    err_path = summary_path.parent.parent / f"stderr-{sig.name}.txt"
    proc = subprocess.Popen(ablate_argv(*args), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err_path.open("w"))
    seen = _poll_then_kill(proc, summary_path, ready, sig=sig)
    assert proc.returncode == code, (proc.returncode, err_path.read_text()[-3000:])
    text = err_path.read_text()
    assert "Traceback" not in text, text[-3000:]
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    record = read_json(summary_path)
    assert record["status"] == "interrupted" and record["signal"] == sig.name, record
    assert record["step"] >= seen["step"] and record["interrupted_at_step"] >= record["step"], record
    ckpt = torch.load(summary_path.parent / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == record["step"]  # the record's step is the one a resume starts from
    assert lines[0].startswith(f"ablate: interrupted by {sig.name} at step {record['interrupted_at_step']} "
                               f"(last checkpoint: step {record['step']})"), lines[0]
    assert lines[0].endswith("resume with: ablate " + " ".join(args)), lines[0]
    return record


def test_kill_9_then_same_command_resumes_to_the_uninterrupted_metrics(tmp_path):
    cache = tmp_path / "cache"
    env = env_for(tmp_path)
    log = tmp_path / "log.txt"
    whole = subprocess.run(ablate_argv(*fit_args(tmp_path / "whole", cache, *KILL_EXTRA)), cwd=tmp_path, env=env,
                           check=False, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-3000:]
    expected = read_json(next((tmp_path / "whole" / "q5_pretrain").glob("s0-*/")) / "summary.json")
    assert expected["status"] == "finished" and expected["step"] == 24
    assert 0 < expected["peak_rss_mb"] < 2048, expected["peak_rss_mb"]  # part 5: recorded and bounded

    args = fit_args(tmp_path / "killed", cache, *KILL_EXTRA)
    run_dir = tmp_path / "killed" / "q5_pretrain" / Path(expected["run_dir"]).name
    summary_path = run_dir / "summary.json"
    # kill 1: as soon as the record exists (before the first checkpoint)
    _poll_then_kill(_start(args, tmp_path, env, log), summary_path, lambda s: True)
    # kill 2: once the record says step >= 8, i.e. a checkpoint of that step is on disk
    seen = _poll_then_kill(_start(args, tmp_path, env, log), summary_path, lambda s: (s.get("step") or 0) >= 8)
    assert seen["status"] == "running", seen
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] >= seen["step"]  # the record never runs ahead of the checkpoints
    # issue 13: Ctrl-C (SIGINT) in the middle of a resumed attempt, then SIGTERM (a scheduler, `timeout`)
    # as the next attempt starts training
    k = ckpt["global_step"]
    assert k == 8, k
    _interrupt_and_check(args, tmp_path, env, summary_path, signal.SIGINT, 130, lambda s: _at(s, k, k + 8))
    _interrupt_and_check(args, tmp_path, env, summary_path, signal.SIGTERM, 143, lambda s: _at(s, k + 8, k + 8))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # the same command again: resumes and finishes
    again = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, log.read_text()[-2000:] + again.stdout[-2000:] + again.stderr[-3000:]
    resumed = read_json(summary_path)
    assert resumed["status"] == "finished" and resumed["step"] == 24
    assert resumed["resumed_from_step"] == ckpt["global_step"] >= 8
    assert strip_timing(resumed["metrics"]) == strip_timing(expected["metrics"])
    assert resumed["best"] == expected["best"]
    assert not list(run_dir.rglob(".*.tmp")), "temp files of the killed attempts are cleaned up"
    # metrics.csv holds each logged row once, as in the uninterrupted run (no rows lost or repeated)
    whole_dir = next((tmp_path / "whole" / "q5_pretrain").glob("s0-*/"))
    assert csv_without_timing(run_dir / "metrics.csv") == csv_without_timing(whole_dir / "metrics.csv")
    assert not run_dir.with_name(run_dir.name + ".lock").exists()  # a standalone run removes its lock file

    # a finished run is never overwritten: the same command reports it and changes nothing
    before = tree_bytes(run_dir)
    rerun = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"run exists (finished): {run_dir}" in rerun.stdout
    assert tree_bytes(run_dir) == before


# --- 3. divergence in a sweep -----------------------------------------------------------------
def _sweep_file(path: Path, name: str, parameters: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        method: grid
        metric:
          name: val/acc
          goal: maximize
        command:
          - ${{env}}
          - ablate
          - fit
          - --config
          - {EXP / 'q1_scaling.yaml'}
          - ${{args}}
        parameters:
        """) + textwrap.indent(textwrap.dedent(parameters), "  "))
    return path


def test_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = _sweep_file(tmp_path / "diverge.yaml", "q1_scaling", """\
        train.lr:
          values: [0.001, 1000000.0]
        model.attention.scaling:
          value: none
        model.head_dim:
          value: 256
        train.warmup_steps:
          value: 0
        train.grad_clip:
          value: 0
        scale:
          value: smoke
        """)
    args = ["sweep", str(sweep), "--scale", "smoke", "--runs-dir", str(tmp_path / "runs"), "--offline", "--quiet",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.wandb=disabled"]
    res = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env_for(tmp_path), check=False, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]  # diverged is a result, not a failure
    sweep_dir = tmp_path / "runs" / "smoke" / "q1_scaling"
    summaries = {s["config"]["train.lr"]: s for s in map(read_json, sweep_dir.glob("*/summary.json"))}
    assert set(summaries) == {0.001, 1e6}
    assert summaries[0.001]["status"] == "finished"
    bad = summaries[1e6]
    assert bad["status"] == "diverged", bad
    assert isinstance(bad["diverged_step"], int) and bad["diverged_step"] >= 0
    assert bad["error"].startswith("non-finite "), bad["error"]
    for key, value in bad["metrics"].items():  # the last finite metrics (NaN would be null here)
        assert isinstance(value, (int, float)), (key, value)
    index = read_json(sweep_dir / "sweep.json")
    assert index["counts"] == {"finished": 1, "diverged": 1}, index["counts"]

    # the report counts it (collect): one usable finished and one diverged run of this sweep
    from transformer_ablations.report.collect import collect_runs

    coll = collect_runs(tmp_path / "runs", "smoke")
    statuses = sorted(r.status for r in coll.runs if r.sweep == "q1_scaling")
    assert statuses == ["diverged", "finished"]

    # the same sweep again leaves both records alone
    before = tree_bytes(sweep_dir)
    res = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env_for(tmp_path), check=False, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    after = tree_bytes(sweep_dir)
    assert {k: v for k, v in after.items() if k != "sweep.json"} == {k: v for k, v in before.items() if k != "sweep.json"}


# --- 4. concurrency ---------------------------------------------------------------------------
def test_three_identical_fits_at_once_make_one_run(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "runs"
    env = env_for(tmp_path)
    args = fit_args(out, cache, "--train.max_steps=16", "--train.val_every=8")
    procs = [subprocess.Popen(ablate_argv(*args), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    trained = [r for r in results if r[0] == 0 and "[finished]" in r[1]]
    assert len(trained) == 1, results
    for code, stdout, stderr in results:
        assert "Traceback" not in stderr, stderr[-3000:]
        if (code, stdout, stderr) in trained:
            continue
        exists = code == 0 and "run exists (finished):" in stdout
        busy = code == 75 and stderr.strip().splitlines()[-1].startswith("run in progress by another process: ")
        assert exists or busy, (code, stdout[-1000:], stderr[-1000:])
    entries = list((out / "q5_pretrain").iterdir())
    assert len(entries) == 1 and entries[0].is_dir(), entries  # one run record, no lock file left
    run_dir = entries[0]
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "finished" and summary["step"] == 16
    steps = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    header, rows = steps[0], steps[1:]
    val_steps = [row[header.index("step")] for row in rows if row[header.index("val/loss")]]
    assert len(val_steps) == len(set(val_steps)) == 2, val_steps  # one process wrote it: each validation once
    # the shared caches are whole: a fourth run on them (another out_dir) gives the same metrics
    res = subprocess.run(ablate_argv(*fit_args(tmp_path / "again", cache, "--train.max_steps=16",
                                               "--train.val_every=8")),
                         cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    other = read_json(next((tmp_path / "again" / "q5_pretrain").iterdir()) / "summary.json")
    assert strip_timing(other["metrics"]) == strip_timing(summary["metrics"])
    assert len(list((cache / "tokenizers").glob("*.model"))) == 1
    assert len([p for p in (cache / "datasets").iterdir() if p.is_dir()]) == 1


def test_fit_of_a_run_in_progress_says_so_and_touches_nothing(tmp_path):
    from transformer_ablations.sweeps.executor import RunLock, lock_path

    cache, out = tmp_path / "cache", tmp_path / "runs"
    args = fit_args(out, cache, experiment="q1_scaling")
    cfg = parse_run_config(args[1:])
    run_dir = records.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    records.write_summary(run_dir, dataclasses.replace(records.new_summary(cfg), step=4))
    lock = RunLock(lock_path(run_dir))
    assert lock.try_acquire()  # another process (here: this one) is training it
    try:
        before = tree_bytes(out)
        res = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env_for(tmp_path), check=False, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 75, res.stdout[-2000:] + res.stderr[-2000:]
        assert res.stderr.strip().splitlines() == [f"run in progress by another process: {run_dir}"]
        assert tree_bytes(out) == before
    finally:
        lock.release()


def test_run_lock_survives_the_holder_removing_the_file(tmp_path):
    """A standalone run removes its lock file when done; a racer that opened the old file must not
    think it holds the lock of the new one."""
    from transformer_ablations.sweeps.executor import RunLock

    path = tmp_path / "s0-abc.lock"
    a = RunLock(path)
    assert a.try_acquire()
    stale_fd = os.open(path, os.O_RDWR)  # a racer opened the file ...
    a.release(remove=True)  # ... then the holder removed it
    b = RunLock(path)
    assert b.try_acquire()  # a newcomer locks a new file
    import fcntl

    fcntl.flock(stale_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the racer could lock the old inode, but:
    assert not os.path.samestat(os.fstat(stale_fd), os.stat(path))  # try_acquire checks this and retries
    os.close(stale_fd)
    assert not RunLock(path).try_acquire()
    b.release()


# --- 5. resources and failures ----------------------------------------------------------------
def _cfg(tmp_path: Path, *extra: str):
    """A small masked-LM run (the Q1 experiment file with its pre-issue-15 task: the faults below hit the MLM collator)."""
    return parse_run_config(["--config", str(EXP / "q1_scaling.yaml"), "--scale=smoke", "--train.wandb=disabled",
                             "--objective=mlm", "--data.task=corpus",
                             "--train.accelerator=cpu", f"--train.out_dir={tmp_path / 'runs'}",
                             f"--data.cache_dir={tmp_path / 'cache'}", *extra])


def test_out_of_memory_fails_the_run_with_a_clear_error(tmp_path, monkeypatch):
    from transformer_ablations.data import collate
    from transformer_ablations.training.run import train

    def oom(self, examples):
        raise MemoryError("simulated allocation failure")

    monkeypatch.setattr(collate.MLMCollator, "__call__", oom)
    result = train(_cfg(tmp_path))
    assert result["status"] == "failed"
    summary = read_json(Path(result["run_dir"]) / "summary.json")
    assert summary["status"] == "failed"
    assert summary["error"].startswith("out of memory (MemoryError: simulated allocation failure)"), summary["error"]
    assert "\n" not in summary["error"]
    assert summary["peak_rss_mb"] > 0


def test_dataloader_worker_crash_fails_the_run_with_a_clear_error(tmp_path, monkeypatch):
    from torch.utils.data import get_worker_info

    from transformer_ablations.data import collate
    from transformer_ablations.training.run import train

    real = collate.MLMCollator.__call__

    def dying_worker(self, examples):
        if get_worker_info() is not None:
            os._exit(1)
        return real(self, examples)

    monkeypatch.setattr(collate.MLMCollator, "__call__", dying_worker)
    result = train(_cfg(tmp_path, "--data.num_workers=1"))
    assert result["status"] == "failed"
    summary = read_json(Path(result["run_dir"]) / "summary.json")
    assert summary["status"] == "failed"
    assert summary["error"].startswith("DataLoader worker crashed (RuntimeError: DataLoader worker (pid"), summary["error"]
    assert "\n" not in summary["error"]


RUNNER = '''
"""A runner for `ablate sweep --runner`: seed 1 runs out of memory in its data pipeline."""
from transformer_ablations.data import collate
from transformer_ablations.training.run import train

_real = collate.MLMCollator.__call__


def oom_on_seed_1(cfg):
    if cfg.seed == 1:
        def oom(self, examples):
            raise MemoryError("simulated")
        collate.MLMCollator.__call__ = oom
    return train(cfg)
'''


def test_a_failing_run_does_not_stop_its_sweep(tmp_path):
    (tmp_path / "oom_runner.py").write_text(RUNNER)
    sweep = _sweep_file(tmp_path / "seeds.yaml", "q1_scaling", """\
        seed:
          values: [0, 1]
        scale:
          value: smoke
        """)
    args = ["sweep", str(sweep), "--scale", "smoke", "--runs-dir", str(tmp_path / "runs"), "--offline", "--quiet",
            "--runner", "oom_runner:oom_on_seed_1",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.wandb=disabled",
            "--set", "objective=mlm", "--set", "data.task=corpus"]  # the masked-LM collator is what fails
    env = env_for(tmp_path, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]  # documented: 1 when some run failed
    assert "1 run(s) failed" in res.stderr
    summaries = {s["config"]["seed"]: s for s in map(read_json, (tmp_path / "runs" / "smoke" / "q1_scaling").glob("*/summary.json"))}
    assert summaries[0]["status"] == "finished"
    assert summaries[1]["status"] == "failed"
    assert summaries[1]["error"].startswith("out of memory (MemoryError: simulated)"), summaries[1]["error"]


# --- issue 13: SIGINT / SIGTERM in a sweep child, and on the executor -----------------------------
def _wait_for(path_glob, root: Path, ready, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in root.glob(path_glob):
            summary = read_json(path)
            if summary is not None and ready(summary):
                return path
        assert proc.poll() is None, f"the sweep ended (code {proc.returncode}) before the signal"
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the sweep's run")


def test_sigint_and_sigterm_in_a_sweep_are_recorded_as_interrupted_and_resume(tmp_path):
    sweep = _sweep_file(tmp_path / "one.yaml", "q1_scaling", """\
        seed:
          values: [0]
        scale:
          value: smoke
        """)
    args = ["sweep", str(sweep), "--scale", "smoke", "--runs-dir", str(tmp_path / "runs"), "--offline", "--quiet",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.wandb=disabled",
            "--set", "train.max_steps=24", "--set", "train.val_every=8"]
    sweep_dir = tmp_path / "runs" / "smoke" / "q1_scaling"
    env = env_for(tmp_path)

    def start() -> subprocess.Popen:
        return subprocess.Popen(ablate_argv(*args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    # 1. Ctrl-C reaches only the child (e.g. `kill -INT <pid>`): the executor reports it interrupted
    proc = start()
    record = _wait_for("s0-*/summary.json", sweep_dir, lambda s: s.get("status") == "running" and (s.get("step") or 0) >= 8,
                       proc)
    log = record.parent / "stdout.log"
    child = int(log.read_text().split(" pid ", 1)[1].split(":", 1)[0])
    os.kill(child, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err + log.read_text()
    assert f"interrupted {record.parent.name}" in out, out
    assert err.strip().splitlines() == [f"ablate sweep: 1 run(s) interrupted; resume with: ablate {' '.join(args)}"], err
    summary = read_json(record)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGINT" and summary["step"] >= 8, summary
    assert read_json(sweep_dir / "sweep.json")["counts"] == {"interrupted": 1}

    # 2. SIGTERM to the executor (a scheduler's preemption): it stops the child the same way, exits 143
    proc = start()
    _wait_for("s0-*/summary.json", sweep_dir, lambda s: s.get("status") == "running" and (s.get("step") or 0) >= 16, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err + log.read_text()
    assert err.strip().splitlines()[-1] == f"ablate: error: interrupted by SIGTERM; resume with: ablate {' '.join(args)}"
    summary = read_json(record)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM" and summary["step"] == 16, summary

    # 3. the same command resumes the run from its last checkpoint and finishes it
    res = subprocess.run(ablate_argv(*args), cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = read_json(record)
    assert summary["status"] == "finished" and summary["step"] == 24 and summary["resumed_from_step"] == 16, summary
