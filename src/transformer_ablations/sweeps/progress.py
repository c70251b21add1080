"""Progress of one sweep: a live Rich view on a terminal, plain lines otherwise.

The view shows runs done / running / failed / diverged / total, an ETA from the mean run time
of this session, the best metric so far (``summary.json`` ``metrics[<metric>]`` of finished
runs) and the runs in flight. It never refreshes from a background thread (the executor forks
run processes, and a thread holding the console lock at fork time is a classic deadlock):
the executor's loop calls :meth:`SweepProgress.refresh`.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

# Rich shows one live view at a time: the newest sweep's. A sweep that left it (its last runs still in
# flight while the next sweep starts) prints its lines through the view on screen.
_LIVE_VIEWS: list = []


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def fmt_metric(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class SweepProgress:
    def __init__(
        self,
        name: str,
        total: int,
        metric_name: str | None,
        goal: str = "maximize",
        workers: int = 1,
        quiet: bool | None = None,
        stream: TextIO | None = None,
        header: str = "",
    ):
        self.name, self.total, self.metric_name, self.goal = name, total, metric_name, goal
        self.workers = max(1, workers)
        self.stream = stream or sys.stdout
        self.quiet = (not self.stream.isatty()) if quiet is None else quiet
        self.counts = {"finished": 0, "diverged": 0, "failed": 0, "interrupted": 0}
        self.skipped = 0  # already done before this session
        self.running: dict[str, tuple[str, float]] = {}  # run_id -> (label, started)
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self.waiting = 0
        self._last_render = 0.0
        self._live = None
        self._console = None
        self._print(header or f"{name}: {total} runs")
        if not self.quiet:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream)
            self._live = Live(self._renderable(), console=self._console, auto_refresh=False, transient=False)
            self._live.start()
            _LIVE_VIEWS.append(self._live)

    # --- events -----------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def _update_best(self, value, label: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return
        better = (
            self.best is None
            or (self.goal == "maximize" and value > self.best[0])
            or (self.goal != "maximize" and value < self.best[0])
        )
        if better:
            self.best = (float(value), label)

    def already_done(self, run_id: str, label: str, status: str, metric) -> None:
        self.counts[status if status in self.counts else "failed"] += 1
        self.skipped += 1
        if status == "finished":
            self._update_best(metric, label)

    def run_started(self, run_id: str, label: str) -> None:
        self.running[run_id] = (label, time.monotonic())
        if self.quiet:
            self._print(f"{self.name} [{self.done}/{self.total}] start {run_id} {label}")
        self.refresh(force=True)

    def run_finished(self, run_id: str, label: str, status: str, metric=None, seconds: float | None = None,
                     error: str | None = None, log: str | None = None) -> None:
        self.running.pop(run_id, None)
        self.counts[status if status in self.counts else "failed"] += 1
        if seconds is not None:
            self.durations.append(seconds)
        if status == "finished":
            self._update_best(metric, label)
        shown = f" {self.metric_name}={fmt_metric(metric)}" if (metric is not None and self.metric_name) else ""
        line = f"{self.name} [{self.done}/{self.total}] {status} {run_id} {label}{shown} ({fmt_duration(seconds)})"
        if error:
            line += f": {error}"
        if log and status == "failed":
            line += f" (log: {log})"
        if self.quiet:
            self._print(line + f"; ETA {fmt_duration(self.eta())}")
        elif status != "finished":
            self._live.console.print(line)
        self.refresh(force=True)

    def set_waiting(self, n: int) -> None:
        if n != self.waiting and n and self.quiet:
            self._print(f"{self.name}: waiting for {n} run(s) held by another executor")
        self.waiting = n

    def eta(self) -> float | None:
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        in_flight = [time.monotonic() - t0 for _, t0 in self.running.values()]
        parallel = max(1, min(self.workers, remaining))
        # runs in flight are partly done; the rest start when a worker frees up
        left = sum(max(0.0, mean - t) for t in in_flight) + mean * max(0, remaining - len(in_flight))
        return left / parallel

    # --- rendering ------------------------------------------------------------------------------
    def _print(self, line: str) -> None:
        live = self._live or (_LIVE_VIEWS[-1] if _LIVE_VIEWS else None)
        if live is not None:
            live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def status_line(self) -> str:
        c = self.counts
        interrupted = f", {c['interrupted']} interrupted" if c["interrupted"] else ""
        return (
            f"{self.done}/{self.total} done: {c['finished']} finished, {c['diverged']} diverged, "
            f"{c['failed']} failed{interrupted}; {len(self.running)} running; ETA {fmt_duration(self.eta())}"
        )

    def _renderable(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(self.name, style="bold"),
            ProgressBar(total=max(1, self.total), completed=self.done, width=30),
            Text(f"{self.done}/{self.total}"),
        )
        rows = [head, Text(self.status_line())]
        if self.metric_name:
            best = f"{fmt_metric(self.best[0])} ({self.best[1]})" if self.best else "-"
            rows.append(Text(f"best {self.metric_name} ({self.goal}): {best}"))
        now = time.monotonic()
        for run_id, (label, t0) in self.running.items():
            rows.append(Text(f"running {run_id} {label} ({fmt_duration(now - t0)})", style="cyan"))
        if self.waiting:
            rows.append(Text(f"waiting for {self.waiting} run(s) held by another executor", style="yellow"))
        return Group(*rows)

    def refresh(self, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if force or now - self._last_render > 0.5:
            self._last_render = now
            self._live.update(self._renderable(), refresh=True)

    def release_view(self) -> None:
        """Leave the live view to the next sweep: this one's last state stays on screen, and its later
        events print as lines."""
        if self._live is None:
            return
        self.refresh(force=True)
        self._live.stop()
        _LIVE_VIEWS.remove(self._live)
        self._live, self.quiet = None, True

    def close(self) -> None:
        self.release_view()
        self._print(f"{self.name}: {self.status_line()}"
                    + (f"; best {self.metric_name} {fmt_metric(self.best[0])} ({self.best[1]})" if self.best else ""))
