"""Claim results: what one claim measured, its verdict before and after multiple-comparison control.

:func:`preliminary` settles the claims that need no test (not run, cannot discriminate,
deterministic, no interval); :func:`finalize` adjusts the p-values of each tier's family and
decides the rest (:mod:`.verdicts`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .claims import Claim
from .examples import SEED_ONLY
from .stats import Bounds, Estimate
from .verdicts import (
    ADJUSTERS,
    ADJUSTMENT,
    ALPHA,
    CANNOT_DISCRIMINATE,
    DETERMINISTIC,
    NOT_RUN,
    TIERS,
    UNDERPOWERED,
    Tested,
    adjusted_confidence,
    decide,
    holds,
    p_values_of,
)

CEILING_TOL = 0.01  # every seed of every arm within this of the metric's bound: the task cannot tell them apart
# every seed of every arm no further above the task's chance level than this fraction of the way from
# chance to the metric's top: nothing was learnt, so the arms cannot differ (a floor at chance, not at 0)
CHANCE_TOL = 0.10

_UNIT = re.compile(r"(^|/)(acc|token_acc|nsp_acc|f1|exact_match(_src\d+)?|entropy|max_prob)$")


def metric_bounds(metric: str) -> Bounds:
    """The range of a bounded metric (accuracies, F1, exact match, normalised entropy: [0, 1]; MCC: [-1, 1])."""
    if _UNIT.search(metric):
        return (0.0, 1.0)
    if metric.endswith("/mcc"):
        return (-1.0, 1.0)
    return None


def contrast_bounds(bounds: Bounds, coeffs: Sequence[float], offset: float = 0.0) -> Bounds:
    """Interval arithmetic: the range of ``sum c_i x_i + offset`` for every x_i in ``bounds``."""
    if bounds is None:
        return None
    lo = math.fsum(min(c * bounds[0], c * bounds[1]) for c in coeffs) + offset
    hi = math.fsum(max(c * bounds[0], c * bounds[1]) for c in coeffs) + offset
    return (lo, hi)


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
    runs_by_seed: dict[Hashable, list] = field(default_factory=dict)


@dataclass
class ClaimResult:
    claim: Claim
    estimate: Estimate | None
    verdict: str | None
    reason: str
    groups: list[GroupSummary] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    bounds: Bounds = None
    interval: str = SEED_ONLY  # how the interval was built (examples.SEED_ONLY / WITH_EXAMPLES, with why)
    tested: Tested | None = None
    p_adjusted: float | None = None
    adjusted: Estimate | None = None  # the estimate with the tier's adjusted interval
    mde: float = math.nan
    seeds_needed: int | None = None
    holds: bool | None = None

    @property
    def shown(self) -> Estimate | None:
        """The interval the verdict used (adjusted where the tier adjusts), else the 95% one."""
        return self.adjusted or self.estimate

    def as_dict(self, label: str, text: str) -> dict:
        e, c, s = self.estimate, self.claim, self.shown
        num = lambda x: None if x is None or not math.isfinite(x) else float(x)
        return {
            "id": c.id, "question": c.question, "tier": c.tier, "verdict": self.verdict,
            "effect": num(e.mean) if e else None, "ci_low": num(s.lo) if s else None,
            "ci_high": num(s.hi) if s else None, "ci_level": s.confidence if s and s.has_interval else None,
            "p": num(self.tested.p) if self.tested else None, "p_adjusted": num(self.p_adjusted),
            "n": e.n if e else 0, "deterministic": bool(e and e.deterministic),
            "adjustment": ADJUSTMENT[c.tier], "holds": self.holds,
            "ci95_low": num(e.lo) if e else None, "ci95_high": num(e.hi) if e else None,
            "p_claim": num(self.tested.p_claim) if self.tested else None,
            "min_detectable_effect": num(self.mde), "seeds_needed": self.seeds_needed,
            "interval": self.interval, "claim": c.claim, "control": c.control, "sweep": c.sweep, "source": c.source,
            "metric": c.metric, "expect": c.expect, "margin": c.margin, "chance": c.chance, "scale": c.scale,
            "effect_label": label, "effect_text": text, "ns": list(e.ns) if e else [],
            "method": e.method if e else None, "df": num(e.df) if e and e.df else None, "reason": self.reason,
            "literature": {"direction": c.literature_direction, "anchor": c.literature_anchor},
        }


def pinned(groups: Sequence[GroupSummary], bounds: Bounds, chance: float | None = None) -> str | None:
    """Where every seed of every compared arm (two or more) sits, when that leaves nothing to compare:
    "ceiling" / "floor" (within :data:`CEILING_TOL` of the metric's top / bottom ``bounds``), or
    "chance" (none above ``chance`` by more than :data:`CHANCE_TOL` of the way to the top)."""
    if bounds is None or len(groups) < 2:
        return None
    values = [v for g in groups for v in g.values.values()]
    if not values:
        return None
    for name, edge in (("ceiling", bounds[1]), ("floor", bounds[0])):
        if all(abs(v - edge) <= CEILING_TOL * (bounds[1] - bounds[0]) for v in values):
            return name
    if chance is not None and all(v <= chance + CHANCE_TOL * (bounds[1] - chance) for v in values):
        return "chance"
    return None


EDGE_TEXT = {"ceiling": "within {tol:g} of the metric's ceiling", "floor": "within {tol:g} of the metric's floor",
             "chance": "at most {chance_tol:g} of the way from chance ({chance:g}) to the metric's top"}


def preliminary(result: ClaimResult, margin: float | None, show: Callable[[float], str]) -> ClaimResult:
    """Settle what needs no test; leave ``verdict=None`` with ``tested`` set for the rest."""
    est, c = result.estimate, result.claim
    if est is None or not math.isfinite(est.mean):
        result.verdict = NOT_RUN
        return result
    bounds = None if c.scale == "log" else metric_bounds(c.metric)  # the arms' range (result.bounds: the effect's)
    chance = c.chance if c.expect not in ("a_at_chance", "a_above_chance") else None  # those test chance itself
    edge = pinned(result.groups, bounds, chance)
    if edge:
        where = EDGE_TEXT[edge].format(tol=CEILING_TOL, chance_tol=CHANCE_TOL, chance=chance or 0.0)
        result.verdict = CANNOT_DISCRIMINATE
        result.reason = (f"every seed of every compared arm is {where}: the task cannot tell the arms apart "
                         f"({'nothing was learnt; ' if edge == 'chance' else ''}redesign it off the {edge})")
        return result
    if est.deterministic:
        result.holds = holds(est, c.expect, margin)
        result.verdict = DETERMINISTIC
        result.reason = (f"measured {show(est.mean)} with zero variance across seeds (a measured value, not "
                         f"evidence); the claim {'holds' if result.holds else 'does not hold'} on it")
        return result
    tested = p_values_of(est, c.expect, margin)
    if tested is None:
        result.verdict = UNDERPOWERED
        result.reason = f"no confidence interval ({est.note or f'n={est.n}'}); at least 2 seeds per arm are needed"
        return result
    result.tested = tested
    return result


def decision_level(tier: str, p: float, p_adjusted: float, fallback: float) -> float:
    """The confidence level at which the adjusted test judged this claim: 1 - alpha * p / p_adjusted.

    The verdict is supported/contradicted exactly when the claim's p is below alpha * p / p_adjusted
    (Holm's step for a primary, the BH step for a secondary), so an interval at this level excludes the
    decision boundary exactly when the verdict is a finding. ``fallback`` when p_adjusted is 0.
    """
    if p_adjusted <= 0 or not math.isfinite(p_adjusted):
        return fallback
    return 1.0 - ALPHA[tier] * min(1.0, p / p_adjusted)


def finalize(results: Sequence[ClaimResult], margin_of: Callable[[Claim], float | None],
             show_of: Callable[[Claim], Callable[[float], str]]) -> None:
    """Adjust each tier's p-values (Holm / BH / none) and decide every claim left open."""
    for tier in TIERS:
        family = [r for r in results if r.claim.tier == tier]
        if not family:
            continue
        adjusted = ADJUSTERS[tier]([r.tested.p if r.tested and r.verdict is None else 1.0 for r in family])
        open_ = [(r, p) for r, p in zip(family, adjusted) if r.tested is not None and r.verdict is None]
        fallback = adjusted_confidence(tier, len(family), sum(p < ALPHA[tier] for _, p in open_))
        for r, p in open_:
            r.p_adjusted = p
            r.adjusted = r.estimate.at_level(decision_level(tier, r.tested.p, p, fallback), r.bounds)
            r.verdict, r.reason, r.mde, r.seeds_needed = decide(
                r.adjusted, r.claim.expect, margin_of(r.claim), r.tested, p, tier, len(family), show_of(r.claim))
