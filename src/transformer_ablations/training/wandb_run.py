"""The wandb run of a training run, without Lightning: its name (the toggles its sweep varies plus
the seed, ``positional=none arch=encoder seed=0``, as the sweep console prints them) and its end
(``wandb.finish`` with the run's exit code, on every path). Light on purpose (no torch, no
Lightning): the sweep executor and its children import it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig

# Set by the sweep executor for each run it starts: the run's label, used as the wandb run name.
RUN_NAME_ENV = "ABLATE_RUN_NAME"
# Sweep parameters that are not toggles: left out of run names.
NOT_TOGGLES = ("scale", "train.out_dir", "train.wandb")


def run_label(params: Mapping[str, Any]) -> str:
    """``positional=none arch=encoder seed=0``: sweep parameters without their key prefixes."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items() if k not in NOT_TOGGLES)


def _agent_params() -> dict:
    """Under ``wandb agent``: this run's sweep parameters (the agent writes them to
    ``WANDB_SWEEP_PARAM_PATH`` as ``{key: {value: v}}``); empty elsewhere."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not os.environ.get("WANDB_SWEEP_ID"):
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: v["value"] for k, v in raw.items() if isinstance(v, dict) and "value" in v}


def run_name(cfg: RunConfig) -> str:
    """The wandb run name: the toggles the sweep varies plus the seed (from the executor, or the
    agent's parameters); for a run outside a sweep, the experiment and the seed."""
    if os.environ.get(RUN_NAME_ENV):
        return os.environ[RUN_NAME_ENV]
    params = _agent_params()
    return run_label(params) if params else f"{cfg.experiment} seed={cfg.seed}"


# The wandb exit code of a run by its final status (those of `ablate fit`; anything else: 1).
STATUS_EXIT_CODES = {"finished": 0, "exists": 0, "diverged": 3}
# Fields of summary.json copied into the wandb run's summary, so that an online report
# (``report.collect_wandb``) tells a diverged run (a result) from a failed one.
RECORD_FIELDS = ("run_id", "status", "diverged_step", "error", "step", "plateau_step")


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
