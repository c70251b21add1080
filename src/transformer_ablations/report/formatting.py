"""How a claim's effect reads: its label, the number with its interval, log effects as ratios."""

from __future__ import annotations

import math

from .claims import Claim
from .collect import fmt_value
from .stats import Estimate


def show_of(c: Claim):
    """Formats one number of the claim's effect (log effects as ratios ``2.3×``)."""
    if c.scale == "log":
        return lambda x: f"{math.exp(x):.3g}×"
    return lambda x: f"{x:.4g}"


def margin_of(c: Claim) -> float | None:
    """The margin on the effect's scale (a relative margin becomes log(1 + margin))."""
    if c.margin is None:
        return None
    return math.log1p(c.margin) if c.scale == "log" else c.margin


def _ratio_name(c: Claim) -> str:
    return f"{c.metric} a/b" if c.orient > 0 else f"{c.metric} b/a"


def effect_label(c: Claim) -> str:
    """What the number means, oriented so that a positive (or >1×) value is the claimed direction."""
    diff = "a − b" if c.orient > 0 else "b − a"
    if c.control == "relabel":
        return f"({diff}) with the arms swapped in half of the seeds ({c.metric}; null by construction)"
    if c.control == "split_seeds":
        return f"one half of a's seeds − the other half ({c.metric}; null by construction)"
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
        if "values" in c.along:
            return f"slope of ({diff}) per unit of {c.along['x']}({k}) ({c.metric})"
        return f"({diff}) at {k}={fmt_value(c.along['to'])} minus at {k}={fmt_value(c.along['from'])} ({c.metric})"
    if c.scale == "log":
        return f"ratio {_ratio_name(c)}"
    return f"{diff} ({c.metric})"


def format_effect(c: Claim, est: Estimate | None, compact: bool = False) -> str:
    """``+0.1234 ± 0.0200 [+0.1034, +0.1434]`` (compact: ``+0.123 [+0.103, +0.143]``), ratios as ``2.3×``."""
    if est is None or not math.isfinite(est.mean):
        return "—"
    none = " (deterministic)" if est.deterministic else " (no CI)"
    if c.scale == "log":
        ci = f" [{math.exp(est.lo):.3g}×, {math.exp(est.hi):.3g}×]" if est.has_interval else none
        return f"{math.exp(est.mean):.3g}×{ci}"
    if compact:
        return f"{est.mean:+.3f} [{est.lo:+.3f}, {est.hi:+.3f}]" if est.has_interval else f"{est.mean:+.3f}{none}"
    if est.has_interval:
        return f"{est.mean:+.4f} ± {est.half_width:.4f} [{est.lo:+.4f}, {est.hi:+.4f}]"
    return f"{est.mean:+.4f}{none}"
