"""The sweep subcommands of ``ablate``: each one's parser and what it does with the parsed arguments
(``cli.py`` puts the parsers under its one jsonargparse parser and dispatches).

    ablate sweep SWEEP... [--scale smoke|quick|real|full] [--workers N] [--gpus 0,1|all] [--gpus-per-run K]
                          [--runs-dir runs] [--suite NAME] [--max-runs K] [--online|--offline]
                          [--set KEY=VALUE]... [--retry-failed] [--check] [--slurm TASKS] [--quiet]
    ablate agents SWEEP_ID [--gpus 0,1] [--count K] [--gpus-per-run K]
    ablate sync   [--runs-dir runs] [--dry-run] [--include-synced] [--project P]
    ablate slurm  SWEEP_ID --tasks N [--count K] [--partition P] [--time 24:00:00] [--out FILE]

SWEEP is a sweep file or a short name: ``q1`` (sweeps/q1_*.yaml), ``q5`` (q5_pretrain then
q5_finetune), ``q5_finetune``, or ``all``. Files run in dependency order: a sweep whose
experiment fine-tunes ``auto:<sweep>`` runs after that sweep.

Errors are one-line :class:`~transformer_ablations.config.ConfigError` s; ``sweep`` returns the
exit code (0: every run finished or diverged; 1: some run failed or was interrupted).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from jsonargparse import ArgumentParser, Namespace

from ..config import ConfigError, Scale, toggle_values

SCALES = toggle_values()["scale"]


def _parser(prog: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=description, exit_on_error=False, default_env=False)


def sweep_parser() -> ArgumentParser:
    p = _parser("ablate sweep", "Run sweep files: wandb sweep + agents when logged in, else the local executor.")
    p.add_argument("sweeps", nargs="+", type=str, help="sweep files or names: q1, q5, q5_finetune, all")
    p.add_argument("--scale", type=str, default=None, help=f"{' | '.join(get_args(Scale))} (default: the file's value)")
    p.add_argument("--workers", type=int, default=None, help="runs in parallel (default: one per GPU, else 1)")
    p.add_argument("--gpus", type=str, default="", help="CUDA devices, e.g. 0,1,2,3 or all")
    p.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run (DDP: add --set train.devices=K)")
    p.add_argument("--runs-dir", type=str, default="runs", help="records go to RUNS_DIR/SUITE/<sweep>/<run_id>/")
    p.add_argument("--suite", type=str, default=None, help="default: the scale")
    p.add_argument("--max-runs", type=int, default=None, help="only the first K grid points of each file")
    p.add_argument("--online", action="store_true", help="wandb sweep server + agents (needs a login)")
    p.add_argument("--offline", action="store_true", help="local executor, runs log to wandb offline")
    p.add_argument("--set", action="append", default=None, help="KEY=VALUE added to every run (repeatable)")
    p.add_argument("--retry-failed", action="store_true", help="run failed records of earlier sessions again")
    p.add_argument("--check", action="store_true", help="validate the sweep files and exit")
    p.add_argument("--slurm", type=int, default=None, help="create the sweep and write a SLURM array of TASKS agents")
    p.add_argument("--quiet", action="store_true", help="plain progress lines even on a terminal")
    p.add_argument("--runner", type=str, default=None, help="MODULE:FUNCTION to run instead of training.run:train")
    p.add_argument("--start-method", type=str, default=None, help="fork (default) or spawn")
    return p


def _check_scale(scale: str | None) -> str | None:
    if scale is not None and scale not in SCALES:
        raise ConfigError(f"--scale={scale} is not valid; valid values: {', '.join(SCALES)}")
    return scale


def run_sweep(args: Namespace, argv: Sequence[str]) -> int:
    """``ablate sweep ...`` (``argv``: its tokens, for the resume line)."""
    from .executor import Executor, ExecutorOptions
    from .launcher import choose_path, parse_gpus
    from .validate import parse_sets, resolve_sweep_files

    if args.online and args.offline:
        raise ConfigError("ablate sweep: --online and --offline exclude each other")
    scale = _check_scale(args.scale)
    files = resolve_sweep_files(args.sweeps)
    extra = parse_sets(args.set)
    gpus = parse_gpus(args.gpus) if args.gpus else []
    options = ExecutorOptions(
        scale=scale, runs_dir=args.runs_dir, suite=args.suite, workers=args.workers, gpus=gpus,
        gpus_per_run=args.gpus_per_run, max_runs=args.max_runs, retry_failed=args.retry_failed, extra=extra,
        quiet=True if args.quiet else None, wandb_offline=True if args.offline else None,
        start_method=args.start_method,
    )
    executor = Executor(options, run_fn=args.runner)
    plans = executor.plan_all(files)  # every file validated (every grid point parsed) before anything runs
    if args.check:
        for plan in plans:
            n = len(plan.runs) if plan.spec.method == "grid" else "?"
            print(f"{plan.spec.path}: ok ({plan.spec.method}, {len(plan.points)} points, {n} runs, "
                  f"metric {plan.spec.metric_name} {plan.spec.metric_goal}, scale {plan.scale})")
        return 0
    if args.slurm is not None:
        from ..runs.wandb_login import LOGIN_HINT, has_wandb_login

        if args.offline or not has_wandb_login():
            raise ConfigError(f"--slurm creates a wandb sweep for the agents and needs a wandb login; {LOGIN_HINT} "
                              "(or render a script for an existing sweep: ablate slurm SWEEP_ID --tasks N)")
    mode = "online" if (args.online or args.slurm is not None) else ("offline" if args.offline else None)
    path = choose_path(mode)
    if path == "online":
        if args.max_runs is not None:
            raise ConfigError("--max-runs (the first K grid points) is for the local executor: add --offline, "
                              "or drop --max-runs to create a wandb sweep")
        return _online(plans, options, args, gpus)
    executor.check_runnable(plans)
    print(f"ablate sweep: no wandb login (or --offline): local executor; {_login_note()}", flush=True) \
        if mode != "offline" else print("ablate sweep: --offline: local executor, runs log to wandb offline", flush=True)
    results = executor.execute_all(plans)
    failed = sum(r.count("failed") for r in results)
    interrupted = sum(r.count("interrupted") for r in results)
    if failed:
        print(f"ablate sweep: {failed} run(s) failed; see their summary.json `error` and stdout.log", file=sys.stderr)
    if interrupted:
        print(f"ablate sweep: {interrupted} run(s) interrupted; resume with: ablate {shlex.join(['sweep', *argv])}",
              file=sys.stderr)
    return 1 if failed or interrupted else 0


def _login_note() -> str:
    return "`ablate sync` uploads the runs after `wandb login`"


def _online(plans, options, args, gpus) -> int:
    from ..atomic import atomic_write_text
    from .launcher import create_sweep, launch_online, plan_online
    from .slurm import render_slurm, runs_per_task

    online = [
        plan_online(p.spec, p.scale, options.runs_dir, options.suite or p.scale, gpus, extra=options.extra,
                    gpus_per_agent=options.gpus_per_run)
        for p in plans
    ]
    if args.slurm is None:
        print(f"ablate sweep: wandb login found: wandb sweep + {max(1, len(gpus) // options.gpus_per_run)} agent(s)"
              " per sweep (use --offline for the local executor)", flush=True)
        return launch_online(online)
    for plan, op in zip(plans, online):
        sweep_id = create_sweep(op)
        n = len(plan.runs) if plan.spec.method == "grid" else (options.max_runs or 1)
        script = render_slurm(sweep_id, args.slurm, runs_per_task(n, args.slurm), job_name=f"ablate-{plan.spec.name}")
        out = plan.sweep_dir / "slurm_agent.sbatch"
        atomic_write_text(out, script)
        after = f" (after the {', '.join(sorted(plan.needs))} job finishes: sbatch --dependency=afterok:<jobid>)" \
            if plan.needs else ""
        print(f"{plan.spec.name}: sbatch {out}{after}")
    return 0


# --- ablate agents -------------------------------------------------------------------------
def agents_parser() -> ArgumentParser:
    p = _parser("ablate agents", "Start one wandb agent per GPU for an existing sweep (from any node).")
    p.add_argument("sweep_id", type=str, help="ID, project/ID or entity/project/ID")
    p.add_argument("--gpus", type=str, default="", help="CUDA devices, e.g. 0,1 or all")
    p.add_argument("--count", type=int, default=None, help="runs per agent (default: until the sweep is done)")
    p.add_argument("--gpus-per-run", type=int, default=1)
    return p


def run_agents(args: Namespace, argv: Sequence[str]) -> int:
    """``ablate agents SWEEP_ID --gpus 0,1``: join an existing wandb sweep from this node."""
    from .launcher import agents, parse_gpus

    gpus = parse_gpus(args.gpus) if args.gpus else []
    return agents(args.sweep_id, gpus, count=args.count, gpus_per_agent=args.gpus_per_run)


# --- ablate sync ---------------------------------------------------------------------------
def sync_parser() -> ArgumentParser:
    p = _parser("ablate sync", "Upload runs that logged offline (runs/**/wandb/offline-run-*).")
    p.add_argument("--runs-dir", type=str, default="runs")
    p.add_argument("--reports-dir", type=str, default="reports", help="also upload report runs from here")
    p.add_argument("--dry-run", action="store_true",
                   help="list the offline runs (complete or cut short) and the wandb sync command; no login needed")
    p.add_argument("--include-synced", action="store_true")
    p.add_argument("--project", type=str, default=None)
    return p


def run_sync(args: Namespace, argv: Sequence[str]) -> int:
    """``ablate sync``: upload offline runs (``wandb sync``)."""
    from .sync import sync

    return sync(args.runs_dir, dry_run=args.dry_run, include_synced=args.include_synced, project=args.project,
                reports_dir=args.reports_dir)


# --- ablate slurm --------------------------------------------------------------------------
def slurm_parser() -> ArgumentParser:
    p = _parser("ablate slurm", "Render sweeps/slurm_agent.sbatch: a SLURM array of wandb agents, one GPU each.")
    p.add_argument("sweep_id", type=str, help="ID, project/ID or entity/project/ID (from `wandb sweep`)")
    p.add_argument("--tasks", type=int, default=1, help="array tasks = agents")
    p.add_argument("--count", type=int, default=None, help="runs per agent (default: until the sweep is done)")
    p.add_argument("--partition", type=str, default=None)
    p.add_argument("--account", type=str, default=None)
    p.add_argument("--time", type=str, default="24:00:00")
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--gpus-per-task", type=int, default=1)
    p.add_argument("--max-parallel", type=int, default=None, help="at most this many tasks at once (%%M)")
    p.add_argument("--job-name", type=str, default="ablate-sweep")
    p.add_argument("--template", type=str, default=None)
    p.add_argument("--out", type=str, default=None, help="write the script here instead of printing it")
    return p


def run_slurm(args: Namespace, argv: Sequence[str]) -> int:
    """``ablate slurm SWEEP_ID --tasks N``: print (or write) a SLURM array of wandb agents."""
    from ..atomic import atomic_write_text
    from .slurm import render_slurm

    script = render_slurm(
        args.sweep_id, args.tasks, args.count, job_name=args.job_name, time=args.time, partition=args.partition,
        account=args.account, cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
        max_parallel=args.max_parallel, template=args.template,
    )
    if args.out:
        atomic_write_text(Path(args.out), script)
        print(f"wrote {args.out}; submit with: sbatch {args.out}")
    else:
        print(script, end="")
    return 0


# subcommand -> (its parser, what it does); ``cli.py`` adds them to the one ``ablate`` parser
SUBCOMMANDS = {"sweep": (sweep_parser, run_sweep), "agents": (agents_parser, run_agents),
               "sync": (sync_parser, run_sync), "slurm": (slurm_parser, run_slurm)}
