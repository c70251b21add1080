"""Run directories and run records (``summary.json``), written atomically.

A run lives in ``<train.out_dir>/<experiment>/s<seed>-<config hash>/``. The directory name is a
function of the config, so the same command always finds its own run: a finished run is left
alone, an interrupted one resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_text
from ..config import RunConfig, config_hash, flatten, to_dict

STATUSES = ("running", "finished", "diverged", "failed")


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


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # no record (or a torn one, which atomic writes never leave)
    return summary if isinstance(summary, dict) else None


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(_jsonable(summary), indent=2, sort_keys=True))


def new_summary(cfg: RunConfig) -> dict:
    return {
        "run_id": run_id_for(cfg),
        "experiment": cfg.experiment,
        "status": "running",
        "config": flatten(to_dict(cfg)),
        "config_hash": config_hash(cfg),
        "metrics": {},
        "best": {},
        "diverged_step": None,
        "error": None,
        "wall_time_s": 0.0,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "finished_at": None,
    }


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
