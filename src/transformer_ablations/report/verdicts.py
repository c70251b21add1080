"""From estimates to verdicts: claim tiers, multiple-comparison control, the verdict vocabulary.

Tiers (``tier:`` in ``claims.yaml``):

- ``primary``: one per question; Holm over the family at family-wise ``ALPHA["primary"]`` (5%);
- ``secondary``: Benjamini-Hochberg over the family at false-discovery rate ``ALPHA["secondary"]`` (10%);
- ``check``: the manipulation worked or a symmetry holds; unadjusted, shown apart, never counted;
- ``control``: a null comparison of known truth; unadjusted at 5%, so the share of controls called
  supported estimates the per-claim false-support rate.

A family's size counts every claim of its tier, also those without a p-value (as p = 1): the
families are the pre-registered claims, not the ones that happened to run.

Verdicts: ``supported`` / ``contradicted`` (adjusted p below the tier's level, by the direction of
the evidence), ``not resolved — underpowered`` (with the minimum detectable effect and the seeds
that would resolve the claim), ``not resolved — cannot discriminate`` (every compared arm at the
metric's ceiling or floor), ``deterministic`` (zero variance over seeds: a measured value, not
evidence) and ``not run``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from .stats import Estimate, claim_p_values, decision_p, min_detectable_effect, seeds_needed

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
UNDERPOWERED = "not resolved — underpowered"
CANNOT_DISCRIMINATE = "not resolved — cannot discriminate"
DETERMINISTIC = "deterministic"
NOT_RUN = "not run"
VERDICTS = (SUPPORTED, CONTRADICTED, UNDERPOWERED, CANNOT_DISCRIMINATE, DETERMINISTIC, NOT_RUN)
NOT_RESOLVED = (UNDERPOWERED, CANNOT_DISCRIMINATE)

TIERS = ("primary", "secondary", "check", "control")
COUNTED_TIERS = ("primary", "secondary")
ALPHA = {"primary": 0.05, "secondary": 0.10, "check": 0.05, "control": 0.05}
ADJUSTMENT = {"primary": "Holm", "secondary": "Benjamini-Hochberg", "check": "none", "control": "none"}

# what each ``expect`` tests (see stats.claim_p_values)
TEST_KIND = {"a_better": "direction", "gap_grows": "direction", "a_above_chance": "direction",
             "a_not_worse": "not_worse", "equivalent": "equivalent", "a_at_chance": "equivalent"}


# --- multiple comparisons ------------------------------------------------------------------
def holm(p: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control).

    Written out because scipy.stats has BH/BY (false_discovery_control) but no Holm, and this is
    five lines: sort, multiply the k-th smallest by (m - k), take the running maximum, cap at 1.
    """
    ps = np.asarray(p, dtype=float)
    m = len(ps)
    if m == 0:
        return []
    order = np.argsort(ps, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * ps[order]))
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def benjamini_hochberg(p: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``)."""
    if len(p) == 0:
        return []
    return [float(x) for x in st.false_discovery_control(np.asarray(p, dtype=float), method="bh")]


ADJUSTERS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "primary": holm,
    "secondary": benjamini_hochberg,
    "check": list,
    "control": list,
}


def adjusted_confidence(tier: str, m: int, discoveries: int) -> float:
    """A tier-wide confidence level for adjusted intervals (used where a claim's own level is undefined).

    primary: Bonferroni 1 - alpha/m; secondary: the false-coverage-rate level of Benjamini &
    Yekutieli (2005), 1 - R·q/m with R the number of discoveries (at least 1); check/control: 1 - alpha.
    """
    alpha = ALPHA[tier]
    if tier == "primary" and m > 0:
        return 1.0 - alpha / m
    if tier == "secondary" and m > 0:
        return 1.0 - alpha * max(discoveries, 1) / m
    return 1.0 - alpha


# --- one claim -----------------------------------------------------------------------------
@dataclass
class Tested:
    """The p-values of one testable claim (before adjustment)."""

    p_claim: float
    p_opposite: float
    p: float  # decision p: 2 x the smaller one-sided p (see stats.decision_p)


def p_values_of(est: Estimate, expect: str, margin: float | None) -> Tested | None:
    """p-values of an oriented estimate, or None when it has no t-statistic (n < 2, deterministic)."""
    if not est.testable:
        return None
    p_claim, p_opp = claim_p_values(est, TEST_KIND[expect], margin)
    return Tested(p_claim, p_opp, decision_p(p_claim, p_opp))


def holds(est: Estimate, expect: str, margin: float | None) -> bool | None:
    """Whether a measured (deterministic) value satisfies the claim itself; None without a value."""
    if not math.isfinite(est.mean):
        return None
    kind = TEST_KIND[expect]
    if kind == "direction":
        return est.mean > 0
    if kind == "not_worse":
        return est.mean > -(margin or 0.0)
    return abs(est.mean) <= (margin or 0.0)


def decide(est: Estimate, expect: str, margin: float | None, tested: Tested, p_adjusted: float, tier: str,
           m: int, show: Callable[[float], str]) -> tuple[str, str, float, int | None]:
    """(verdict, reason, minimum detectable effect, seeds needed) for a testable claim after adjustment."""
    alpha = ALPHA[tier]
    adj = ADJUSTMENT[tier]
    padj = f"p = {tested.p:.3g}" + (f", {adj}-adjusted {p_adjusted:.3g}" if adj != "none" else "")
    ci = f"{100 * est.confidence:.4g}% CI [{show(est.lo)}, {show(est.hi)}]"
    if p_adjusted < alpha:
        if tested.p_claim <= tested.p_opposite:
            return SUPPORTED, f"{padj} < {alpha:g}; {ci}: the data favour the claim", math.nan, None
        return CONTRADICTED, f"{padj} < {alpha:g}; {ci}: the data favour the opposite", math.nan, None
    # power at the level this claim faces: Bonferroni within its family for primaries (conservative)
    level = alpha / max(m, 1) if tier == "primary" else alpha
    kind = TEST_KIND[expect]
    mde = min_detectable_effect(est, level)
    if kind == "direction":
        target = abs(est.mean)
    elif kind == "not_worse":
        target = abs(est.mean + (margin or 0.0))
    else:
        target = abs((margin or 0.0) - abs(est.mean))  # distance to the band's edge, either side
    need = seeds_needed(est, level, target)
    need_txt = (f"about {need} seeds per arm would resolve it at the observed spread" if need
                else "no number of seeds up to 1000 would resolve it at the observed effect and spread")
    if est.var_examples > 0 and need is None:
        need_txt += " (validation-set size limits it: more seeds do not shrink the example-sampling variance)"
    return UNDERPOWERED, (f"{padj} ≥ {alpha:g}; {ci}; minimum detectable effect (80% power, α={level:.3g}) "
                          f"{show(mde) if math.isfinite(mde) else '—'}; {need_txt}"), mde, need


def false_support_rate(verdicts: Sequence[str]) -> tuple[int, int, float, float, float]:
    """(k supported, n tested, rate, exact 95% CI low, high) over controls (``scipy.stats.binomtest``)."""
    n = len(verdicts)
    k = sum(v == SUPPORTED for v in verdicts)
    if n == 0:
        return 0, 0, math.nan, math.nan, math.nan
    ci = st.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return k, n, k / n, float(ci.low), float(ci.high)
