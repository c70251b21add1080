"""What the local executor works on: its options, the plan of each sweep file, the runs in flight,
the sweeps being executed and their outcomes."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.lock import RunLock
from .progress import SweepProgress
from .validate import Point, SweepSpec


# --- options and results ---------------------------------------------------------------------
@dataclass
class ExecutorOptions:
    scale: str | None = None  # None: the sweep file's `scale` value
    runs_dir: str | Path = "runs"
    suite: str | None = None  # records go to <runs_dir>/<suite>/<sweep>/; default: the scale
    workers: int | None = None  # default: one per GPU group, else 1
    gpus: Sequence[str] = ()  # device indices; each worker gets gpus_per_run of them
    gpus_per_run: int = 1
    max_runs: int | None = None  # first k grid points of each file (required for random/bayes)
    retry_failed: bool = False
    extra: dict = field(default_factory=dict)  # constant parameters added to every run (--set)
    quiet: bool | None = None  # None: plain lines unless stdout is a terminal
    wandb_offline: bool | None = None  # None: WANDB_MODE=offline for runs when there is no login
    start_method: str | None = None  # fork (default where available) or spawn
    poll_s: float = 0.2
    retry_busy_s: float = 1.0  # how often runs held by another executor are looked at again
    stream: Any = None  # progress output (default: stdout)


@dataclass
class RunOutcome:
    run_id: str
    label: str
    status: str
    metric: Any = None
    wall_s: float | None = None
    error: str | None = None
    ran_here: bool = False


@dataclass
class SweepResult:
    name: str
    sweep_dir: Path
    total: int
    outcomes: dict = field(default_factory=dict)  # run_id -> RunOutcome

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and len(self.outcomes) == self.total


@dataclass
class SweepPlan:
    spec: SweepSpec
    scale: str
    out_dir: Path
    points: list[Point]  # grid points (empty for random / bayes: suggested while running)
    runs: list[Point]  # distinct runs, in grid order
    needs: set = field(default_factory=set)

    @property
    def sweep_dir(self) -> Path:
        return self.out_dir / self.spec.name



# --- while running ----------------------------------------------------------------------------
@dataclass
class ActiveRun:
    point: Point
    lock: RunLock
    proc: Any
    started: float
    slot: int
    sweep: SweepRun


@dataclass
class SweepRun:
    """One sweep file being executed: what is left to start, its progress view and its outcomes."""

    plan: SweepPlan
    progress: SweepProgress
    result: SweepResult
    pending: deque
    busy: list = field(default_factory=list)  # held by another executor: looked at again later
    suggested: list = field(default_factory=list)  # random / bayes
    last_busy_retry: float = 0.0

    @property
    def grid(self) -> bool:
        return self.plan.spec.method == "grid"

    @property
    def exhausted(self) -> bool:
        return not self.pending and not self.busy

    def actives(self, actives: dict) -> dict:
        return {rid: a for rid, a in actives.items() if a.sweep is self}
