"""Statistics behind the verdicts, from ``scipy.stats``: t-intervals over seeds (paired or Welch),
a regression slope, the p-values of each kind of claim (one-sided t, non-inferiority, TOST),
the minimum detectable effect and the seeds that would resolve a claim.

The unit of replication is the seed: every contrast is computed from one value per seed and
group. When every group has the same seeds the contrast is paired (one difference per seed,
one-sample t); otherwise the groups are independent (Welch-Satterthwaite degrees of freedom).

Validation sampling: the validation set is the same in every seed and arm, so the spread over
seeds covers training noise only. When per-example outcomes exist, :mod:`.examples` adds the
variance of the contrast over a paired bootstrap of validation examples (``var_examples``); the
standard error is ``sqrt(s²/n + var_examples)`` and the degrees of freedom stay those of the
seeds (conservative: Satterthwaite with a known bootstrap term would raise them, and the interval
could come out narrower than the seed-only one).

A contrast whose per-seed values do not vary at all is **deterministic**: it gets no interval
and no p-value (it is reported as a measured value, never as evidence).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
POWER = 0.8
MAX_SEEDS = 1000  # "seeds needed" beyond this reads as "more than 1000"

Bounds = tuple[float, float] | None


@dataclass(frozen=True)
class Estimate:
    """A mean (or contrast, or slope) with its two-sided confidence interval.

    ``lo``/``hi`` are NaN when no interval exists (fewer than two values, or deterministic); ``note``
    says why. ``ns`` holds the number of values behind each group (seeds), ``n`` the smallest of them
    (for a paired contrast: the number of seeds with every group present). ``se``/``df`` give the
    t-statistic; ``sd`` is the spread of the per-seed values (paired: of the per-seed contrasts),
    ``var_examples`` the validation-sampling variance added to ``se``.
    """

    mean: float
    lo: float
    hi: float
    n: int
    df: float | None
    method: str  # "one-sample", "paired", "welch", "slope", "none"
    ns: tuple[int, ...] = ()
    note: str = ""
    confidence: float = CONFIDENCE
    se: float = math.nan
    sd: float = math.nan
    var_examples: float = 0.0
    deterministic: bool = False
    clipped: bool = False

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0 if self.has_interval else math.nan

    @property
    def testable(self) -> bool:
        """A t-statistic exists: finite mean, positive standard error, degrees of freedom."""
        return math.isfinite(self.mean) and math.isfinite(self.se) and self.se > 0 and bool(self.df)

    def shifted(self, offset: float) -> Estimate:
        return replace(self, mean=self.mean + offset, lo=self.lo + offset, hi=self.hi + offset)

    def at_level(self, confidence: float, bounds: Bounds = None) -> Estimate:
        """The same estimate with a ``confidence`` interval (e.g. a multiplicity-adjusted one)."""
        if not self.testable:
            return self
        lo, hi, clipped = _interval(self.mean, self.se, self.df, confidence, bounds)
        return replace(self, lo=lo, hi=hi, confidence=confidence, clipped=clipped)


@lru_cache(maxsize=8192)
def t_ppf(q: float, df: float) -> float:
    """``scipy.stats.t.ppf``, cached (the same few levels and df recur for every claim)."""
    return float(st.t.ppf(q, df))


def _interval(mean: float, se: float, df: float, confidence: float, bounds: Bounds) -> tuple[float, float, bool]:
    half = t_ppf(0.5 + confidence / 2.0, df) * se
    lo, hi = mean - half, mean + half
    if bounds is None:
        return lo, hi, False
    clo, chi = max(lo, bounds[0]), min(hi, bounds[1])
    return clo, chi, (clo, chi) != (lo, hi)


def _no_interval(mean: float, n: int, method: str, note: str, ns: tuple[int, ...] = ()) -> Estimate:
    return Estimate(mean, math.nan, math.nan, n, None, method, ns or (n,), note)


def _deterministic(mean: float, n: int, method: str, ns: tuple[int, ...], what: str = "seeds") -> Estimate:
    return Estimate(mean, math.nan, math.nan, n, None, method, ns, f"zero variance across {what}: deterministic",
                    se=0.0, sd=0.0, deterministic=True)


def _combined(mean: float, sd: float, n: int, df_seed: float, method: str, ns: tuple[int, ...], se_seed: float,
              var_examples: float, confidence: float, bounds: Bounds) -> Estimate:
    """t-interval from the seed standard error plus the (known) validation-sampling variance."""
    se = math.sqrt(se_seed**2 + var_examples)
    df = df_seed  # conservative: the seeds' df, so adding the example variance never narrows the interval
    lo, hi, clipped = _interval(mean, se, df, confidence, bounds)
    note = "interval clipped to the metric's bounds" if clipped else ""
    return Estimate(mean, lo, hi, n, df, method, ns, note, confidence, se, sd, var_examples, False, clipped)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, method: str = "one-sample",
            bounds: Bounds = None, var_examples: float = 0.0) -> Estimate:
    """Mean and t-interval ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` (plus ``var_examples``)."""
    xs = np.asarray([float(v) for v in values], dtype=float)
    n = len(xs)
    if n == 0:
        return _no_interval(math.nan, 0, "none", "no values")
    mean = float(xs.mean())
    if n < 2:
        return _no_interval(mean, n, method, "n=1: one seed gives no interval (need >= 2)")
    sd = float(xs.std(ddof=1))
    if sd == 0.0 or np.ptp(xs) <= 1e-12 * max(1.0, abs(mean)):
        return _deterministic(mean, n, method, (n,))
    return _combined(mean, sd, n, float(n - 1), method, (n,), sd / math.sqrt(n), var_examples, confidence, bounds)


def contrast_ci(
    groups: Sequence[Mapping[Hashable, float]],
    coeffs: Sequence[float],
    offset: float = 0.0,
    confidence: float = CONFIDENCE,
    bounds: Bounds = None,
    var_examples: float = 0.0,
) -> Estimate:
    """Estimate ``sum_i coeffs[i] * mean(groups[i]) + offset``.

    Each group maps a seed to a value. If every group holds the same (>= 2) seeds, the contrast
    is computed per seed and the interval is a one-sample t-interval over seeds ("paired").
    Otherwise the groups are independent samples: the standard error adds the groups' squared
    standard errors and the degrees of freedom follow Welch-Satterthwaite ("welch").
    """
    if len(groups) != len(coeffs) or not groups:
        raise ValueError("contrast_ci: need one coefficient per group")
    ns = tuple(len(g) for g in groups)
    if min(ns) == 0:
        return _no_interval(math.nan, 0, "none", "a group has no values", ns)
    keys = [set(g) for g in groups]
    if len(groups) > 1 and all(k == keys[0] for k in keys) and len(keys[0]) >= 2:
        per_seed = [math.fsum(c * g[s] for c, g in zip(coeffs, groups)) + offset for s in sorted(keys[0], key=str)]
        est = mean_ci(per_seed, confidence, "paired", bounds, var_examples)
        return replace(est, ns=ns)
    if len(groups) == 1:
        vals = [coeffs[0] * v + offset for v in groups[0].values()]
        return mean_ci(vals, confidence, "one-sample", bounds, var_examples)
    means = [math.fsum(g.values()) / len(g) for g in groups]
    mean = math.fsum(c * m for c, m in zip(coeffs, means)) + offset
    if min(ns) < 2:
        small = ", ".join(f"group {i + 1} n={n}" for i, n in enumerate(ns) if n < 2)
        return _no_interval(mean, min(ns), "welch", f"{small}: one seed gives no interval (need >= 2)", ns)
    parts = [(c * c * float(np.var(list(g.values()), ddof=1)) / len(g), len(g)) for c, g in zip(coeffs, groups)]
    se2 = math.fsum(v for v, _ in parts)
    if se2 == 0.0:
        return _deterministic(mean, min(ns), "welch", ns)
    df = se2 * se2 / math.fsum(v * v / (n - 1) for v, n in parts if v > 0)
    return _combined(mean, math.nan, min(ns), df, "welch", ns, math.sqrt(se2), var_examples, confidence, bounds)


def difference_ci(a: Mapping[Hashable, float], b: Mapping[Hashable, float], confidence: float = CONFIDENCE) -> Estimate:
    """mean(a) - mean(b): paired by seed when both have the same seeds, else Welch."""
    return contrast_ci([a, b], [1.0, -1.0], confidence=confidence)


def slope_ci(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Least-squares slope of y on x (``scipy.stats.linregress``) with its t-interval (n - 2 df).

    Pass one point per distinct x (replicates averaged first): the df are those of the x values.
    """
    n = len(x)
    if n != len(y):
        raise ValueError("slope_ci: x and y differ in length")
    if n < 2 or len(set(x)) < 2:
        return _no_interval(math.nan, n, "slope", "need at least two distinct x values")
    fit = st.linregress(x, y)
    slope = float(fit.slope)
    if n < 3:
        return _no_interval(slope, n, "slope", "n=2 points fit exactly: no interval for the slope (need >= 3)")
    se = float(fit.stderr)
    if se <= 1e-12 * max(1.0, abs(slope)):
        return _deterministic(slope, n, "slope", (n,), "the fitted points (exact line)")
    lo, hi, _ = _interval(slope, se, n - 2, confidence, None)
    return Estimate(slope, lo, hi, n, float(n - 2), "slope", (n,), "", confidence, se, math.nan)


# --- p-values ------------------------------------------------------------------------------
def p_greater(est: Estimate, x: float) -> float:
    """One-sided p for H0: effect <= x (small when the effect is clearly above x)."""
    return float(st.t.sf((est.mean - x) / est.se, est.df))


def p_less(est: Estimate, x: float) -> float:
    """One-sided p for H0: effect >= x."""
    return float(st.t.cdf((est.mean - x) / est.se, est.df))


def claim_p_values(est: Estimate, kind: str, margin: float | None = None) -> tuple[float, float]:
    """``(p_claim, p_opposite)`` for an oriented, testable estimate.

    - ``direction`` (a_better, gap_grows, a_above_chance): t-tests of effect > 0 and effect < 0;
    - ``not_worse``: non-inferiority, effect > -margin, against effect < -margin;
    - ``equivalent`` (also "at chance", the estimate being a - chance): TOST, -margin < effect <
      margin (the larger of the two one-sided p-values), against "outside the band" (the smaller
      one-sided p of effect < -margin and effect > margin, doubled for the two sides).
    """
    if kind == "direction":
        return p_greater(est, 0.0), p_less(est, 0.0)
    if margin is None or margin < 0:
        raise ValueError(f"claim_p_values: kind={kind} needs a margin >= 0")
    if kind == "not_worse":
        return p_greater(est, -margin), p_less(est, -margin)
    if kind == "equivalent":
        tost = max(p_greater(est, -margin), p_less(est, margin))
        outside = min(1.0, 2.0 * min(p_less(est, -margin), p_greater(est, margin)))
        return tost, outside
    raise ValueError(f"claim_p_values: unknown kind {kind!r}")


def decision_p(p_claim: float, p_opposite: float) -> float:
    """The p-value of "the data tell the claim from its opposite": twice the smaller one-sided p."""
    return min(1.0, 2.0 * min(p_claim, p_opposite))


# --- power -----------------------------------------------------------------------------------
def _z(alpha: float, df: float) -> float:
    return t_ppf(1.0 - alpha / 2.0, df) + t_ppf(POWER, df)


def min_detectable_effect(est: Estimate, alpha: float) -> float:
    """The effect this design detects with 80% power at two-sided level ``alpha`` (its spread, its n)."""
    if not est.testable:
        return math.nan
    return _z(alpha, est.df) * est.se


def seeds_needed(est: Estimate, alpha: float, target: float) -> int | None:
    """The fewest seeds (per group) that resolve ``target`` (> 0: the observed distance to the decision
    boundary) at 80% power, with the observed per-seed spread and the validation-sampling variance
    (which more seeds do not shrink). None when no number of seeds up to 1000 would."""
    if not est.testable or not math.isfinite(target) or target <= 0:
        return None
    sd = est.sd if math.isfinite(est.sd) else est.se * math.sqrt(max(est.n, 1))
    resolves = lambda n: _z(alpha, n - 1) * math.sqrt(sd * sd / n + est.var_examples) <= target
    if not resolves(MAX_SEEDS):
        return None
    lo, hi = 1, MAX_SEEDS  # resolves(hi) holds, and the criterion only gets easier with n: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if resolves(mid) else (mid, hi)
    return max(hi, 2)
