"""Statistics behind the verdicts: Student t quantiles, 95% t-intervals over seeds, paired and
Welch contrasts, a regression slope, and the verdict rules.

No scipy: the t distribution's CDF is the regularized incomplete beta function (continued
fraction, Numerical Recipes 6.4) and its quantile is found by bisection. Degrees of freedom may
be fractional (Welch-Satterthwaite).

The unit of replication is the seed: every contrast is computed from one value per seed and
group. When every group has the same seeds the contrast is paired (one difference per seed,
one-sample t-interval); otherwise the groups are treated as independent (Welch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

CONFIDENCE = 0.95

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
NOT_RESOLVED = "not resolved"
VERDICTS = (SUPPORTED, CONTRADICTED, NOT_RESOLVED)


# --- Student t ---------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _lgamma_ratio(a: float, b: float) -> float:
    """log(Gamma(a + b) / Gamma(a)), accurate also for large a (Stirling, no cancellation)."""
    if a < 1e4:
        return math.lgamma(a + b) - math.lgamma(a)
    return (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + (1.0 / (a + b) - 1.0 / a) / 12.0


def betainc(a: float, b: float, x: float, one_minus_x: float | None = None) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1.

    ``one_minus_x`` may pass 1 - x computed without cancellation (x close to 1).
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} outside [0, 1]")
    y = 1.0 - x if one_minus_x is None else one_minus_x
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    big, small = (a, b) if a >= b else (b, a)
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    log_front = _lgamma_ratio(big, small) - math.lgamma(small) + a * log_x + b * log_y
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df may be fractional)."""
    if df <= 0:
        raise ValueError(f"t_cdf: df={df} must be > 0")
    if df > 1e10:  # |t - z| < 1e-10 here
        return normal_cdf(t)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def _bisect_quantile(cdf, p: float) -> float:
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -_bisect_quantile(cdf, 1.0 - p)
    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t; e.g. ``t_quantile(0.975, 2) == 4.3027...``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p={p} must be in (0, 1)")
    if df <= 0:
        raise ValueError(f"t_quantile: df={df} must be > 0")
    return _bisect_quantile(lambda t: t_cdf(t, df), p)


# --- estimates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """A mean (or contrast, or slope) with its two-sided confidence interval.

    ``lo``/``hi`` are NaN when no interval exists (fewer than two values); ``note`` says why.
    ``ns`` holds the number of values behind each group (seeds), ``n`` the smallest of them
    (for a paired contrast: the number of seeds with every group present).
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

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0 if self.has_interval else math.nan

    def shifted(self, offset: float) -> Estimate:
        return Estimate(
            self.mean + offset, self.lo + offset, self.hi + offset, self.n, self.df, self.method,
            self.ns, self.note, self.confidence,
        )


def _no_interval(mean: float, n: int, method: str, note: str, ns: tuple[int, ...] = ()) -> Estimate:
    return Estimate(mean, math.nan, math.nan, n, None, method, ns or (n,), note)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, method: str = "one-sample") -> Estimate:
    """Mean and t-interval: mean ± t_{(1+c)/2, n-1} · s / sqrt(n)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return _no_interval(math.nan, 0, "none", "no values")
    mean = math.fsum(xs) / n
    if n < 2:
        return _no_interval(mean, n, method, "n=1: one seed gives no interval (need >= 2)")
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * math.sqrt(var / n)
    note = "zero variance across seeds" if var == 0.0 else ""
    return Estimate(mean, mean - half, mean + half, n, float(n - 1), method, (n,), note, confidence)


def contrast_ci(
    groups: Sequence[Mapping[Hashable, float]],
    coeffs: Sequence[float],
    offset: float = 0.0,
    confidence: float = CONFIDENCE,
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
    keys = [set(g.keys()) for g in groups]
    if len(groups) > 1 and all(k == keys[0] for k in keys) and len(keys[0]) >= 2:
        per_seed = [math.fsum(c * g[s] for c, g in zip(coeffs, groups)) + offset for s in sorted(keys[0], key=str)]
        est = mean_ci(per_seed, confidence, method="paired")
        return Estimate(est.mean, est.lo, est.hi, est.n, est.df, "paired", ns, est.note, confidence)
    means = [math.fsum(g.values()) / len(g) for g in groups]
    mean = math.fsum(c * m for c, m in zip(coeffs, means)) + offset
    if len(groups) == 1:
        est = mean_ci(list(groups[0].values()), confidence)
        return est.shifted(offset) if coeffs[0] == 1 else _scaled(est, coeffs[0], offset)
    if min(ns) < 2:
        small = ", ".join(f"group {i + 1} n={n}" for i, n in enumerate(ns) if n < 2)
        return _no_interval(mean, min(ns), "welch", f"{small}: one seed gives no interval (need >= 2)", ns)
    parts = []
    for c, g, m in zip(coeffs, groups, means):
        n = len(g)
        var = math.fsum((x - m) ** 2 for x in g.values()) / (n - 1)
        parts.append((c * c * var / n, n))
    se2 = math.fsum(v for v, _ in parts)
    if se2 == 0.0:
        df = float(sum(n - 1 for _, n in parts))
        return Estimate(mean, mean, mean, min(ns), df, "welch", ns, "zero variance across seeds", confidence)
    df = se2 * se2 / math.fsum(v * v / (n - 1) for v, n in parts if v > 0)
    half = t_quantile(0.5 + confidence / 2.0, df) * math.sqrt(se2)
    return Estimate(mean, mean - half, mean + half, min(ns), df, "welch", ns, "", confidence)


def _scaled(est: Estimate, c: float, offset: float) -> Estimate:
    lo, hi = sorted((c * est.lo, c * est.hi))
    return Estimate(c * est.mean + offset, lo + offset, hi + offset, est.n, est.df, est.method, est.ns, est.note,
                    est.confidence)


def difference_ci(a: Mapping[Hashable, float], b: Mapping[Hashable, float], confidence: float = CONFIDENCE) -> Estimate:
    """mean(a) - mean(b): paired by seed when both have the same seeds, else Welch."""
    return contrast_ci([a, b], [1.0, -1.0], confidence=confidence)


def slope_ci(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Least-squares slope of y on x with its t-interval (n - 2 degrees of freedom)."""
    n = len(x)
    if n != len(y):
        raise ValueError("slope_ci: x and y differ in length")
    if n < 2 or len(set(x)) < 2:
        return _no_interval(math.nan, n, "slope", "need at least two distinct x values")
    mx, my = math.fsum(x) / n, math.fsum(y) / n
    sxx = math.fsum((xi - mx) ** 2 for xi in x)
    sxy = math.fsum((xi - mx) * (yi - my) for xi, yi in zip(x, y))
    slope = sxy / sxx
    if n < 3:
        return _no_interval(slope, n, "slope", "n=2 points fit exactly: no interval for the slope (need >= 3)")
    resid = math.fsum((yi - my - slope * (xi - mx)) ** 2 for xi, yi in zip(x, y))
    se = math.sqrt(resid / (n - 2) / sxx)
    half = t_quantile(0.5 + confidence / 2.0, n - 2) * se
    return Estimate(slope, slope - half, slope + half, n, float(n - 2), "slope", (n,), "", confidence)


