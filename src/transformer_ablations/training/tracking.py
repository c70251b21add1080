"""wandb, offline by default: online only when the user is logged in (never prompts, never crashes)."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ..config import RunConfig, flatten, to_dict

PROJECT = "transformer-ablations"


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc; no network call."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_mode(cfg: RunConfig) -> str:
    """auto -> online with a login and WANDB_MODE not forcing otherwise, else offline."""
    if cfg.train.wandb != "auto":
        return cfg.train.wandb
    env = os.environ.get("WANDB_MODE")
    if env in ("offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if wandb_logged_in() else "offline"


def make_wandb_logger(cfg: RunConfig, run_dir: Path):
    """A WandbLogger for this run, or None when disabled. The wandb run id is derived from the
    run directory, so a resumed run continues the same wandb run. ``log_model``: online runs
    upload the best and last checkpoints once, at the end (``True``), not every save ("all"),
    to keep sweeps cheap; offline runs upload nothing (``make sync`` sends the metrics later)."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(
        project=os.environ.get("WANDB_PROJECT", PROJECT),
        name=f"{cfg.experiment}/{run_dir.name}",
        # under `wandb agent` the sweep owns the run id; elsewhere the run dir names it (resume continues it)
        id=None if os.environ.get("WANDB_SWEEP_ID") else f"{cfg.experiment}-{run_dir.name}".replace("/", "-"),
        group=cfg.experiment,
        save_dir=str(run_dir),
        offline=mode == "offline",
        log_model=mode == "online",
        config=flatten(to_dict(cfg)),
        resume="allow",
        tags=[cfg.scale, cfg.objective],
    )
    logger._wandb_init.pop("anonymous", None)  # deprecated in wandb >= 0.19; passing None still warns
    return logger


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = sorted(next(csv.reader(fh), []))


class ResumableCSVLogger(CSVLogger):
    """``metrics.csv`` in the run directory, kept across resumes (rows of every attempt)."""

    def __init__(self, run_dir: Path):
        super().__init__(save_dir=str(run_dir), name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
