"""wandb, offline by default: online only when the user is logged in (never prompts, never crashes)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

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

    return WandbLogger(
        project=os.environ.get("WANDB_PROJECT", PROJECT),
        name=f"{cfg.experiment}/{run_dir.name}",
        id=f"{cfg.experiment}-{run_dir.name}".replace("/", "-"),
        group=cfg.experiment,
        save_dir=str(run_dir),
        offline=mode == "offline",
        log_model=mode == "online",
        config=flatten(to_dict(cfg)),
        resume="allow",
        tags=[cfg.scale, cfg.objective],
    )
