"""The report's verdict tables, one per tier, and the negative controls' false-support rate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .document import Block, Heading, Para, Table
from .formatting import effect_label, format_effect
from .results import ClaimResult
from .verdicts import (
    ADJUSTMENT,
    ALPHA,
    CONTRADICTED,
    COUNTED_TIERS,
    NOT_RUN,
    TIERS,
    VERDICTS,
    false_support_rate,
)

TIER_TITLES = {
    "primary": "Primary claims (one per question; Holm over the six, family-wise 5%)",
    "secondary": "Secondary claims (Benjamini-Hochberg, false-discovery rate 10%)",
    "check": "Checks (the manipulation worked, a symmetry holds; not counted as findings)",
    "control": "Negative controls (null comparisons of known truth)",
}
HEADERS = ["id", "Q", "claim", "effect [adjusted CI]", "CI level", "effect is", "n", "p", "p adjusted",
           "interval", "literature (direction — anchor)", "verdict"]


def n_text(r: ClaimResult) -> str:
    e = r.estimate
    if e is None:
        return "0"
    if e.method in ("paired", "one-sample", "slope") or len(e.ns) <= 1:
        return str(e.n)
    return "/".join(map(str, e.ns))


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def claim_row(r: ClaimResult) -> list[str]:
    c, s = r.claim, r.shown
    level = f"{100 * s.confidence:.4g}%" if s is not None and s.has_interval else "—"
    interval = "seeds + examples" if r.interval.startswith("seeds +") else "seeds only"
    return [f"[{c.id}](#{c.id})", c.question.upper(), c.claim, format_effect(c, s), level, effect_label(c),
            n_text(r), _p(r.tested.p if r.tested else None), _p(r.p_adjusted), interval,
            f"{c.literature_direction} — {c.literature_anchor}", r.verdict or ""]


def verdict_counts(results: Sequence[ClaimResult]) -> dict[str, Counter]:
    """tier -> Counter of verdicts."""
    out = {t: Counter() for t in TIERS}
    for r in results:
        out[r.claim.tier][r.verdict] += 1
    return out


def counts_text(counts: Counter) -> str:
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]) or "none"


def control_rate(results: Sequence[ClaimResult]) -> tuple[str, tuple]:
    """One sentence on the controls' false-support rate, and the numbers behind it."""
    controls = [r for r in results if r.claim.tier == "control"]
    tested = [r.verdict for r in controls if r.tested is not None]
    k, n, rate, lo, hi = false_support_rate(tested)
    untested = len(controls) - len(tested)
    if n == 0:
        text = (f"No control could be tested ({len(controls)} controls, none with an interval): "
                "no false-support rate at this budget.")
        return text, (k, n, rate, lo, hi)
    wrong_way = sum(v == CONTRADICTED for v in tested)
    text = (f"**False-support rate: {k}/{n} = {rate:.0%}** (exact binomial 95% CI [{lo:.0%}, {hi:.0%}]; goal ≤ 5%) "
            f"over the {n} controls with an interval"
            + (f" ({untested} more were not tested: {_untested_why(controls)})" if untested else "")
            + f". {wrong_way} control(s) were called contradicted (also a false finding under a null).")
    return text, (k, n, rate, lo, hi)


def _untested_why(controls: Sequence[ClaimResult]) -> str:
    """Why the controls without a test had none, by verdict (e.g. "2 not resolved — cannot discriminate")."""
    why = Counter(r.verdict for r in controls if r.tested is None)
    return ", ".join(f"{n} {verdict}" for verdict, n in sorted(why.items()))


def claim_tables(results: Sequence[ClaimResult]) -> list[Block]:
    """A heading and a table per tier (primary, secondary, checks, controls)."""
    blocks: list[Block] = []
    counts = verdict_counts(results)
    for tier in TIERS:
        rows = [claim_row(r) for r in results if r.claim.tier == tier]
        if not rows:
            continue
        blocks.append(Heading(2, TIER_TITLES[tier], anchor=f"tier-{tier}"))
        note = (f"Verdicts from p-values adjusted by {ADJUSTMENT[tier]} at {ALPHA[tier]:g}; intervals at the adjusted "
                "level." if tier in COUNTED_TIERS else f"Unadjusted, at {ALPHA[tier]:g}.")
        blocks.append(Para(f"{note} {counts_text(counts[tier])}."))
        blocks.append(Table(HEADERS, rows))
        if tier == "control":
            blocks.append(Para(control_rate(results)[0]))
    missing = [r.claim.id for r in results if r.verdict == NOT_RUN and r.claim.tier in COUNTED_TIERS]
    if missing:
        blocks.append(Para(f"Not run (no runs yet): {', '.join(missing)}."))
    return blocks
