"""The online path: ``wandb sweep`` + one ``wandb agent`` per GPU, or the local executor.

``ablate sweep sweeps/q1_scaling.yaml --gpus 0,1,2,3`` with a wandb login (an API key in
``WANDB_API_KEY`` or in ``~/.netrc``; nothing here ever prompts) renders the sweep file with the
scale and the records directory set, runs ``wandb sweep`` on it, reads the sweep id from its
output and starts one ``wandb agent <entity/project/id>`` per GPU with
``CUDA_VISIBLE_DEVICES=<gpu>``. Without a login (or with ``--offline``) the same files run on
the local executor, one worker per GPU. :func:`agent_commands` joins an existing sweep from
another node (``ablate agents SWEEP_ID --gpus 0,1``); ``ablate slurm`` renders a SLURM array
that does the same on a cluster.

Runs bigger than one GPU: give the run ``--train.devices=N`` (Lightning DDP), e.g.
``--set train.devices=4 --gpus 0,1,2,3 --gpus-per-run 4`` (local executor) or a
``train.devices: {value: 4}`` parameter plus ``CUDA_VISIBLE_DEVICES`` with four devices per agent.

Every command is built by a pure function (:func:`sweep_command`, :func:`agent_commands`,
:func:`plan_online`), so tests assert them without starting anything.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError
from ..runs.wandb_login import DEFAULT_PROJECT, LOGIN_HINT, has_wandb_login
from .validate import SweepSpec


# --- login --------------------------------------------------------------------------------
def choose_path(mode: str | None, env: Mapping[str, str] = os.environ, home=None) -> str:
    """``online`` (wandb sweep server) or ``local`` (the local executor).

    mode: ``online`` (needs a login), ``offline`` (local executor, runs log offline), or None
    (online when logged in and WANDB_MODE is not offline/disabled)."""
    logged_in = has_wandb_login(env, home)
    if mode == "online":
        if not logged_in:
            raise ConfigError(f"--online needs a wandb login; {LOGIN_HINT} (or drop --online to run locally)")
        if env.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
            raise ConfigError(f"--online conflicts with WANDB_MODE={env['WANDB_MODE']}; unset WANDB_MODE")
        return "online"
    if mode == "offline":
        return "local"
    if logged_in and env.get("WANDB_MODE", "").lower() not in ("offline", "disabled", "dryrun"):
        return "online"
    return "local"


# --- GPUs ------------------------------------------------------------------------------------
def cuda_device_count() -> int:
    """``torch.cuda.device_count()`` (NVML-based: it does not initialise CUDA, so forking stays
    safe); 0 when torch is missing."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU
        return 0


def parse_gpus(spec, device_count: int | None = None) -> list[str]:
    """``"0,1,3"`` / ``[0, 1]`` / ``"all"`` -> ``["0", "1", "3"]``, checked against the devices
    that exist. Empty -> []. Raises a one-line :class:`ConfigError`."""
    if spec is None or spec == "" or spec == []:
        return []
    count = cuda_device_count() if device_count is None else device_count
    if isinstance(spec, str) and spec.strip().lower() == "all":
        if count == 0:
            raise ConfigError("GPUS=all but this machine has no CUDA device; leave GPUS empty to run on CPU")
        return [str(i) for i in range(count)]
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not text.isdigit():
            raise ConfigError(f"GPUS={spec}: {text!r} is not a device index; use e.g. GPUS=0,1")
        if text in out:
            raise ConfigError(f"GPUS={spec}: device {text} is listed twice")
        out.append(str(int(text)))
    missing = [g for g in out if int(g) >= count]
    if missing:
        valid = f"valid: {', '.join(str(i) for i in range(count))}" if count else "leave GPUS empty to run on CPU"
        raise ConfigError(
            f"GPUS={spec if isinstance(spec, str) else ','.join(map(str, spec))} names CUDA device(s) "
            f"{','.join(missing)} that do not exist: this machine has {count} CUDA device(s) ({valid})"
        )
    return out


# --- commands (pure) ---------------------------------------------------------------------------
def wandb_cli(python: str | None = None) -> list[str]:
    """``wandb`` as ``python -m wandb`` of this interpreter (no PATH lookup)."""
    return [python or sys.executable, "-m", "wandb"]


@dataclass
class Command:
    argv: list[str]
    env: dict = field(default_factory=dict)  # overrides on top of the current environment

    def shell(self) -> str:
        import shlex

        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items() if k != "PATH")
        return (prefix + " " if prefix else "") + " ".join(shlex.quote(a) for a in self.argv)


def sweep_command(rendered_path: str | Path, project: str | None = None, entity: str | None = None,
                  python: str | None = None) -> list[str]:
    argv = [*wandb_cli(python), "sweep"]
    if project:
        argv += ["--project", project]
    if entity:
        argv += ["--entity", entity]
    return argv + [str(rendered_path)]


def _agent_env(python: str | None = None, base_path: str | None = None) -> dict:
    """The agent runs ``/usr/bin/env ablate fit ...``: put this interpreter's bin dir first on PATH."""
    bin_dir = str(Path(python or sys.executable).parent)
    path = base_path if base_path is not None else os.environ.get("PATH", "")
    return {"PATH": bin_dir + (os.pathsep + path if path else "")}


