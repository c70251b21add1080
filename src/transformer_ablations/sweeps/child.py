"""The child process of a local-executor run: pinned, its output in ``<run dir>/stdout.log``,
killed with the executor, and a crash recorded as ``failed`` (the sweep goes on); plus the
executor's own SIGTERM handling."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..runs import records
from ..runs.summary import TERMINAL, RunSummary, Status
from ..training.interrupts import RunInterrupted, exit_code_of
from ..training.wandb_run import finish_wandb

LOG_NAME = "stdout.log"


def _die_with_parent(parent_pid: int) -> None:
    """Make the kernel SIGKILL this process when the executor dies (Linux), else poll."""
    done = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            done = libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            done = False
    if not done:
        import threading

        def watch():
            while True:
                time.sleep(1.0)
                if os.getppid() != parent_pid:
                    os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _redirect_output(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def mark_failed(cfg: RunConfig, run_dir: Path, error: str, exit_code: int | None = None) -> RunSummary:
    """Write ``status: failed`` unless the run already wrote a final summary."""
    summary = records.read_summary(run_dir)
    if summary is not None and summary.status in TERMINAL:
        return summary
    summary = summary or records.new_summary(cfg)
    summary.status, summary.error = Status.FAILED, error
    summary.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    if exit_code is not None:
        summary.exit_code = exit_code
    records.write_summary(run_dir, summary)
    return summary


_INTERRUPTED = False


def _interrupt(signum, frame):  # pragma: no cover - child
    """SIGINT / SIGTERM in a child outside ``train`` (which handles them itself): stop with
    :class:`RunInterrupted`, once; the record stays resumable."""
    global _INTERRUPTED
    if _INTERRUPTED:
        return
    _INTERRUPTED = True
    raise RunInterrupted(signum)


def child_main(run_fn, cfg, run_dir, env, threads, close_fds, argv, parent_pid):  # pragma: no cover - child
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    for fd in close_fds:  # other runs' lock fds inherited through fork: the executor keeps them
        with contextlib.suppress(OSError):
            os.close(fd)
    os.environ.update(env)
    run_dir = Path(run_dir)
    _redirect_output(run_dir / LOG_NAME)
    print(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: ablate {' '.join(argv[1:])}", flush=True)
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["torch"].set_num_threads(threads)
    sys.argv = list(argv)  # what Lightning's DDP launcher re-executes for the other ranks
    code = 0
    try:
        result = run_fn(cfg)
        if isinstance(result, dict) and result.get("status") == "interrupted":  # train() recorded it
            code = exit_code_of(result.get("signal"))
            print(f"interrupted by {result.get('signal')}; the same `ablate sweep` resumes it", flush=True)
    except RunInterrupted as err:
        code = err.exit_code
    except KeyboardInterrupt:
        code = 130  # interrupted: the record stays `running` and resumes next time
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        if _INTERRUPTED:
            code = 130
        elif code:
            mark_failed(cfg, run_dir, f"train exited with code {code}", code)
    except BaseException as err:  # noqa: BLE001 - recorded, the sweep goes on
        traceback.print_exc()
        code = 130 if _INTERRUPTED else 1
        if not _INTERRUPTED:
            message = " ".join(f"{type(err).__name__}: {err}".split())[:500]
            with contextlib.suppress(Exception):
                mark_failed(cfg, run_dir, message, 1)
    finish_wandb(code)  # os._exit skips wandb's hooks: a run left open would be cut short on disk
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


INTERRUPT_EXITS = {130, 143, -int(signal.SIGINT), -int(signal.SIGTERM)}


def was_interrupted(summary: RunSummary | None, exitcode: int | None) -> bool:
    """A child that stopped for SIGINT / SIGTERM (its record says so, or its exit code does)."""
    if summary is not None and summary.status in TERMINAL:
        return False
    return (summary is not None and summary.status == Status.INTERRUPTED) or exitcode in INTERRUPT_EXITS


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


def install_sigterm():
    """SIGTERM (scheduler preemption) stops the executor like Ctrl-C: runs stay resumable."""
    try:
        def handler(signum, frame):
            raise RunInterrupted(signum)

        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def restore_sigterm(old) -> None:
    if old is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, old)


def start_context(method: str | None):
    methods = multiprocessing.get_all_start_methods()
    if method is None:
        method = "fork" if "fork" in methods else "spawn"
    if method not in methods:
        raise ConfigError(f"start method {method} is not available here; valid: {', '.join(methods)}")
    return multiprocessing.get_context(method)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1
