"""The local executor: wandb sweep files without a wandb account.

It reads the same sweep files as ``wandb sweep``, asks wandb's open-source search engine
(``sweeps.next_run``/``next_runs``: grid, random, bayes) for the runs, turns each suggestion into
the command line ``wandb agent`` would run (``--key=value`` flags after the ``--config`` of the
sweep's ``command``) and runs ``train(cfg)`` in a child process.

Claims. Before a run starts, the executor takes an exclusive non-blocking ``filelock`` (flock) on
``<run dir>.lock`` (next to the run directory, whose name carries the config hash, so two grid
points that normalise to the same config are one run). The OS releases the lock when the
process holding it dies, so:

* a finished / diverged / failed record is never run again (``--retry-failed`` re-runs failed
  records written before this session);
* a record that says ``running`` while its lock is free was interrupted: it is run again and
  ``train`` resumes it from ``checkpoints/last.ckpt``;
* a record whose lock is held runs in another worker or executor (any number of executor
  processes may share one grid): this executor waits for it, and takes it over if its owner dies.

Children. ``fork`` (so torch/lightning are imported once, by the executor), each child pinned to
``CUDA_VISIBLE_DEVICES`` of its worker's GPUs or to ``cores // workers`` CPU threads, its output
in ``<run dir>/stdout.log``, killed with the executor (``PR_SET_PDEATHSIG``). A child that dies
without a final summary (crash, OOM kill) is recorded as ``failed`` with its exit code or signal,
and the sweep goes on.

Order. Several sweep files run in dependency order (a sweep that reads another's runs after it). While
one sweep's last runs are in flight, the next one starts in the workers they leave free, unless it reads
them: no worker idles at the end of each sweep.

Index. ``runs/<suite>/<sweep>/sweep.json``: the sweep file's hash, method, metric and every point
with its run id and status, written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as mp_wait
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..runs import records
from ..runs.lock import HELD_LOCK_ENV, RunLock, lock_path
from ..runs.summary import TERMINAL, RunSummary, Status
from ..training.interrupts import RunInterrupted
from ..training.wandb_run import RUN_NAME_ENV
from .child import (
    LOG_NAME,
    child_main,
    cpu_cores,
    describe_exit,
    install_sigterm,
    mark_failed,
    restore_sigterm,
    start_context,
    was_interrupted,
)
from .index import metric_of, records_in, sweep_run, sweep_run_from_params, write_index
from .progress import SweepProgress
from .state import ActiveRun, ExecutorOptions, RunOutcome, SweepPlan, SweepResult, SweepRun
from .validate import (
    Point,
    SweepSpec,
    _check_extra,
    dependency_order,
    engine_runs,
    grid_points,
    load_sweep,
    parse_point,
    point_argv,
    to_python,
)

RunFn = Callable[[RunConfig], dict]


# --- helpers --------------------------------------------------------------------------------
def resolve_run_fn(run_fn: RunFn | str | None) -> RunFn:
    if callable(run_fn):
        return run_fn
    if isinstance(run_fn, str):
        module, _, attr = run_fn.partition(":")
        try:
            return getattr(importlib.import_module(module), attr or "train")
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"--runner {run_fn}: cannot import ({type(err).__name__}: {err})") from err
    try:
        from ..training.run import train  # imported once here; forked children share it
    except ImportError as err:
        raise ConfigError(f"training is not available: {type(err).__name__}: {err}") from err
    # likewise what every run imports lazily: wandb (Lightning imports it late), the wandb.sdk.launch
    # modules that wandb.init imports (~1 s), and `datasets` (~0.4 s): ~2 s less per run
    for name in ("wandb", "wandb.sdk.launch.inputs.internal", "datasets"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    return train


# --- the executor --------------------------------------------------------------------------
class Executor:
    def __init__(self, options: ExecutorOptions | None = None, run_fn: RunFn | str | None = None):
        self.options = options or ExecutorOptions()
        self._run_fn_spec = run_fn
        self._run_fn: RunFn | None = None
        self._session_start = time.time()
        o = self.options
        if o.gpus_per_run < 1:
            raise ConfigError(f"--gpus-per-run={o.gpus_per_run} must be >= 1")
        gpus = [str(g) for g in o.gpus]
        if gpus and len(gpus) % o.gpus_per_run:
            raise ConfigError(f"{len(gpus)} GPU(s) do not split into groups of --gpus-per-run={o.gpus_per_run}")
        self.gpu_groups = [gpus[i : i + o.gpus_per_run] for i in range(0, len(gpus), o.gpus_per_run)]
        self.workers = o.workers if o.workers is not None else max(1, len(self.gpu_groups))
        if self.workers < 1:
            raise ConfigError(f"--workers={self.workers} must be >= 1")
        if o.max_runs is not None and o.max_runs < 1:
            raise ConfigError(f"--max-runs={o.max_runs} must be >= 1")
        _check_extra(Path("--set"), o.extra)

    # --- planning (no file is written) ---------------------------------------------------------
    def plan(self, path: str | Path) -> SweepPlan:
        spec = load_sweep(path)
        o = self.options
        scale = spec.scale(o.scale)
        out_dir = Path(o.runs_dir) / (o.suite or scale)
        if spec.method != "grid":
            probe = [{k: to_python(v["value"]) for k, v in s.config.items()}
                     for s in engine_runs(spec, spec.engine_config(scale, o.extra), [], 2) if s is not None]
            for params in probe:
                parse_point(spec, params, str(out_dir))
            return SweepPlan(spec, scale, out_dir, [], [], needs=self._needs_of_params(spec, probe, out_dir))
        points: list[Point] = []
        by_run: dict[str, Point] = {}
        runs: list[Point] = []
        for i, params in enumerate(grid_points(spec, scale, o.extra, o.max_runs)):
            point = self._make_point(spec, i, params, out_dir)
            points.append(point)
            if point.run_id in by_run:
                by_run[point.run_id].aliases.append(i)
            else:
                by_run[point.run_id] = point
                runs.append(point)
        # sweeps whose runs this one reads: checkpoints, the shared tokenizer, the lr chosen on their runs
        needs = {spec[5:] for p in runs for spec in (p.cfg.finetune.pretrained, p.cfg.data.tokenizer, p.cfg.train.lr_from)
                 if spec and spec.startswith("auto:")}
        return SweepPlan(spec, scale, out_dir, points, runs, needs)

    def _needs_of_params(self, spec, params_list, out_dir) -> set:
        out = set()
        for params in params_list:
            cfg = parse_point(spec, params, str(out_dir))
            if cfg.finetune.pretrained and cfg.finetune.pretrained.startswith("auto:"):
                out.add(cfg.finetune.pretrained[5:])
            if cfg.train.lr_from:
                out.add(cfg.train.lr_from[5:])
        return out

    @staticmethod
    def _make_point(spec: SweepSpec, index: int, params: dict, out_dir: Path) -> Point:
        cfg = parse_point(spec, params, str(out_dir))
        return Point(index, params, point_argv(spec, params, str(out_dir)), cfg,
                     records.run_id_for(cfg), records.run_dir_for(cfg))

    def plan_all(self, paths: Sequence[str | Path]) -> list[SweepPlan]:
        plans = [self.plan(p) for p in paths]
        names = [p.spec.name for p in plans]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"sweep(s) {', '.join(sorted(dup))} given twice")
        plans = dependency_order(plans, lambda p: p.spec.name, lambda p: sorted(p.needs))
        given = set(names)
        for plan in plans:
            for need in sorted(plan.needs - given):
                if not self._has_finished_runs(plan.out_dir / need):
                    raise ConfigError(
                        f"{plan.spec.name} reads the runs of sweep {need} (a checkpoint, the lr it chose or its tokenizer), but {plan.out_dir / need} has no "
                        f"finished run; run both in order: ablate sweep {need} {plan.spec.name} --scale {plan.scale}"
                    )
        return plans

    @staticmethod
    def _has_finished_runs(sweep_dir: Path) -> bool:
        for path in sweep_dir.glob("*/summary.json"):
            summary = records.read_summary(path.parent)
            if summary and summary.status == Status.FINISHED:
                return True
        return False

    # --- running --------------------------------------------------------------------------------
    def run(self, paths: Sequence[str | Path]) -> list[SweepResult]:
        """Validate every file (nothing is written if one is refused), then run them in order."""
        plans = self.plan_all(paths)
        self.check_runnable(plans)
        return self.execute_all(plans)

    def check_runnable(self, plans: Sequence[SweepPlan]) -> None:
        """Refuse what the local executor cannot run, and import the run function (once)."""
        for plan in plans:
            if plan.spec.method != "grid" and self.options.max_runs is None:
                raise ConfigError(f"{plan.spec.path}: method {plan.spec.method} has no end; pass --max-runs K")
        if self._run_fn is None:
            self._run_fn = resolve_run_fn(self._run_fn_spec)

    def _is_done(self, summary: RunSummary | None, run_dir: Path) -> bool:
        if not summary or summary.status not in TERMINAL:
            return False
        if summary.status == Status.FAILED and self.options.retry_failed:
            try:  # a failure recorded in this session is final; older ones are retried
                return (run_dir / "summary.json").stat().st_mtime >= self._session_start
            except OSError:
                return False
        return True

    def _claim(self, point: Point):
        """('done', summary) | ('busy', None) | ('claimed', lock)."""
        summary = records.read_summary(point.run_dir)
        if self._is_done(summary, point.run_dir):
            return "done", summary
        lock = RunLock(lock_path(point.run_dir))
        if not lock.try_acquire():
            return "busy", None
        summary = records.read_summary(point.run_dir)
        if self._is_done(summary, point.run_dir):
            lock.release()
            return "done", summary
        return "claimed", lock

    def _child_env(self, slot: int) -> dict:
        env = {}
        if self.gpu_groups:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_groups[slot % len(self.gpu_groups)])
        threads = max(1, cpu_cores() // self.workers)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        offline = self.options.wandb_offline
        if offline is None:
            from ..runs.wandb_login import has_wandb_login

            offline = not has_wandb_login() and "WANDB_MODE" not in os.environ
        if offline:
            env["WANDB_MODE"] = "offline"
        return env

    def _start(self, ctx, subcommand: str, point: Point, lock: RunLock, slot: int, held_fds: list[int],
               sweep: SweepRun) -> ActiveRun:
        point.run_dir.mkdir(parents=True, exist_ok=True)
        summary = records.read_summary(point.run_dir)
        if summary and summary.status == Status.FAILED:  # --retry-failed: train() resumes a `running` record
            retried = dataclasses.replace(summary, status=Status.RUNNING, previous_error=summary.error, error=None,
                                          finished_at=None)
            records.write_summary(point.run_dir, retried)
        env = self._child_env(slot)
        env[HELD_LOCK_ENV] = str(lock.path.resolve())
        env[RUN_NAME_ENV] = point.label  # the wandb run name
        threads = int(env["OMP_NUM_THREADS"])
        argv = [sys.argv[0] if sys.argv and sys.argv[0] else "ablate", subcommand, *point.argv]
        proc = ctx.Process(
            target=child_main,
            args=(self._run_fn, point.cfg, str(point.run_dir), env, threads, list(held_fds), argv, os.getpid()),
            name=f"ablate-run-{point.run_id}",
        )
        proc.daemon = False  # a run may start its own workers (DataLoader, DDP)
        proc.start()
        return ActiveRun(point, lock, proc, time.monotonic(), slot, sweep)

    def _finish(self, active: ActiveRun, progress: SweepProgress, metric_name: str | None) -> RunOutcome:
        proc, point = active.proc, active.point
        proc.join(timeout=5)
        wall = time.monotonic() - active.started
        summary = records.read_summary(point.run_dir)
        if was_interrupted(summary, proc.exitcode):  # resumable: not failed, not done
            summary = dataclasses.replace(  # not written: the record stays resumable
                summary or records.new_summary(point.cfg), status=Status.INTERRUPTED,
                error=f"interrupted ({describe_exit(proc.exitcode)}); the same `ablate sweep` resumes it")
        elif summary is None or summary.status not in TERMINAL:
            summary = mark_failed(
                point.cfg, point.run_dir,
                f"run process {describe_exit(proc.exitcode)} without writing a final summary", proc.exitcode,
            )
        active.lock.release()
        status = summary.status
        metric = metric_of(summary, metric_name)
        error = summary.error if status != Status.FINISHED else None
        progress.run_finished(point.run_id, point.label, status, metric, wall,
                              error=error, log=str(point.run_dir / LOG_NAME))
        return RunOutcome(point.run_id, point.label, status, metric, wall, error, ran_here=True)

    def _stop_all(self, actives: dict) -> None:
        for a in actives.values():
            if a.proc.is_alive():
                with contextlib.suppress(Exception):
                    a.proc.terminate()
        deadline = time.monotonic() + 15
        for a in actives.values():
            a.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if a.proc.is_alive():
                with contextlib.suppress(Exception):
                    a.proc.kill()
                a.proc.join(timeout=5)
            a.lock.release()  # the record stays `running`: the next executor resumes it
        actives.clear()

    def _progress(self, plan: SweepPlan, total: int) -> SweepProgress:
        o, spec = self.options, plan.spec
        where = f"GPUs {','.join('+'.join(g) for g in self.gpu_groups)}" if self.gpu_groups else "CPU"
        header = (f"{spec.name}: {total} runs ({len(plan.points)} grid points)" if spec.method == "grid"
                  else f"{spec.name}: {total} runs ({spec.method} search)")
        header += f" on the local executor, {self.workers} worker(s) on {where}, scale {plan.scale} -> {plan.sweep_dir}"
        return SweepProgress(spec.name, total, spec.metric_name or (plan.runs[0].cfg.train.monitor if plan.runs else None),
                             spec.metric_goal, self.workers, o.quiet, o.stream, header)

    def _fill_slots(self, ctx, sweep: SweepRun, actives: dict) -> None:
        """Start runs of ``sweep`` in the free worker slots: its next grid points (or search suggestions);
        a run already done is counted, one held by another executor waits in ``sweep.busy``."""
        plan, progress, result = sweep.plan, sweep.progress, sweep.result
        free = [s for s in range(self.workers) if s not in {a.slot for a in actives.values()}]
        while free:
            if sweep.pending:
                point = sweep.pending.popleft()
            else:
                point = None if sweep.grid else self._suggest(plan, sweep.suggested, sweep.actives(actives), result)
            if point is None:
                break
            if point.run_id in actives or point.run_id in result.outcomes:
                continue
            state, what = self._claim(point)
            if state == "done":
                metric = metric_of(what, progress.metric_name)
                result.outcomes[point.run_id] = RunOutcome(point.run_id, point.label, what.status, metric,
                                                           error=what.error)
                progress.already_done(point.run_id, point.label, what.status, metric)
                continue
            if state == "busy":
                sweep.busy.append(point)
                continue
            slot = free.pop(0)
            held = [a.lock.fd for a in actives.values() if a.lock.fd is not None]
            held.append(what.fd)
            try:
                actives[point.run_id] = self._start(ctx, plan.spec.subcommand, point, what, slot, held, sweep)
            except BaseException:
                what.release()
                raise
            progress.run_started(point.run_id, point.label)

    def _open(self, plan: SweepPlan) -> SweepRun:
        total = len(plan.runs) if plan.spec.method == "grid" else int(self.options.max_runs or 0)
        plan.sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep = SweepRun(plan, self._progress(plan, total), SweepResult(plan.spec.name, plan.sweep_dir, total),
                          deque(plan.runs), last_busy_retry=time.monotonic())
        write_index(plan, sweep.suggested, self.options)
        return sweep

    def _may_open(self, plan: SweepPlan, open_: list[SweepRun], actives: dict) -> bool:
        """The next sweep starts once the open ones have nothing left to start (only runs in flight), no
        open one is a sweep it reads (``needs``), a worker is free, and both it and they are grids (a
        search has no known end)."""
        if not open_:
            return True
        return (len(actives) < self.workers and plan.spec.method == "grid"
                and all(s.grid and s.exhausted and s.plan.spec.name not in plan.needs for s in open_))

    def execute(self, plan: SweepPlan) -> SweepResult:
        return self.execute_all([plan])[0]

    def execute_all(self, plans: Sequence[SweepPlan]) -> list[SweepResult]:
        """Run the sweeps in order (``plan_all``'s dependency order). While one sweep's last runs are in
        flight, the next one (if it does not read them) starts in the workers they leave free."""
        if self._run_fn is None:
            self._run_fn = resolve_run_fn(self._run_fn_spec)
        o = self.options
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # keep CUDA uninitialised before fork
        ctx = start_context(o.start_method)
        waiting, open_, results = deque(plans), [], {}
        actives: dict[str, ActiveRun] = {}
        old_term = install_sigterm()
        try:
            while waiting or open_:
                while waiting and self._may_open(waiting[0], open_, actives):
                    for earlier in open_:
                        earlier.progress.release_view()  # one live view at a time: the newest sweep's
                    open_.append(self._open(waiting.popleft()))
                for sweep in open_:
                    self._fill_slots(ctx, sweep, actives)
                    sweep.progress.set_waiting(len(sweep.busy))
                for sweep in [s for s in open_ if not s.pending and not s.busy and not s.actives(actives)]:
                    open_.remove(sweep)
                    write_index(sweep.plan, sweep.suggested, o)
                    sweep.progress.close()
                    results[sweep.plan.spec.name] = sweep.result
                self._wait(open_, actives)
        except (KeyboardInterrupt, RunInterrupted):
            self._stop_all(actives)
            raise
        finally:
            restore_sigterm(old_term)
            for sweep in open_:
                with contextlib.suppress(Exception):
                    write_index(sweep.plan, sweep.suggested, o)
                sweep.progress.close()
        return [results[p.spec.name] for p in plans]

    def _wait(self, open_: list[SweepRun], actives: dict) -> None:
        """Until a run ends (or the poll interval passes); runs held by another executor are looked at
        again every ``retry_busy_s``."""
        o = self.options
        for sweep in open_:
            if sweep.busy and not sweep.pending and time.monotonic() - sweep.last_busy_retry >= o.retry_busy_s:
                sweep.pending.extend(sweep.busy)
                sweep.busy.clear()
                sweep.last_busy_retry = time.monotonic()
        if not actives:
            if open_:  # only runs held by another executor are left: look again in a moment
                for sweep in open_:
                    sweep.progress.refresh()
                time.sleep(max(0.0, o.retry_busy_s - min(time.monotonic() - s.last_busy_retry for s in open_)))
            return
        ready = mp_wait([a.proc.sentinel for a in actives.values()], timeout=o.poll_s)
        for rid in [rid for rid, a in actives.items() if a.proc.sentinel in ready]:
            active = actives.pop(rid)
            sweep = active.sweep
            sweep.result.outcomes[rid] = self._finish(active, sweep.progress, sweep.progress.metric_name)
            write_index(sweep.plan, sweep.suggested, o)
        for sweep in open_:
            sweep.progress.refresh()

    # --- random / bayes ---------------------------------------------------------------------------
    def _suggest(self, plan: SweepPlan, suggested: list[Point], actives: dict, result: SweepResult) -> Point | None:
        o, spec = self.options, plan.spec
        known = records_in(plan.sweep_dir)
        n_runs = len({*known, *actives, *(p.run_id for p in suggested)})
        if n_runs >= int(o.max_runs or 0) or len(result.outcomes) + len(actives) >= int(o.max_runs or 0):
            return None
        runs = [sweep_run(spec, s) for s in known.values()]
        runs += [sweep_run_from_params(a.point.params, "running") for a in actives.values()]
        for _ in range(100):  # a small space may only repeat runs that exist: stop then
            suggestion = next(iter(engine_runs(spec, spec.engine_config(plan.scale, o.extra), runs, 1)), None)
            if suggestion is None:
                return None
            params = {k: to_python(v["value"]) for k, v in suggestion.config.items()}
            point = self._make_point(spec, len(suggested), params, plan.out_dir)
            if point.run_id in known or point.run_id in actives or point.run_id in result.outcomes:
                runs.append(sweep_run_from_params(params, "finished"))
                continue
            suggested.append(point)
            return point
        return None


def run_sweeps(paths: Sequence[str | Path], options: ExecutorOptions | None = None,
               run_fn: RunFn | str | None = None) -> list[SweepResult]:
    """Run sweep files on the local executor, in dependency order (q5_pretrain before q5_finetune)."""
    return Executor(options, run_fn).run(paths)


def run_sweep(path: str | Path, options: ExecutorOptions | None = None,
              run_fn: RunFn | str | None = None) -> SweepResult:
    return run_sweeps([path], options, run_fn)[0]
