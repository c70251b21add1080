"""A SLURM array of wandb agents: ``sweeps/slurm_agent.sbatch`` rendered for one sweep.

    ablate slurm ENTITY/PROJECT/SWEEP_ID --tasks 8 --count 3 [--partition gpu] [--out job.sbatch]
    ablate sweep sweeps/q1_scaling.yaml --scale full --slurm 8      # creates the sweep, writes the script

Each array task gets one GPU (``--gres=gpu:1``) and runs ``wandb agent --count K SWEEP_ID``;
the sweep server coordinates the tasks, so any number of nodes can share one sweep.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from .. import resources
from ..config import ConfigError

TEMPLATE_NAME = "slurm_agent.sbatch"
_SAFE = re.compile(r"[\w.:/%@+,=\-]+")
_SWEEP_ID = re.compile(r"[\w.\-]+(/[\w.\-]+){0,2}")


def template_path(explicit: str | Path | None = None) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"--template {path}: file not found")
        return path
    for path in (Path.cwd() / "sweeps" / TEMPLATE_NAME, resources.sweeps_dir() / TEMPLATE_NAME):
        if path.is_file():
            return path
    raise ConfigError(f"sweeps/{TEMPLATE_NAME} not found here nor in the installed package; pass --template")


def _safe(name: str, value) -> str:
    text = str(value)
    if not _SAFE.fullmatch(text):
        raise ConfigError(f"slurm {name}={text!r}: use letters, digits and . : / % @ + , = - only")
    return text


def runs_per_task(n_runs: int, tasks: int) -> int:
    return max(1, math.ceil(n_runs / max(1, tasks)))


def render_slurm(
    sweep_id: str,
    tasks: int,
    count: int | None = None,
    *,
    job_name: str = "ablate-sweep",
    time: str = "24:00:00",
    partition: str | None = None,
    account: str | None = None,
    cpus_per_task: int = 8,
    gpus_per_task: int = 1,
    max_parallel: int | None = None,
    workdir: str | Path | None = None,
    venv: str = ".venv",
    log_dir: str = "runs/slurm",
    project: str = "transformer-ablations",
    sbatch: Sequence[str] = (),
    template: str | Path | None = None,
) -> str:
    """The sbatch script as text. ``count``: runs per agent (None: until the sweep is done)."""
    if not _SWEEP_ID.fullmatch(sweep_id or ""):
        raise ConfigError(f"sweep id {sweep_id!r} is not valid; expected ID, project/ID or entity/project/ID")
    if tasks < 1:
        raise ConfigError(f"--tasks={tasks} must be >= 1 (one array task per agent)")
    if count is not None and count < 1:
        raise ConfigError(f"--count={count} must be >= 1")
    if cpus_per_task < 1 or gpus_per_task < 1:
        raise ConfigError("--cpus-per-task and --gpus-per-task must be >= 1")
    extra = []
    if partition:
        extra.append(f"#SBATCH --partition={_safe('partition', partition)}")
    if account:
        extra.append(f"#SBATCH --account={_safe('account', account)}")
    for line in sbatch:
        extra.append(f"#SBATCH {_safe('sbatch', line)}")
    values = {
        "job_name": _safe("job_name", job_name),
        "last_task": str(tasks - 1),
        "array_limit": f"%{int(max_parallel)}" if max_parallel else "",
        "gpus_per_task": str(int(gpus_per_task)),
        "cpus_per_task": str(int(cpus_per_task)),
        "time": _safe("time", time),
        "log_dir": _safe("log_dir", log_dir),
        "sbatch_extra": "\n".join(extra),
        "sweep_id": shlex.quote(sweep_id),
        "workdir": shlex.quote(str(Path(workdir or Path.cwd()).resolve())),
        "venv": shlex.quote(venv),
        "project": _safe("project", project),
        "count_flag": f"--count {int(count)} " if count else "",
    }
    text = template_path(template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{(\w+)\}\}", text)
    if left:
        raise ConfigError(f"slurm template has unknown placeholder(s): {', '.join(sorted(set(left)))}")
    return text
