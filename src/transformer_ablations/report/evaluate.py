"""Claims × run records -> measured effects, confidence intervals and verdicts.

A claim's settings ``a`` and ``b`` (plus its ``condition``) select runs of its sweep. Runs count
when they finished or diverged and hold a finite value of the metric. The unit of replication is
the seed: within a setting, runs of one seed that differ in other grid keys (e.g. a second
learning rate) are averaged first, and the report says which keys were averaged over.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .claims import Claim
from .collect import RunCollection, RunRecord, fmt_point, fmt_value, same_value, varying_keys
from .stats import NOT_RESOLVED, Estimate, contrast_ci, mean_ci, slope_ci, verdict


@dataclass
class GroupSummary:
    """One setting of a claim (e.g. ``a`` at head_dim=256) and the values behind it."""

    label: str
    match: dict[str, Any]
    metric: str
    values: dict[Hashable, float]  # seed (or attention-cost unit) -> value
    estimate: Estimate
    n_runs: int = 0
    n_diverged: int = 0
    n_unusable: int = 0  # matching runs that are failed/running or lack the metric
    averaged_over: dict[str, list] = field(default_factory=dict)


@dataclass
class ClaimResult:
    claim: Claim
    estimate: Estimate | None
    verdict: str
    reason: str
    groups: list[GroupSummary] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def effect_label(self) -> str:
        return effect_label(self.claim, self)

    @property
    def effect_text(self) -> str:
        return format_effect(self.claim, self.estimate)

    def as_dict(self) -> dict:
        e = self.estimate
        c = self.claim
        num = lambda x: None if x is None or not math.isfinite(x) else x
        return {
            "id": c.id, "question": c.question, "claim": c.claim, "sweep": c.sweep, "source": c.source,
            "metric": c.metric, "expect": c.expect, "margin": c.margin, "chance": c.chance, "scale": c.scale,
            "effect_label": self.effect_label, "effect_text": self.effect_text,
            "effect": num(e.mean) if e else None, "ci_low": num(e.lo) if e else None,
            "ci_high": num(e.hi) if e else None, "n": e.n if e else 0, "ns": list(e.ns) if e else [],
            "method": e.method if e else None, "df": e.df if e else None,
            "verdict": self.verdict, "reason": self.reason,
            "literature": {"direction": c.literature_direction, "anchor": c.literature_anchor},
        }


# --- values per seed ---------------------------------------------------------------------
def seed_values(
    runs: Sequence[RunRecord], match: Mapping[str, Any], metric: str, log: bool = False, label: str = ""
) -> GroupSummary:
    """Select runs matching ``match``; one value of ``metric`` per seed (mean over other grid keys)."""
    selected = [r for r in runs if r.matches(match)]
    usable = [r for r in selected if r.usable and r.metric(metric) is not None]
    if log:
        usable = [r for r in usable if r.metric(metric) > 0]
    per_seed: dict[Hashable, list[float]] = defaultdict(list)
    for r in usable:
        v = r.metric(metric)
        per_seed[r.seed if r.seed is not None else r.run_id].append(math.log(v) if log else v)
    values = {s: math.fsum(vs) / len(vs) for s, vs in per_seed.items()}
    return GroupSummary(
        label=label or fmt_point(match), match=dict(match), metric=metric, values=values,
        estimate=mean_ci(list(values.values())), n_runs=len(selected),
        n_diverged=sum(r.status == "diverged" for r in usable), n_unusable=len(selected) - len(usable),
        averaged_over=varying_keys(usable, exclude=match.keys()),
    )


def cell_estimate(runs: Sequence[RunRecord], match: Mapping[str, Any], metric: str) -> Estimate:
    """Mean and 95% CI over seeds of ``metric`` in the runs matching ``match`` (for figures)."""
    return seed_values(runs, match, metric).estimate


# --- claims ------------------------------------------------------------------------------
def evaluate_claims(claims: Sequence[Claim], collection: RunCollection) -> list[ClaimResult]:
    by_sweep = collection.by_sweep()
    out = []
    for c in claims:
        if c.source == "attention_cost":
            out.append(_evaluate_cost(c, collection))
        else:
            out.append(evaluate_claim(c, by_sweep.get(c.sweep, [])))
    return out


def evaluate_claim(claim: Claim, runs: Sequence[RunRecord]) -> ClaimResult:
    """Evaluate one run-record claim on the runs of its sweep."""
    c = claim
    log = c.scale == "log"
    details: list[str] = []
    if not runs:
        return ClaimResult(c, None, NOT_RESOLVED, f"no run records for sweep {c.sweep}")

    def group(side: str, extra: Mapping[str, Any] | None = None, metric: str | None = None) -> GroupSummary:
        setting = c.a if side == "a" else c.b
        match = {**c.condition, **setting, **(extra or {})}
        where = {**c.condition, **(extra or {})}
        label = f"{side}: {fmt_point(setting)}" + (f" @ {fmt_point(where)}" if where else "")
        m = metric or c.metric
        if m != c.metric:
            label += f" [{m}]"
        return seed_values(runs, match, m, log=log, label=label)

    o = c.orient
    offset = 0.0
    if c.expect in ("a_at_chance", "a_above_chance"):
        groups = [group("a")]
        chance = math.log(c.chance) if log else c.chance
        coeffs = [1.0] if c.expect == "a_at_chance" else [o]
        offset = -chance if c.expect == "a_at_chance" else -o * chance
    elif c.expect == "gap_grows" and "metric_pattern" in c.along:
        pattern = c.along["metric_pattern"]
        rx = re.compile("^" + re.escape(pattern).replace(re.escape("{L}"), r"(\d+)") + "$")
        # buckets every matching run reports (an empty bucket is not logged); else any run reports
        per_run = [{int(m.group(1)) for k in r.metrics if (m := rx.match(k)) and r.metric(k) is not None}
                   for side in (c.a, c.b) for r in runs if r.matches({**c.condition, **side}) and r.usable]
        per_run = [b for b in per_run if b]
        common = set.intersection(*per_run) if per_run else set()
        buckets = sorted(common) if len(common) >= 2 else sorted(set().union(*per_run)) if per_run else []
        if len(buckets) < 2:
            return ClaimResult(c, None, NOT_RESOLVED,
                               f"need two length buckets matching {pattern} in both settings, found {buckets or 'none'}")
        lo_m, hi_m = (pattern.replace("{L}", str(b)) for b in (buckets[0], buckets[-1]))
        groups = [group("a", metric=hi_m), group("b", metric=hi_m), group("a", metric=lo_m), group("b", metric=lo_m)]
        coeffs = [o, -o, -o, o]
        details.append(f"buckets found: {', '.join(map(str, buckets))}; compared L={buckets[-1]} with L={buckets[0]}")
    elif c.expect == "gap_grows":
        k, v_from, v_to = c.along["key"], c.along["from"], c.along["to"]
        groups = [group("a", {k: v_to}), group("b", {k: v_to}), group("a", {k: v_from}), group("b", {k: v_from})]
        coeffs = [o, -o, -o, o]
    else:
        groups = [group("a"), group("b")]
        coeffs = [o, -o]
    missing = [g.label for g in groups if not g.values]
    if missing:
        return ClaimResult(c, None, NOT_RESOLVED, f"no finished runs with {c.metric} for {'; '.join(missing)}",
                           groups, details)
    est = contrast_ci([g.values for g in groups], coeffs, offset=offset)
    v, why = verdict(est, c.expect, _margin(c), _show(c))
    if est.method == "welch" and len(groups) > 1:
        details.append("settings do not share the same seeds: groups treated as independent (Welch)")
    for g in groups:
        if g.averaged_over:
            details.append(f"{g.label}: per seed, averaged over "
                           + "; ".join(f"{k} ∈ {{{', '.join(map(fmt_value, vs))}}}" for k, vs in g.averaged_over.items()))
        if g.n_diverged:
            details.append(f"{g.label}: includes {g.n_diverged} diverged run(s) (their last recorded {g.metric})")
        if g.n_unusable:
            details.append(f"{g.label}: {g.n_unusable} matching run(s) unfinished, failed or without {g.metric}")
    return ClaimResult(c, est, v, why, groups, details)


def _show(c: Claim):
    if c.scale == "log":
        return lambda x: f"{math.exp(x):.3g}×"
    return None


def _margin(c: Claim) -> float | None:
    if c.margin is None:
        return None
    return math.log1p(c.margin) if c.scale == "log" else c.margin


# --- attention cost (Q4 speed and memory) ------------------------------------------------
def _cost_values(rows: Sequence[dict], match: Mapping[str, Any], metric: str, log: bool) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    seen: dict[tuple, int] = defaultdict(int)
    for r in rows:
        if not all(k in r and same_value(r[k], v) for k, v in match.items()):
            continue
        v = r.get(metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (log and v <= 0):
            continue
        cell = (r.get("T"), r.get("d_k"))
        rep = r.get("repeat")
        if rep is None or (*cell, rep) in out:
            rep = seen[cell]
        seen[cell] += 1
        out[(*cell, rep)] = math.log(v) if log else float(v)
    return out


def _evaluate_cost(c: Claim, coll: RunCollection) -> ClaimResult:
    rows = coll.attention_cost
    if rows is None:
        why = coll.attention_cost_error or "no attention-cost benchmark (runs/<suite>/q4_attention_cost.json)"
        return ClaimResult(c, None, NOT_RESOLVED, why)
    log = c.scale == "log"
    a = _cost_values(rows, {**c.condition, **c.a}, c.metric, log)
    b = _cost_values(rows, {**c.condition, **c.b}, c.metric, log)
    ga = GroupSummary(f"a: {fmt_point(c.a)}", dict(c.a), c.metric, a, mean_ci(list(a.values())))
    gb = GroupSummary(f"b: {fmt_point(c.b)}", dict(c.b), c.metric, b, mean_ci(list(b.values())))
    if not a or not b:
        return ClaimResult(c, None, NOT_RESOLVED, f"no attention-cost rows for {'a' if not a else 'b'}", [ga, gb])
    details = _cost_table(a, b, log, c)
    if c.expect == "gap_grows":
        units = sorted(set(a) & set(b), key=str)
        xs = [math.log2(u[0]) for u in units if isinstance(u[0], (int, float)) and u[0] > 0]
        ys = [c.orient * (a[u] - b[u]) for u in units if isinstance(u[0], (int, float)) and u[0] > 0]
        est = slope_ci(xs, ys)
        details.insert(0, f"slope over {len(xs)} paired rows (T, d_k, repeat) against log2 T")
    else:
        est = contrast_ci([a, b], [c.orient, -c.orient])
        details.insert(0, f"units: rows (T, d_k, repeat); {est.method}")
    v, why = verdict(est, c.expect, _margin(c), _show(c))
    return ClaimResult(c, est, v, why, [ga, gb], details)


def _cost_table(a: dict, b: dict, log: bool, c: Claim) -> list[str]:
    cells = sorted({u[:2] for u in a} & {u[:2] for u in b}, key=lambda t: tuple(str(x).zfill(8) for x in t))
    lines = []
    for T, dk in cells:
        va = [v for u, v in a.items() if u[:2] == (T, dk)]
        vb = [v for u, v in b.items() if u[:2] == (T, dk)]
        ma, mb = sum(va) / len(va), sum(vb) / len(vb)
        if log:
            ratio = math.exp(c.orient * (ma - mb))
            lines.append(f"T={T}, d_k={dk}: {_ratio_name(c)} = {ratio:.2f}× "
                         f"(a {math.exp(ma):.4g}, b {math.exp(mb):.4g} {c.metric}; n={len(va)}/{len(vb)})")
        else:
            lines.append(f"T={T}, d_k={dk}: a {ma:.4g}, b {mb:.4g} {c.metric}")
    return lines


# --- formatting --------------------------------------------------------------------------
def _ratio_name(c: Claim) -> str:
    return f"{c.metric} a/b" if c.orient > 0 else f"{c.metric} b/a"


def effect_label(c: Claim, result: ClaimResult | None = None) -> str:
    """What the number means, oriented so that a positive (or >1×) value is the claimed direction."""
    diff = "a − b" if c.orient > 0 else "b − a"
    if c.expect in ("a_at_chance",):
        return f"a − chance ({c.metric}, chance {c.chance:g})"
    if c.expect == "a_above_chance":
        return f"{'a − chance' if c.orient > 0 else 'chance − a'} ({c.metric}, chance {c.chance:g})"
    if c.source == "attention_cost" and c.expect == "gap_grows":
        return f"growth of {_ratio_name(c)} per doubling of T"
    if c.expect == "gap_grows":
        if "metric_pattern" in c.along:
            return f"({diff}) at the longest minus at the shortest bucket ({c.along['metric_pattern']})"
        k = c.along["key"].split(".")[-1]
        return f"({diff}) at {k}={fmt_value(c.along['to'])} minus at {k}={fmt_value(c.along['from'])} ({c.metric})"
    if c.scale == "log":
        return f"ratio {_ratio_name(c)}"
    return f"{diff} ({c.metric})"


def format_effect(c: Claim, est: Estimate | None, compact: bool = False) -> str:
    """``+0.1234 ± 0.0200 [+0.1034, +0.1434]`` (compact: ``+0.123 [+0.103, +0.143]``), ratios as ``2.3×``."""
    if est is None or not math.isfinite(est.mean):
        return "—"
    if c.scale == "log":
        ci = f" [{math.exp(est.lo):.3g}×, {math.exp(est.hi):.3g}×]" if est.has_interval else " (no CI)"
        return f"{math.exp(est.mean):.3g}×{ci}"
    if compact:
        return f"{est.mean:+.3f} [{est.lo:+.3f}, {est.hi:+.3f}]" if est.has_interval else f"{est.mean:+.3f} (no CI)"
    if est.has_interval:
        return f"{est.mean:+.4f} ± {est.half_width:.4f} [{est.lo:+.4f}, {est.hi:+.4f}]"
    return f"{est.mean:+.4f} (no CI)"