# --- verdicts ----------------------------------------------------------------------------
def verdict(
    est: Estimate, expect: str, margin: float | None = None, show: Callable[[float], str] | None = None
) -> tuple[str, str]:
    """Turn an oriented estimate into (verdict, one-line reason).

    The estimate is oriented so that a positive value is the claimed direction, except for
    ``equivalent`` (claim: |effect| <= margin) and ``a_at_chance`` (the estimate is a's mean minus
    chance; claim: within ±margin of chance, with chance inside the CI).

    - ``a_better``/``gap_grows``/``a_above_chance``: supported when the CI excludes 0 on the
      positive side, contradicted when it excludes 0 on the negative side, else not resolved.
    - ``a_not_worse``: supported when the CI's lower end is above -margin, contradicted when the
      whole CI is below -margin.
    - ``equivalent``: supported when the CI lies inside ±margin, contradicted when it lies
      entirely outside it (beyond +margin or beyond -margin), else not resolved.
    - ``a_at_chance``: supported when |mean - chance| <= margin and the CI includes chance,
      contradicted when the CI lies entirely outside chance ± margin.

    ``show`` formats numbers in the reason (e.g. log effects as ratios); default ``{:.4g}``.
    """
    f = show or (lambda x: f"{x:.4g}")
    if not est.has_interval:
        why = est.note or f"n={est.n}"
        return NOT_RESOLVED, f"no confidence interval ({why})"
    lo, hi = est.lo, est.hi
    ci = f"{_pct(est.confidence)} CI [{f(lo)}, {f(hi)}]"
    if expect in ("a_better", "gap_grows", "a_above_chance"):
        if lo > 0:
            return SUPPORTED, f"{ci} lies above {f(0.0)} (the claimed direction)"
        if hi < 0:
            return CONTRADICTED, f"{ci} lies below {f(0.0)} (opposite to the claim)"
        return NOT_RESOLVED, f"{ci} includes {f(0.0)}"
    if margin is None or margin < 0:
        raise ValueError(f"verdict: expect={expect} needs a margin >= 0")
    band = f"[{f(-margin)}, {f(margin)}]"
    if expect == "a_not_worse":
        if lo > -margin:
            return SUPPORTED, f"{ci} lies above {f(-margin)} (a is not worse than b by more than the margin)"
        if hi < -margin:
            return CONTRADICTED, f"{ci} lies below {f(-margin)} (a is worse than b by more than the margin)"
        return NOT_RESOLVED, f"{ci} straddles {f(-margin)}"
    if expect == "equivalent":
        if -margin <= lo and hi <= margin:
            return SUPPORTED, f"{ci} lies inside the equivalence band {band}"
        if lo > margin or hi < -margin:
            return CONTRADICTED, f"{ci} lies entirely outside the equivalence band {band}"
        return NOT_RESOLVED, f"{ci} is not inside the equivalence band {band} (too wide or straddling it)"
    if expect in ("at_chance", "a_at_chance"):
        if abs(est.mean) <= margin and lo <= 0.0 <= hi:
            return SUPPORTED, (f"mean is {est.mean:+.4g} from chance (within ±{margin:g}) and the {ci} "
                               "(offset from chance) includes 0")
        if lo > margin or hi < -margin:
            return CONTRADICTED, f"{ci} (offset from chance) lies entirely outside ±{margin:g}"
        return NOT_RESOLVED, f"{ci} (offset from chance) neither includes chance within ±{margin:g} nor excludes it"
    raise ValueError(f"verdict: unknown expect={expect!r}")


def _pct(c: float) -> str:
    return f"{100 * c:g}%"
