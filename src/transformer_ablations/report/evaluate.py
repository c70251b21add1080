"""Claims × run records -> measured effects, confidence intervals and verdicts.

A claim's settings ``a`` and ``b`` (plus its ``condition``) select runs of its sweep. Runs count
when they finished or diverged and hold a finite value of the metric. The unit of replication is
the seed: within a setting, runs of one seed that differ in other grid keys (e.g. a second
learning rate) are averaged first, and the report says which keys were averaged over. Where the
runs kept per-example validation outcomes, the interval adds validation-sampling variance
(:mod:`.examples`). Verdicts come from :func:`.results.finalize` after every claim is measured.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .claims import Claim
from .collect import RunCollection, RunRecord, canonical, fmt_point, fmt_value, varying_keys
from .cost import evaluate_cost
from .examples import example_variance
from .formatting import margin_of, show_of
from .results import ClaimResult, GroupSummary, contrast_bounds, finalize, metric_bounds, preliminary
from .stats import Estimate, contrast_ci, mean_ci
from .verdicts import NOT_RUN

__all__ = ["ClaimResult", "GroupSummary", "cell_estimate", "evaluate_claim", "evaluate_claims", "seed_values"]


# --- values per seed ---------------------------------------------------------------------
def seed_values(
    runs: Sequence[RunRecord], match: Mapping[str, Any], metric: str, log: bool = False, label: str = ""
) -> GroupSummary:
    """Select runs matching ``match``; one value of ``metric`` per seed (mean over other grid keys)."""
    selected = [r for r in runs if r.matches(match)]
    usable = [r for r in selected if r.usable and r.metric(metric) is not None]
    if log:
        usable = [r for r in usable if r.metric(metric) > 0]
    per_seed: dict[Hashable, list[RunRecord]] = defaultdict(list)
    for r in usable:
        per_seed[r.seed if r.seed is not None else r.run_id].append(r)
    f = math.log if log else float
    values = {s: math.fsum(f(r.metric(metric)) for r in rs) / len(rs) for s, rs in per_seed.items()}
    return GroupSummary(
        label=label or fmt_point(match), match=dict(match), metric=metric, values=values,
        estimate=mean_ci(list(values.values()), bounds=None if log else metric_bounds(metric)),
        n_runs=len(selected), n_diverged=sum(r.status == "diverged" for r in usable),
        n_unusable=len(selected) - len(usable), averaged_over=varying_keys(usable, exclude=match.keys()),
        runs_by_seed=dict(per_seed),
    )


def cell_estimate(runs: Sequence[RunRecord], match: Mapping[str, Any], metric: str) -> Estimate:
    """Mean and 95% CI over seeds of ``metric`` in the runs matching ``match`` (for figures; clipped to
    the metric's bounds)."""
    return seed_values(runs, match, metric).estimate


# --- claims ------------------------------------------------------------------------------
def evaluate_claims(claims: Sequence[Claim], collection: RunCollection) -> list[ClaimResult]:
    """Measure every claim, then adjust each tier's family and decide the verdicts."""
    by_sweep = collection.by_sweep()
    out = []
    for c in claims:
        if c.source == "attention_cost":
            r = evaluate_cost(c, collection)
        else:
            r = _measure(c, by_sweep.get(c.sweep, []))
        out.append(r if r.verdict is not None else preliminary(r, margin_of(c), show_of(c)))
    finalize(out, margin_of, show_of)
    return out


def evaluate_claim(claim: Claim, runs: Sequence[RunRecord]) -> ClaimResult:
    """One run-record claim on the runs of its sweep, decided alone (its tier's family of one)."""
    r = _measure(claim, runs)
    if r.verdict is None:
        preliminary(r, margin_of(claim), show_of(claim))
    finalize([r], margin_of, show_of)
    return r


def _groups(c: Claim, runs: Sequence[RunRecord]) -> tuple[list[GroupSummary], list[float], float, list[str]] | str:
    """The groups of a claim, their coefficients in the oriented effect, its offset, and notes (or why not)."""
    log = c.scale == "log"

    def group(side: str, extra: Mapping[str, Any] | None = None, metric: str | None = None) -> GroupSummary:
        setting = c.a if side == "a" else c.b
        match = {**c.condition, **setting, **(extra or {})}
        where = {**c.condition, **(extra or {})}
        label = f"{side}: {fmt_point(setting)}" + (f" @ {fmt_point(where)}" if where else "")
        m = metric or c.metric
        if c.best_of:
            key = c.best_of["key"]
            match = _best_setting(c.best_of, runs, match)
            label += f" (best {key} by {c.best_of['by']}: {fmt_value(match[key])})"
        return seed_values(runs, match, m, log=log, label=label + (f" [{m}]" if m != c.metric else ""))

    o = c.orient
    if c.expect in ("a_at_chance", "a_above_chance") or c.control == "split_seeds":
        if c.control == "split_seeds":
            return [*_split(group("a"), c.id)], [o, -o], 0.0, ["a's seeds split at random into two disjoint halves"]
        chance = math.log(c.chance) if log else c.chance
        if c.expect == "a_at_chance":
            return [group("a")], [1.0], -chance, []
        return [group("a")], [o], -o * chance, []
    if c.expect == "gap_grows" and "metric_pattern" in c.along:
        pattern = c.along["metric_pattern"]
        rx = re.compile("^" + re.escape(pattern).replace(re.escape("{L}"), r"(\d+)") + "$")
        # buckets every matching run reports (an empty bucket is not logged); else any run reports
        per_run = [{int(m.group(1)) for k in r.metrics if (m := rx.match(k)) and r.metric(k) is not None}
                   for side in (c.a, c.b) for r in runs if r.matches({**c.condition, **side}) and r.usable]
        per_run = [b for b in per_run if b]
        common = set.intersection(*per_run) if per_run else set()
        buckets = sorted(common) if len(common) >= 2 else sorted(set().union(*per_run)) if per_run else []
        if len(buckets) < 2:
            return f"need two length buckets matching {pattern} in both settings, found {buckets or 'none'}"
        lo_m, hi_m = (pattern.replace("{L}", str(b)) for b in (buckets[0], buckets[-1]))
        groups = [group("a", metric=hi_m), group("b", metric=hi_m), group("a", metric=lo_m), group("b", metric=lo_m)]
        return groups, [o, -o, -o, o], 0.0, [
            f"buckets found: {', '.join(map(str, buckets))}; compared L={buckets[-1]} with L={buckets[0]}"]
    if c.expect == "gap_grows" and "values" in c.along:
        k, values = c.along["key"], c.along["values"]
        weights = slope_weights(values, c.along["x"])
        groups = [group(side, {k: v}) for v in values for side in ("a", "b")]
        coeffs = [w * s for w in weights for s in (o, -o)]
        return groups, coeffs, 0.0, [(
            f"least-squares slope of the effect against {c.along['x']}({k}) over {', '.join(map(fmt_value, values))}: "
            f"weights {', '.join(f'{w:+.3g}' for w in weights)} on the per-value effects")]
    if c.expect == "gap_grows":
        k, v_from, v_to = c.along["key"], c.along["from"], c.along["to"]
        groups = [group("a", {k: v_to}), group("b", {k: v_to}), group("a", {k: v_from}), group("b", {k: v_from})]
        return groups, [o, -o, -o, o], 0.0, []
    groups = [group("a"), group("b")]
    if c.control == "relabel":
        return [*_relabel(*groups, c.id)], [o, -o], 0.0, ["arms swapped in a random half of the seeds"]
    return groups, [o, -o], 0.0, []


def _best_setting(best_of: Mapping[str, Any], runs: Sequence[RunRecord], match: Mapping[str, Any]) -> dict:
    """``match`` plus the value of ``best_of["key"]`` whose mean over seeds of ``best_of["by"]`` is best."""
    key, sign = best_of["key"], 1.0 if best_of["goal"] == "max" else -1.0
    values = {canonical(r.config[key]): r.config[key] for r in runs if key in r.config and r.matches(match)}

    def score(v: Any) -> float:
        mean = seed_values(runs, {**match, key: v}, best_of["by"]).estimate.mean
        return sign * mean if math.isfinite(mean) else -math.inf

    best = max(sorted(values.values(), key=str), key=score) if values else None
    return {**match, key: best}


def slope_weights(values: Sequence[float], x: str) -> list[float]:
    """OLS slope as a linear contrast: slope = sum_i w_i y_i with w_i = (x_i - mean x) / sum (x - mean x)^2."""
    xs = np.array([{"linear": v, "log2": math.log2(v), "sqrt": math.sqrt(v)}[x] for v in values], dtype=float)
    dev = xs - xs.mean()
    return [float(w) for w in dev / float((dev**2).sum())]


def _control_rng(cid: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(cid.encode()))


def _split(g: GroupSummary, cid: str) -> tuple[GroupSummary, GroupSummary]:
    """Two disjoint halves of a group's seeds (a null comparison: same config in both arms)."""
    seeds = sorted(g.values, key=str)
    chosen = {seeds[i] for i in _control_rng(cid).permutation(len(seeds))[: len(seeds) // 2]}
    halves = []
    for name, keep in (("first", lambda s: s in chosen), ("second", lambda s: s not in chosen)):
        vals = {s: v for s, v in g.values.items() if keep(s)}
        halves.append(GroupSummary(f"{g.label} ({name} half of the seeds: {', '.join(map(str, vals))})", g.match,
                                   g.metric, vals, mean_ci(list(vals.values())),
                                   runs_by_seed={s: g.runs_by_seed[s] for s in vals}))
    return halves[0], halves[1]


def _relabel(a: GroupSummary, b: GroupSummary, cid: str) -> tuple[GroupSummary, GroupSummary]:
    """a and b with their values swapped in a random half (rounded down) of the shared seeds."""
    seeds = sorted(set(a.values) & set(b.values), key=str)
    swapped = {seeds[i] for i in _control_rng(cid).permutation(len(seeds))[: len(seeds) // 2]}
    out = []
    for first, second, side in ((a, b, "a'"), (b, a, "b'")):
        vals = {s: (second if s in swapped else first).values[s] for s in seeds}
        runs = {s: (second if s in swapped else first).runs_by_seed[s] for s in seeds}
        out.append(GroupSummary(f"{side}: {first.label} with seeds {', '.join(map(str, sorted(swapped, key=str)))} "
                                "taken from the other arm", first.match, first.metric, vals,
                                mean_ci(list(vals.values())), runs_by_seed=runs))
    return out[0], out[1]


def _measure(c: Claim, runs: Sequence[RunRecord]) -> ClaimResult:
    """Groups, the effect's estimate (seeds, plus validation examples where recorded), and notes."""
    if not runs:
        return ClaimResult(c, None, NOT_RUN, f"no run records for sweep {c.sweep}")
    built = _groups(c, runs)
    if isinstance(built, str):
        return ClaimResult(c, None, NOT_RUN, built)
    groups, coeffs, offset, details = built
    missing = [g.label for g in groups if not g.values]
    if missing:
        return ClaimResult(c, None, NOT_RUN, f"no finished runs with {c.metric} for {'; '.join(missing)}",
                           groups, details)
    log = c.scale == "log"
    bounds = None if log else contrast_bounds(metric_bounds(c.metric), coeffs, offset)
    var_ex, interval = example_variance([g.runs_by_seed for g in groups], coeffs, groups[0].metric, log)
    if any(g.metric != groups[0].metric for g in groups) and var_ex:
        var_ex, interval = 0.0, "seeds only: the groups read different metrics"
    est = contrast_ci([g.values for g in groups], coeffs, offset=offset, bounds=bounds, var_examples=var_ex)
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
    return ClaimResult(c, est, None, "", groups, details, bounds=bounds, interval=interval)
