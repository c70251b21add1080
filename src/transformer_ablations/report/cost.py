"""Q4's attention-cost claims (``runs/<suite>/q4_attention_cost.json``): time and memory per T.

The benchmark repeats each (T, d_k) cell a few times. Repeats are not independent replicates of
the claim (they share the machine, the build and the moment), so they are averaged first: the
unit of replication is the distinct cell, and a slope against log2 T is fitted on the distinct
lengths. A cell whose repeats are identical (peak memory is deterministic) is a measured value:
when every cell of both arms is, the claim is reported as "deterministic" with the values per T.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .claims import Claim
from .collect import RunCollection, fmt_point, same_value
from .examples import SEED_ONLY
from .results import ClaimResult, GroupSummary
from .stats import Estimate, contrast_ci, mean_ci, slope_ci
from .verdicts import NOT_RUN

CELL = "repeats averaged per (T, d_k)"


def cost_cells(rows: Sequence[dict], match: Mapping[str, Any], metric: str, log: bool) -> dict[tuple, list[float]]:
    """(T, d_k) -> the finite values of ``metric`` over the repeats (log values when ``log``)."""
    out: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if not all(k in r and same_value(r[k], v) for k, v in match.items()):
            continue
        v = r.get(metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (log and v <= 0):
            continue
        out[(r.get("T"), r.get("d_k"))].append(math.log(v) if log else float(v))
    return dict(out)


def _spread(cells: Mapping[tuple, list[float]]) -> bool:
    return any(max(vs) - min(vs) > 1e-12 * max(1.0, abs(max(vs))) for vs in cells.values())


def evaluate_cost(c: Claim, coll: RunCollection) -> ClaimResult:
    rows = coll.attention_cost
    if rows is None:
        why = coll.attention_cost_error or "no attention-cost benchmark (runs/<suite>/q4_attention_cost.json)"
        return ClaimResult(c, None, NOT_RUN, why)
    log = c.scale == "log"
    ca = cost_cells(rows, {**c.condition, **c.a}, c.metric, log)
    cb = cost_cells(rows, {**c.condition, **c.b}, c.metric, log)
    a = {cell: sum(v) / len(v) for cell, v in ca.items()}
    b = {cell: sum(v) / len(v) for cell, v in cb.items()}
    ga = GroupSummary(f"a: {fmt_point(c.a)}", dict(c.a), c.metric, a, mean_ci(list(a.values())))
    gb = GroupSummary(f"b: {fmt_point(c.b)}", dict(c.b), c.metric, b, mean_ci(list(b.values())))
    if not a or not b:
        return ClaimResult(c, None, NOT_RUN, f"no attention-cost rows for {'a' if not a else 'b'}", [ga, gb])
    details = cost_table(ca, cb, log, c)
    cells = sorted(set(a) & set(b), key=str)
    measured = not (_spread(ca) or _spread(cb))
    if c.expect == "gap_grows":
        xs = [math.log2(cell[0]) for cell in cells if isinstance(cell[0], (int, float)) and cell[0] > 0]
        ys = [c.orient * (a[cell] - b[cell]) for cell in cells if isinstance(cell[0], (int, float)) and cell[0] > 0]
        est = slope_ci(xs, ys)
        details.insert(0, f"slope against log2 T over {len(xs)} distinct cells ({CELL}; df = cells − 2)")
    else:
        est = contrast_ci([{k: a[k] for k in cells}, {k: b[k] for k in cells}], [c.orient, -c.orient])
        details.insert(0, f"mean over {len(cells)} distinct cells ({CELL}); the t-interval is over cells, "
                          "so it spans the spread of the effect across lengths")
    if measured:
        est = Estimate(est.mean, math.nan, math.nan, est.n, None, est.method, est.ns,
                       "every cell's repeats are identical: measured values (deterministic)", deterministic=True,
                       se=0.0, sd=0.0)
    return ClaimResult(c, est, None, "", [ga, gb], details, interval=f"{SEED_ONLY}: benchmark cells, {CELL}")


def cost_table(a: Mapping[tuple, list[float]], b: Mapping[tuple, list[float]], log: bool, c: Claim) -> list[str]:
    """One line per (T, d_k): a and b (mean and range over repeats) and their ratio."""
    cells = sorted(set(a) & set(b), key=lambda t: tuple(str(x).zfill(8) for x in t))
    f = math.exp if log else (lambda x: x)
    lines = []
    for T, dk in cells:
        va, vb = [f(x) for x in a[(T, dk)]], [f(x) for x in b[(T, dk)]]
        ma, mb = sum(va) / len(va), sum(vb) / len(vb)
        rng = lambda vs: f" (range {min(vs):.4g}–{max(vs):.4g})" if max(vs) > min(vs) else " (identical repeats)"
        ratio = f"; b/a = {mb / ma:.2f}×" if ma > 0 else ""
        lines.append(f"T={T}, d_k={dk}: a {ma:.4g}{rng(va)}, b {mb:.4g}{rng(vb)} {c.metric}, "
                     f"n={len(va)}/{len(vb)} repeats{ratio}")
    return lines
