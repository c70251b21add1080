"""The forest plot that opens the report: every counted (primary and secondary) claim, grouped by
question, with its effect and its multiplicity-adjusted interval.

Effects are in their own units (accuracy differences, log ratios, slopes), so each claim gets its
own row and x-scale. Every effect is oriented so that right of 0 is the literature's direction;
equivalence claims shade their ±margin band instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .formatting import margin_of
from .results import ClaimResult
from .verdicts import CONTRADICTED, COUNTED_TIERS, SUPPORTED, TEST_KIND

COLOURS = {SUPPORTED: "tab:green", CONTRADICTED: "tab:red"}


def _row(ax, r: ClaimResult) -> None:
    est, shown, c = r.estimate, r.shown, r.claim
    margin = margin_of(c)
    equivalence = TEST_KIND[c.expect] in ("equivalent", "not_worse")
    xs = [0.0]
    if est is not None and math.isfinite(est.mean):
        xs.append(est.mean)
    if shown is not None and shown.has_interval:
        xs += [shown.lo, shown.hi]
    if equivalence and margin is not None:
        xs += [-margin, margin]
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.15 or 1.0
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-1, 1)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    if equivalence and margin is not None:
        right = margin if TEST_KIND[c.expect] == "equivalent" else hi + pad  # not worse: everything above -margin
        ax.axvspan(-margin, right, color="tab:green", alpha=0.12, linewidth=0)
    else:
        ax.axvspan(0.0, hi + pad, color="tab:green", alpha=0.06, linewidth=0)
    colour = COLOURS.get(r.verdict or "", "0.35")
    if est is None or not math.isfinite(est.mean):
        ax.text(0.5, 0.5, f"{r.verdict}: {r.reason}"[:110], transform=ax.transAxes, ha="center", va="center",
                fontsize=6.5, color="0.4")
        ax.set_xticks([])
    elif shown is not None and shown.has_interval:
        ax.errorbar([est.mean], [0], xerr=[[est.mean - shown.lo], [shown.hi - est.mean]], fmt="o", color=colour,
                    capsize=3, markersize=4)
    else:
        ax.plot([est.mean], [0], marker="D", color=colour, markersize=4)
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=6, length=2, pad=1)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_ylabel(f"{c.id}\n{r.verdict}", rotation=0, ha="right", va="center", fontsize=6.5, labelpad=4)


def forest_plot(results: Sequence[ClaimResult], path: Path) -> tuple[Path, str]:
    """Draw the forest plot; returns its path and caption."""
    rows = [r for r in results if r.claim.tier in COUNTED_TIERS]
    rows.sort(key=lambda r: (r.claim.question, r.claim.tier != "primary"))
    fig = Figure(figsize=(8.5, 0.5 + 0.42 * max(len(rows), 1)), dpi=100)
    FigureCanvasAgg(fig)
    if not rows:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no primary or secondary claims", ha="center", va="center")
        ax.axis("off")
    else:
        axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
        last_q = None
        for ax, r in zip(axes, rows):
            _row(ax, r)
            if r.claim.question != last_q:
                ax.set_title(r.claim.question.upper() + (" (primary first)" if last_q is None else ""), fontsize=8,
                             loc="left", pad=2)
                last_q = r.claim.question
    fig.subplots_adjust(left=0.42, right=0.98, top=1 - 0.35 / fig.get_figheight(), bottom=0.25 / fig.get_figheight(),
                        hspace=1.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    ns = sorted({r.estimate.n for r in rows if r.estimate is not None})
    caption = (f"Every counted claim ({len(rows)}: primary, then secondary, by question), each on its own x-scale "
               "(its effect's units; log effects are log ratios). Right of 0 is the literature's direction (shaded); "
               "equivalence claims shade their ±margin band. Bars: t-intervals over seeds (plus validation-example "
               "bootstrap where recorded), each at the level its adjusted test used, 1 − α·p/p_adjusted (Holm at α = 0.05 "
               "for primaries, Benjamini-Hochberg at α = 0.10 for secondaries), so a bar clears the decision "
               "boundary exactly when the verdict is a finding; ◆ = deterministic (no interval). "
               f"n = {', '.join(map(str, ns)) or '0'} seeds (or benchmark cells) per claim.")
    return path, caption