def agent_commands(sweep_id: str, gpus: Sequence[str], count: int | None = None,
                   gpus_per_agent: int = 1, python: str | None = None,
                   base_path: str | None = None) -> list[Command]:
    """One ``wandb agent`` per GPU (or per group of ``gpus_per_agent`` GPUs); one agent on the
    default device when no GPU is given."""
    if not sweep_id or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+){0,2}", sweep_id):
        raise ConfigError(f"sweep id {sweep_id!r} is not valid; expected ID, project/ID or entity/project/ID")
    argv = [*wandb_cli(python), "agent"]
    if count:
        argv += ["--count", str(int(count))]
    argv.append(sweep_id)
    env = _agent_env(python, base_path)
    if not gpus:
        return [Command(list(argv), dict(env))]
    k = max(1, gpus_per_agent)
    if len(gpus) % k:
        raise ConfigError(f"{len(gpus)} GPU(s) do not split into groups of {k} (--gpus-per-run)")
    groups = [list(gpus[i : i + k]) for i in range(0, len(gpus), k)]
    return [Command(list(argv), {**env, "CUDA_VISIBLE_DEVICES": ",".join(g)}) for g in groups]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_sweep_id(output: str) -> str:
    """The sweep path from ``wandb sweep`` output (``Run sweep agent with: wandb agent E/P/ID``),
    else the bare id (``Created sweep with ID: ID``)."""
    text = _ANSI.sub("", output)
    m = re.search(r"wandb agent\s+'?([\w.\-]+(?:/[\w.\-]+){0,2})'?", text)
    if m:
        return m.group(1)
    m = re.search(r"(?:Created|Updated) sweep with ID:\s*([\w\-]+)", text)
    if m:
        return m.group(1)
    raise ConfigError(f"could not read a sweep id from `wandb sweep` output: {' '.join(text.split())[-200:]}")


def render_sweep(spec: SweepSpec, scale: str, out_dir: str, extra: dict | None = None) -> dict:
    """The sweep file as uploaded: scale set, records under ``out_dir`` (``runs/<suite>``)."""
    cfg = spec.engine_config(scale, {**(extra or {}), "train.out_dir": str(out_dir)})
    cfg.setdefault("name", spec.name)
    # the agent runs from the current directory: point --config at the resolved experiment file
    tokens = [str(t) for t in cfg.get("command", [])]
    if tokens and "ablate" in tokens:
        i = tokens.index("ablate") + 2
        cfg["command"] = tokens[:i] + spec.base_args + ["${args}"]
    return cfg


@dataclass
class OnlinePlan:
    spec: SweepSpec
    rendered_path: Path
    rendered: dict
    sweep: list[str]
    gpus: list[str]
    gpus_per_agent: int = 1

    def agents(self, sweep_id: str, count: int | None = None) -> list[Command]:
        return agent_commands(sweep_id, self.gpus, count=count, gpus_per_agent=self.gpus_per_agent)


def plan_online(spec: SweepSpec, scale: str, runs_dir: str | Path, suite: str, gpus: Sequence[str],
                extra: dict | None = None, project: str | None = None, entity: str | None = None,
                gpus_per_agent: int = 1, env: Mapping[str, str] = os.environ) -> OnlinePlan:
    out_dir = Path(runs_dir) / suite
    rendered = render_sweep(spec, scale, str(out_dir), extra)
    path = out_dir / spec.name / f"sweep.{scale}.yaml"
    project = project or env.get("WANDB_PROJECT") or DEFAULT_PROJECT
    entity = entity or env.get("WANDB_ENTITY") or None
    return OnlinePlan(spec, path, rendered, sweep_command(path, project, entity), list(gpus), gpus_per_agent)


# --- running (not used by tests) ----------------------------------------------------------------
def _run_agents(commands: Sequence[Command]) -> int:
    procs = []
    try:
        for cmd in commands:
            print(f"agent: {cmd.shell()}", flush=True)
            procs.append(subprocess.Popen(cmd.argv, env={**os.environ, **cmd.env}))
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    return max(codes, default=0)


def create_sweep(plan: OnlinePlan) -> str:
    from ..atomic import atomic_write_text

    atomic_write_text(plan.rendered_path, yaml.safe_dump(plan.rendered, sort_keys=False))
    print(f"sweep: {Command(plan.sweep).shell()}", flush=True)
    proc = subprocess.run(plan.sweep, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        tail = " ".join(_ANSI.sub("", output).split())[-300:]
        raise ConfigError(f"`wandb sweep {plan.rendered_path}` failed (exit {proc.returncode}): {tail}")
    sweep_id = parse_sweep_id(output)
    print(f"sweep {plan.spec.name}: {sweep_id}", flush=True)
    return sweep_id


def launch_online(plans: Sequence[OnlinePlan]) -> int:
    """Create each sweep and run its agents to completion, one sweep after the other (a grid
    sweep's agents exit when the grid is done, so q5_pretrain finishes before q5_finetune)."""
    code = 0
    for plan in plans:
        sweep_id = create_sweep(plan)
        code = max(code, _run_agents(plan.agents(sweep_id)))
    return code


def agents(sweep_id: str, gpus: Sequence[str], count: int | None = None, gpus_per_agent: int = 1,
           env: Mapping[str, str] = os.environ) -> int:
    """``ablate agents SWEEP_ID --gpus 0,1``: join an existing sweep from this node (one agent per
    GPU); blocks until the agents exit."""
    if not has_wandb_login(env):
        raise ConfigError(f"joining sweep {sweep_id} needs a wandb login; {LOGIN_HINT}")
    return _run_agents(agent_commands(sweep_id, gpus, count=count, gpus_per_agent=gpus_per_agent))


run_agents = agents
