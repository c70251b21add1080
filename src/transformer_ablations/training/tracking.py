"""wandb, offline by default: online only when the user is logged in (never prompts, never crashes)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ..atomic import atomic_write_text
from ..config import ConfigError, RunConfig, flatten, to_dict
from ..runs.wandb_login import has_wandb_login
from .wandb_run import run_name

PROJECT = "transformer-ablations"

def wandb_mode(cfg: RunConfig) -> str:
    """auto -> online with a login and WANDB_MODE not forcing otherwise, else offline."""
    if cfg.train.wandb != "auto":
        return cfg.train.wandb
    env = os.environ.get("WANDB_MODE")
    if env in ("offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if has_wandb_login() else "offline"


class RunWandbLogger(WandbLogger):
    """Lightning's WandbLogger with the run config logged once, flat with dotted keys (given to
    ``wandb.init``): the module's ``save_hyperparameters`` would add the whole config again as
    one nested ``cfg`` blob."""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None


def check_wandb(cfg: RunConfig) -> str:
    """The mode this run will log in, decided before anything is created. Online without a login
    is a usage error (:class:`ConfigError`); online (chosen, or ``auto`` with a login) when the
    server cannot be reached falls back to offline with one warning line, instead of waiting for
    wandb's 90 s init timeout (``ablate sync`` uploads the run later)."""
    mode = wandb_mode(cfg)
    if mode != "online":
        return mode
    if not has_wandb_login():
        raise ConfigError("train.wandb=online needs a wandb login (`wandb login` or WANDB_API_KEY); "
                          "use train.wandb=offline, or auto to log online only when logged in")
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not _reachable(url):
        print(f"wandb: cannot reach {url}; this run logs offline (`ablate sync` uploads it later)", file=sys.stderr)
        return "offline"
    return mode


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """A TCP connection to the server within ``timeout`` s (name lookup included, in a thread,
    since ``getaddrinfo`` has no timeout of its own)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        with contextlib.suppress(OSError, ValueError):
            socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
            ok.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def make_wandb_logger(cfg: RunConfig, run_dir: Path):
    """A WandbLogger for this run, or None when disabled. The wandb run id is derived from the
    run directory, so a resumed run continues the same wandb run. ``log_model``: online runs
    upload the best and last checkpoints once, at the end (``True``), not every save ("all"),
    to keep sweeps cheap; offline runs upload nothing (``make sync`` sends the metrics later)."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = RunWandbLogger(
        project=os.environ.get("WANDB_PROJECT", PROJECT),
        name=run_name(cfg),
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
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it. When new
    keys appear, the file is rewritten with the wider header atomically (Lightning rewrites it in
    place: a kill at that moment would lose the whole history)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = sorted(next(csv.reader(fh), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        _, rows = _read_rows(Path(self.metrics_file_path))
        _write_rows(Path(self.metrics_file_path), fieldnames, rows)


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(header, rows) of a metrics.csv; a torn row (a kill in the middle of an append) is dropped."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = [dict(zip(header, rec)) for rec in reader if len(rec) == len(header)]
    return header, rows


def _write_rows(path: Path, header: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def trim_metrics_csv(path: Path, from_step: int) -> None:
    """Drop the rows logged at ``step >= from_step`` (by an attempt that was killed after its last
    checkpoint, which a resumed run logs again) and torn rows; the header stays."""
    path = Path(path)
    if not path.is_file():
        return
    header, rows = _read_rows(path)
    if "step" not in header:
        return
    kept = [r for r in rows if r["step"].isdigit() and int(r["step"]) < from_step]
    with open(path, "rb") as fh:
        body = fh.read()
    if len(kept) != len(rows) or body.count(b"\n") != len(rows) + 1:
        _write_rows(path, header, kept)


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
