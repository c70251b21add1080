"""Run directories and run records (``summary.json``), written atomically.

A run lives in ``<train.out_dir>/<experiment>/s<seed>-<config hash>/``. The directory name is a
function of the config, so the same command always finds its own run: a finished run is left
alone, an interrupted one resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_bytes, atomic_write_text
from ..config import ConfigError, RunConfig, config_hash, flatten, to_dict
from .summary import CorruptRecord, RunSummary, Status, count_nonfinite


def run_id_for(cfg: RunConfig) -> str:
    return f"s{cfg.seed}-{config_hash(cfg)}"


def run_dir_for(cfg: RunConfig) -> Path:
    return Path(cfg.train.out_dir) / cfg.experiment / run_id_for(cfg)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_summary(run_dir: Path) -> RunSummary | None:
    """The record of a run folder (None: no record, a torn one, which atomic writes never leave,
    or a file that is not a run record)."""
    try:
        return RunSummary.load(Path(run_dir) / "summary.json")
    except CorruptRecord:
        return None


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    text = json.dumps(_jsonable(summary.to_dict()), indent=2, sort_keys=True)
    atomic_write_text(Path(run_dir) / "summary.json", text)


def new_summary(cfg: RunConfig) -> RunSummary:
    """The record of a run that starts (``running``)."""
    return RunSummary(
        run_id=run_id_for(cfg), experiment=cfg.experiment, status=Status.RUNNING, config=flatten(to_dict(cfg)),
        config_hash=config_hash(cfg), started_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --- a record that is missing or unreadable -------------------------------------------------
UNREADABLE_SUFFIX = ".unreadable"  # a torn summary.json is kept next to the rebuilt one


def _record_problem(path: Path) -> tuple[RunSummary | None, str | None]:
    """(the record, None) | (None, what is wrong with it) | (None, None) when there is none."""
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except json.JSONDecodeError as err:
        return None, f"is truncated or not JSON ({err.msg} at byte {err.pos})"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except OSError as err:
        return None, f"cannot be read ({err.strerror or type(err).__name__})"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    try:
        return RunSummary.from_dict(data, default_run_id=path.parent.name), None
    except CorruptRecord as err:
        return None, f"is not a run record ({err})"


def existing_record(run_dir: Path, cfg: RunConfig) -> RunSummary | None:
    """The run's record, or None for a run that has not finished. A record that is missing or
    unreadable while the run folder shows a finished run (``checkpoints/last.ckpt`` or
    ``metrics.csv`` at ``train.max_steps``) is rebuilt from them, never rewritten from nothing;
    an unreadable record with no trace of the run to resume from raises :class:`ConfigError`."""
    path = Path(run_dir) / "summary.json"
    summary, problem = _record_problem(path)
    if summary is not None:
        return summary
    rebuilt = rebuild_summary(Path(run_dir), cfg)
    if rebuilt is not None:
        if problem is not None:
            _keep_aside(path)
        write_summary(run_dir, rebuilt)
        what = f"{problem} (kept as summary.json{UNREADABLE_SUFFIX})" if problem else "was missing"
        print(f"record rebuilt: {path} {what}; rebuilt from {' and '.join(rebuilt.rebuilt_from or [])}", file=sys.stderr)
        return rebuilt
    if problem is None:
        return None  # a new run, or an unfinished one that resumes from its last checkpoint
    if _last_step(Path(run_dir)) is not None:  # unfinished: it resumes; the torn record is kept aside
        _keep_aside(path)
        return None
    raise ConfigError(
        f"{path} {problem}; the run folder holds no checkpoint or metrics to rebuild it from: "
        f"restore the file, or remove {run_dir} to train the run again"
    )


def _keep_aside(path: Path) -> None:
    """A copy of an unreadable record (``summary.json.unreadable``) before a new one replaces it."""
    with contextlib.suppress(OSError):
        atomic_write_bytes(path.with_name(path.name + UNREADABLE_SUFFIX), path.read_bytes())


def _last_step(run_dir: Path) -> int | None:
    """``global_step`` of ``checkpoints/last.ckpt`` (None when there is none or it is unreadable)."""
    ckpt = _read_last_checkpoint(run_dir)
    return int(ckpt["global_step"]) if ckpt and isinstance(ckpt.get("global_step"), int) else None


def _read_last_checkpoint(run_dir: Path) -> dict | None:
    import torch

    path = run_dir / "checkpoints" / "last.ckpt"
    if not zipfile.is_zipfile(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - torch.load raises any type on a damaged archive: not evidence
        return None


def _metrics_rows(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _as_float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _stopped_at_plateau(ckpt: dict) -> bool:
    """Whether the checkpoint's early-stopping state (``train.patience``) had ended the run."""
    states = (ckpt.get("callbacks") or {}).values()
    return any(isinstance(st, dict) and "wait_count" in st and (st.get("stopped_epoch") or 0) > 0 for st in states)


def rebuild_summary(run_dir: Path, cfg: RunConfig) -> RunSummary | None:
    """A finished run's record from its folder: final metrics (the last value of each column of
    ``metrics.csv``), the best monitored value (the checkpoint callback's state in ``last.ckpt``,
    else the best of the column) and the step. None when the folder does not show a finished run."""
    max_steps = cfg.train.max_steps
    ckpt = _read_last_checkpoint(run_dir)
    rows = _metrics_rows(run_dir)
    steps = [int(r["step"]) for r in rows if str(r.get("step", "")).isdigit()]
    ckpt_done = ckpt is not None and (ckpt.get("global_step") == max_steps or _stopped_at_plateau(ckpt))
    # without a checkpoint, the rows tell: the last validation is logged at step index max_steps - 1
    csv_done = ckpt is None and bool(steps) and max(steps) >= max_steps - 1
    if not (ckpt_done or csv_done):
        return None
    step = int(ckpt["global_step"]) if ckpt_done else max_steps  # below max_steps: stopped at its plateau
    metrics: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            number = _as_float(value)
            if key not in ("epoch", "step") and number is not None:
                metrics[key] = number
    monitor, mode = cfg.train.monitor, cfg.train.monitor_mode
    best = None
    for state in ((ckpt or {}).get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor") == monitor and state.get("best_model_score") is not None:
            best = float(state["best_model_score"])
    column = [v for v in (_as_float(r.get(monitor)) for r in rows) if v is not None and math.isfinite(v)]
    if best is None and column:
        best = max(column) if mode == "max" else min(column)
    return count_nonfinite(dataclasses.replace(
        new_summary(cfg), status=Status.FINISHED, run_dir=str(run_dir),
        step=step, plateau_step=step if step < max_steps else None, metrics=metrics,
        best={monitor: best} if best is not None else {},
        tokens_per_s=metrics.get("train/tokens_per_s"), wall_time_s=None, started_at=None,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        rebuilt_from=[name for name, used in (("metrics.csv", bool(rows)), ("checkpoints/last.ckpt", ckpt_done)) if used],
    ))
