"""wandb run names that say what the run is: the toggles its sweep varies plus the seed
(``positional=none arch=encoder seed=0``, as the sweep console prints them). Light on purpose
(no torch, no Lightning): the sweep executor imports it."""

from __future__ import annotations

import os
from collections.abc import Mapping
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
