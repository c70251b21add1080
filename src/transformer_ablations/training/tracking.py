"""wandb, offline by default: online only when the user is logged in (never prompts, never crashes)."""

from __future__ import annotations

import contextlib
import csv
import io
import netrc
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ..atomic import atomic_write_text
from ..config import RunConfig, flatten, to_dict
from .run_names import run_name

PROJECT = "transformer-ablations"
# The wandb exit code of a run by its final status (those of `ablate fit`; anything else: 1).
STATUS_EXIT_CODES = {"finished": 0, "exists": 0, "diverged": 3}


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


class RunWandbLogger(WandbLogger):
    """Lightning's WandbLogger with the run config logged once, flat with dotted keys (given to
    ``wandb.init``): the module's ``save_hyperparameters`` would add the whole config again as
    one nested ``cfg`` blob."""

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None


# Fields of summary.json copied into the wandb run's summary, so that an online report
# (``report.collect_wandb``) tells a diverged run (a result) from a failed one.
RECORD_FIELDS = ("run_id", "status", "diverged_step", "error", "step")


def finish_wandb(exit_code: int, record: Mapping[str, Any] | None = None) -> None:
    """End the active wandb run (if this process started one) with ``exit_code``, after copying
    the run record's :data:`RECORD_FIELDS` into its summary: the offline ``.wandb`` file gets its
    final history, summary and exit record, written out before this returns. Lightning's
    WandbLogger never calls ``finish``, and a sweep child ends with ``os._exit``, which skips
    wandb's own hooks. Never raises: a wandb problem is one line on stderr."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    try:
        if record:
            run.summary.update({k: record[k] for k in RECORD_FIELDS if record.get(k) is not None})
        run.finish(exit_code=exit_code)
        wandb.teardown()  # finish returns before wandb's service has written the file; teardown waits
    except Exception as err:  # noqa: BLE001 - tracking must never turn a result into a crash
        print(f"wandb: could not finish the run ({type(err).__name__}: {err})", file=sys.stderr)


class _Ending:
    record: dict | None = None  # the run's final summary.json, set by the body


@contextlib.contextmanager
def wandb_finished() -> Iterator[_Ending]:
    """``with wandb_finished() as end: ... end.record = summary``: the wandb run started inside
    ends on every path, with the exit code of the record's status (finished 0, diverged 3,
    failed 1), 130 when interrupted (also when Lightning has turned the interruption into
    ``SystemExit(1)``), or the code of another ``SystemExit``."""
    end = _Ending()
    try:
        yield end
    except KeyboardInterrupt:
        finish_wandb(130)
        raise
    except SystemExit as err:
        if isinstance(err.__context__, KeyboardInterrupt):  # Lightning turns Ctrl-C into sys.exit(1)
            finish_wandb(130)
        else:
            finish_wandb(err.code if isinstance(err.code, int) else 0 if err.code is None else 1)
        raise
    except BaseException:
        finish_wandb(1)
        raise
    status = (end.record or {}).get("status", "")
    finish_wandb(STATUS_EXIT_CODES.get(status, 1), end.record)


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
