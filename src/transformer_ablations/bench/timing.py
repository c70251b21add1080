"""Side-by-side timing on a noisy shared machine: every contender runs in the same process, the
contenders alternate (the order rotates each repeat), and the reported figure is the median.

A contender is a zero-argument callable doing one unit of work (e.g. one training step); it must
finish its own work before returning (on CUDA call ``torch.cuda.synchronize()`` inside, or pass
``sync=torch.cuda.synchronize``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Seconds per call, one entry per repeat: ``wall`` (perf_counter) and ``cpu`` (this process's user +
    system time over all its threads). On a machine shared with other jobs, ``wall`` also counts the
    time the job was descheduled; ``cpu`` does not, so its ratios are the steadier ones."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str, clock: str = "wall") -> float:
        return statistics.median(getattr(self, clock)[name])


def alternate(
    contenders: dict[str, Callable[[], object]],
    repeats: int = 5,
    calls_per_repeat: int = 3,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    budget_s: float | None = None,
) -> Timings:
    """Time each contender ``repeats`` times, ``calls_per_repeat`` calls a time, alternating (who goes
    first rotates each repeat). ``warmup`` calls of each contender run first and are not timed. Repeats
    stop early (after at least 2) once ``budget_s`` of wall time is spent."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
        if sync:
            sync()
    out = Timings({n: [] for n in names}, {n: [] for n in names})
    start = time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            fn = contenders[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(calls_per_repeat):
                fn()
            if sync:
                sync()
            out.wall[name].append((time.perf_counter() - t0) / calls_per_repeat)
            out.cpu[name].append((time.process_time() - c0) / calls_per_repeat)
        if budget_s is not None and r >= 1 and time.perf_counter() - start > budget_s:
            break
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_table(header: list[str], rows: list[list[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(x: object) -> str:
    if isinstance(x, float):
        if x == 0 or 0.01 <= abs(x) < 1e5:
            return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
        return f"{x:.3g}"
    return str(x)
