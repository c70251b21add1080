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


def alternate(
    contenders: dict[str, Callable[[], object]],
    repeats: int = 5,
    calls_per_repeat: int = 3,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    budget_s: float | None = None,
) -> dict[str, list[float]]:
    """-> {name: [seconds per call, one per repeat]}. ``warmup`` calls of each contender are run first
    and not timed. Repeats stop early (after at least 2) once ``budget_s`` of wall time is spent."""
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
        if sync:
            sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            fn = contenders[name]
            t0 = time.perf_counter()
            for _ in range(calls_per_repeat):
                fn()
            if sync:
                sync()
            times[name].append((time.perf_counter() - t0) / calls_per_repeat)
        if budget_s is not None and r >= 1 and time.perf_counter() - start > budget_s:
            break
    return times


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
