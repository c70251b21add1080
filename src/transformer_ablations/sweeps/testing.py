"""A fake ``train(cfg)`` for testing and timing the sweep machinery without training.

It honours the record contract of ``transformer_ablations.training.run.train``: it writes
``summary.json`` (``running`` first, a final status last) into ``run_dir_for(cfg)``, returns
``{"status", "metrics", "run_dir"}``, returns ``exists`` for a finished record and "resumes" a
``running`` one (the record's ``resumed`` counts the resumptions).

Controlled by environment variables (inherited by the executor's children):

* ``FAKE_TRAIN_LOG``: a file; one line ``<pid> <run_dir> WANDB_MODE=.. OMP_NUM_THREADS=..
  CUDA_VISIBLE_DEVICES=..`` is appended per call;
* ``FAKE_TRAIN_SLEEP``: seconds to sleep before finishing (default 0);
* ``FAKE_TRAIN_DIVERGE`` / ``FAKE_TRAIN_RAISE`` / ``FAKE_TRAIN_EXIT`` / ``FAKE_TRAIN_SIGKILL``:
  ``key=value[;key=value...]`` conditions on the flat config (e.g. ``model.positional=none``):
  a matching run diverges, raises, exits with code 3 (no summary), or SIGKILLs itself
  (like the OOM killer);
* ``FAKE_TRAIN_AWAIT``: ``<conditions>|<text>|<seconds>``: a matching run waits (at most ``seconds``)
  until a line of ``FAKE_TRAIN_LOG`` contains ``text`` (another run has started), and records whether
  it saw one as the metric ``awaited`` (1.0 / 0.0).

Use it from the command line with ``ablate sweep ... --runner transformer_ablations.sweeps.testing:fake_train``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from ..config import flatten, to_dict
from ..runs import records
from ..runs.summary import TERMINAL, Status
from ..training.interrupts import RunInterrupted


def _matches(flat: dict, spec: str) -> bool:
    if not spec:
        return False
    for cond in spec.split(";"):
        key, _, value = cond.partition("=")
        if str(flat.get(key.strip())) != value.strip():
            return False
    return True


def _log(line: str) -> None:
    path = os.environ.get("FAKE_TRAIN_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _await_log(text: str, seconds: str) -> bool:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if any(text in line for line in Path(os.environ["FAKE_TRAIN_LOG"]).read_text().splitlines()):
            return True
        time.sleep(0.05)
    return False


def fake_train(cfg) -> dict:
    run_dir = records.run_dir_for(cfg)
    existing = records.read_summary(run_dir)
    if existing and existing.status in TERMINAL:
        return {"status": "exists", "metrics": existing.metrics, "run_dir": str(run_dir)}
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_config(run_dir, cfg)
    summary = existing or records.new_summary(cfg)
    summary.resumed = (summary.resumed if summary.resumed is not None else -1) + 1
    summary.status = Status.RUNNING
    records.write_summary(run_dir, summary)
    env = " ".join(f"{k}={os.environ.get(k, '')}" for k in ("WANDB_MODE", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"))
    _log(f"{os.getpid()} {run_dir} {env}")
    t0 = time.monotonic()
    flat = flatten(to_dict(cfg))
    try:
        time.sleep(float(os.environ.get("FAKE_TRAIN_SLEEP", "0") or 0))
    except (KeyboardInterrupt, RunInterrupted):
        import sys

        print("fake_train: interrupted", flush=True)
        sys.exit(1)  # what Lightning does on Ctrl-C: the record must stay resumable all the same
    if _matches(flat, os.environ.get("FAKE_TRAIN_SIGKILL", "")):
        os.kill(os.getpid(), signal.SIGKILL)
    if _matches(flat, os.environ.get("FAKE_TRAIN_EXIT", "")):
        os._exit(3)
    if _matches(flat, os.environ.get("FAKE_TRAIN_RAISE", "")):
        raise RuntimeError("fake training error")
    value = int(hashlib.sha256(records.run_id_for(cfg).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    metrics = {cfg.train.monitor: value, "train/loss": 1.0 - value}
    cond, _, wait_for = os.environ.get("FAKE_TRAIN_AWAIT", "").partition("|")
    if _matches(flat, cond):
        metrics["awaited"] = float(_await_log(*wait_for.split("|")))
    if _matches(flat, os.environ.get("FAKE_TRAIN_DIVERGE", "")):
        summary.status, summary.diverged_step, summary.metrics = Status.DIVERGED, 3, {"train/loss": float("nan")}
    else:
        summary.status, summary.metrics, summary.best = Status.FINISHED, metrics, {cfg.train.monitor: value}
    summary.wall_time_s, summary.finished_at = time.monotonic() - t0, time.strftime("%Y-%m-%dT%H:%M:%S")
    records.write_summary(run_dir, summary)
    return {"status": summary.status, "metrics": summary.metrics, "run_dir": str(run_dir)}


# --- small sweep files for tests and benchmarks (no experiment file of the repository needed) ---
FAKE_EXPERIMENT = """\
experiment: {name}
objective: none
model: {{arch: encoder, d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64}}
data: {{task: retrieval, seq_len: 16, n_train: 64, n_val: 32}}
train: {{max_steps: 4, val_every: 2, monitor: val/acc, monitor_mode: max}}
"""


def write_fake_sweep(directory, name: str = "fake", parameters: dict | None = None, method: str = "grid",
                     metric: dict | None = None, experiment: str | None = None) -> Path:
    """``<directory>/experiments/<name>.yaml`` + ``<directory>/sweeps/<name>.yaml``; returns the sweep path.

    Default grid: ``model.attention.scaling`` sqrt_dk/none x ``model.head_dim`` 8/16 x seed 0/1 = 8 points."""
    from pathlib import Path

    import yaml

    directory = Path(directory)
    (directory / "experiments").mkdir(parents=True, exist_ok=True)
    (directory / "sweeps").mkdir(parents=True, exist_ok=True)
    exp = directory / "experiments" / f"{name}.yaml"
    exp.write_text(experiment if experiment is not None else FAKE_EXPERIMENT.format(name=name))
    params = parameters if parameters is not None else {
        "model.attention.scaling": {"values": ["sqrt_dk", "none"]},
        "model.head_dim": {"values": [8, 16]},
        "seed": {"values": [0, 1]},
        "scale": {"value": "quick"},
    }
    sweep = {
        "name": name,
        "method": method,
        "metric": metric if metric is not None else {"name": "val/acc", "goal": "maximize"},
        "command": ["${env}", "ablate", "fit", "--config", str(exp), "${args}"],
        "parameters": params,
    }
    path = directory / "sweeps" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def src_pythonpath() -> str:
    """A PYTHONPATH under which subprocesses import this package (installed or not)."""
    import os
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])


def read_call_log(path) -> list[dict]:
    """The lines of ``FAKE_TRAIN_LOG`` as dicts: pid, run_dir and the logged environment."""
    from pathlib import Path

    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) < 2:
            continue
        entry = {"pid": int(parts[0]), "run_dir": parts[1]}
        entry.update(kv.split("=", 1) for kv in parts[2:] if "=" in kv)
        out.append(entry)
    return out
