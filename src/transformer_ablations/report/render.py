"""Build the report's document (:mod:`.document` blocks) and the Rich console table of verdicts.

The document opens with the forest plot of the counted claims, then the primary table, the
secondary table, the checks and the negative controls (:mod:`.tables`), then one section per
question with its figures and every claim in detail.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .claims import Claim
from .collect import RunCollection, RunRecord, fmt_point, fmt_value, missing_points, varying_keys
from .document import Block, Bullets, Heading, Image, Para, Table
from .figures import Q5_LABELS, QUESTION_SWEEPS, FigureResult, q5_table, sep_segments_table
from .forest import forest_plot
from .formatting import effect_label, format_effect
from .lr_choices import lr_choice_blocks
from .real_figures import SUITE_SWEEPS, SUITE_TEXTS
from .results import ClaimResult
from .tables import claim_tables, control_rate, counts_text, n_text, verdict_counts
from .verdicts import (
    ADJUSTMENT,
    ALPHA,
    CANNOT_DISCRIMINATE,
    CONTRADICTED,
    COUNTED_TIERS,
    DETERMINISTIC,
    NOT_RUN,
    SUPPORTED,
    TIERS,
    UNDERPOWERED,
    holds,
)

QUESTIONS: dict[str, tuple[str, str]] = {
    "q1": (
        "Q1 — Does the 1/√d_k scaling matter?",
        (
            "1/√d_k keeps the attention logits small; without it softmax saturates, attention concentrates, "
            "and training is unstable and worse (toggle `model.attention.scaling` across `model.head_dim`)."
        ),
    ),
    "q2": (
        "Q2 — Does a Transformer need positional information?",
        (
            "Without positions, “machine translating” = “translating machine” (toggles `model.positional` × "
            "`model.arch`; an order-only task and evaluation at 2T, 4T)."
        ),
    ),
    "q3": (
        "Q3 — Self-attention vs encoder-decoder cross-attention",
        (
            "Queries, keys and values from one sequence (prefix-LM decoder) vs queries from the decoder and "
            "keys/values from the encoder (cross-attention), and a cross-attention that sees only a pooled "
            "encoder state (toggles `model.arch`, `model.cross_attention`)."
        ),
    ),
    "q4": (
        "Q4 — Scaled dot-product vs additive attention",
        (
            "Scaled dot-product attention beats additive (Bahdanau) attention: faster, less memory, better "
            "(toggle `model.attention.kind` × scaling × d_k, plus the attention-cost benchmark)."
        ),
    ),
    "q5": (
        "Q5 — MLM+NSP (BERT) vs causal LM (GPT) pretraining",
        (
            "Both objectives give useful representations (toggle `objective`, same corpus and budget, then "
            "fine-tuning on a single-sentence and a sentence-pair task)."
        ),
    ),
    "q6": (
        "Q6 — What do [CLS] and [SEP] do?",
        (
            "[CLS] collects the sequence for classification; [SEP] separates segments (toggles "
            "`finetune.pooling` × `finetune.mode` on Q5 checkpoints)."
        ),
    ),
}


# --- pieces ------------------------------------------------------------------------------
def _group_value(c: Claim, e) -> str:
    if not math.isfinite(e.mean):
        return "no values"
    if c.scale == "log":
        return f"geometric mean {math.exp(e.mean):.4g}"
    if e.has_interval:
        return f"{e.mean:.4f} [{e.lo:.4f}, {e.hi:.4f}]"
    return f"{e.mean:.4f}" + (" (deterministic)" if e.deterministic else " (no CI)")


def _claim_blocks(r: ClaimResult) -> list[Block]:
    c = r.claim
    where = f"sweep `{c.sweep}`" if c.source == "runs" else "attention-cost benchmark"
    items = [
        f"**Claim** ({c.tier}{f', control: {c.control}' if c.control else ''}): {c.claim}",
        f"**Measured on:** {where}, metric `{c.metric}` ({'higher' if c.higher_is_better else 'lower'} is the "
        f"claimed direction for a); a = {fmt_point(c.a) or '—'}"
        + (f"; b = {fmt_point(c.b)}" if c.b else "")
        + (f"; condition {fmt_point(c.condition)}" if c.condition else "")
        + (f"; along {fmt_point(c.along)}" if c.along else ""),
        f"**Expectation:** {_expect_text(c)}",
    ]
    items.extend(f"{g.label}: {_group_value(c, g.estimate)}, n={len(g.values)}" for g in r.groups)
    est = r.estimate
    method = f" ({est.method}, df={est.df:.3g})" if est is not None and est.df is not None else (
        f" ({est.method})" if est is not None else "")
    items.append(f"**Effect** ({effect_label(c)}): {format_effect(c, est)} at 95%{method}; interval from "
                 f"{r.interval}")
    if r.adjusted is not None and r.adjusted.confidence != (est.confidence if est else None):
        items.append(f"**Adjusted interval** ({ADJUSTMENT[c.tier]}, {100 * r.adjusted.confidence:.4g}%): "
                     f"{format_effect(c, r.adjusted)}")
    if r.tested is not None:
        items.append(f"**p** = {r.tested.p:.3g} (claim's one-sided test {r.tested.p_claim:.3g}, opposite "
                     f"{r.tested.p_opposite:.3g})" + (f"; {ADJUSTMENT[c.tier]}-adjusted {r.p_adjusted:.3g} "
                                                     f"(level {ALPHA[c.tier]:g})" if r.p_adjusted is not None
                                                     and ADJUSTMENT[c.tier] != "none" else ""))
    items.append(f"**Verdict: {r.verdict}** — {r.reason}")
    if c.tier in COUNTED_TIERS:
        items.append(f"**At this scale:** {at_this_scale(r)}")
    items.append(f"**Literature:** {c.literature_direction} — {c.literature_anchor}")
    items.extend(r.details)
    if est is not None and est.note:
        items.append(f"note: {est.note}")
    if c.note:
        items.append(f"note: {c.note}")
    blocks: list[Block] = [Heading(4, f"{c.id} — {r.verdict}", anchor=c.id), Bullets(items)]
    if c.imprecision:
        blocks.append(Para(f"**Imprecise wording.** {c.imprecision} **What the data shows:** {_data_says(r)}"))
    return blocks


def _expect_text(c: Claim) -> str:
    m, ch = c.margin, c.chance
    if c.control:
        return "none: a null comparison (supported or contradicted here is a false finding)"
    if c.expect == "a_better":
        return "a better than b (t-test of the oriented effect)"
    if c.expect == "a_not_worse":
        return f"a not worse than b by more than {m:g} (non-inferiority t-test)"
    if c.expect == "equivalent":
        return f"equivalent: |effect| ≤ {m:g}" + (" (relative)" if c.scale == "log" else "") + " (TOST)"
    if c.expect == "a_at_chance":
        return f"a at chance ({ch:g}): within ±{m:g} of chance (TOST against chance ± margin)"
    if c.expect == "a_above_chance":
        return f"a {'above' if c.higher_is_better else 'below'} chance ({ch:g})"
    if c.expect == "gap_grows":
        return "the effect grows along " + (fmt_point(c.along) if c.along else "?")
    return c.expect


def at_this_scale(r: ClaimResult) -> str:
    """In plain words, whether the literature's direction reproduced here, and what the data shows."""
    c, est = r.claim, r.estimate
    if r.verdict == SUPPORTED:
        return "reproduced"
    if r.verdict == CONTRADICTED:
        return f"reversed: the data favour the opposite ({format_effect(c, r.shown)})"
    if est is None or not math.isfinite(est.mean):
        return f"not measured ({r.reason})"
    arms = "; ".join(f"{g.label} = {_group_value(c, g.estimate)}" for g in r.groups)
    if r.verdict == CANNOT_DISCRIMINATE:
        return f"cannot be read: {r.reason} ({arms})"
    agrees = holds(est, c.expect, c.margin)
    lean = "leans the claimed way" if agrees else "leans the other way"
    return f"not reproduced at this scale: the estimate {lean} but is not significant ({format_effect(c, r.shown)}; {arms})"


def _data_says(r: ClaimResult) -> str:
    if r.estimate is None:
        return f"not measured yet ({r.reason})."
    return f"{effect_label(r.claim)} = {format_effect(r.claim, r.shown)}, n={n_text(r)} → {r.verdict}."


def divergence_table(runs: Sequence[RunRecord], grid: Mapping[str, Sequence] | None) -> Table | None:
    """Divergence rate per grid cell (all grid keys but seed)."""
    if not runs:
        return None
    keys = [k for k in (grid or {}) if k != "seed" and len((grid or {})[k]) > 1] or list(
        varying_keys(runs, exclude=("seed",)))
    cells: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in runs:
        cells[tuple(fmt_value(r.config.get(k)) for k in keys)].append(r)
    rows = []
    for cell in sorted(cells, key=lambda t: tuple(x.zfill(8) for x in t)):
        rs = cells[cell]
        done = [r for r in rs if r.status in ("finished", "diverged")]
        div = [r for r in rs if r.status == "diverged"]
        steps = ", ".join(str(r.diverged_step) for r in div if r.diverged_step is not None) or "—"
        rate = f"{len(div) / len(done):.0%}" if done else "—"
        rows.append([*cell, str(len(done)), str(len(div)), rate, steps])
    return Table([k.split(".")[-1] for k in keys] + ["runs ended", "diverged", "divergence rate", "diverged at step"],
                 rows)


def missing_blocks(coll: RunCollection, grids: Mapping[str, Mapping], expected: Mapping[str, list[dict]],
                   sweeps: Sequence[str], sweeps_dir: Path, cost_needed: bool) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Missing and diverged runs", anchor="missing"),
        Para("A grid point (from the sweep file's `parameters`, seeds included) is missing when no run of it "
             "finished or diverged. Diverged runs are results (their last recorded metrics count) and are also "
             "listed below; failed and unfinished runs do not count."),
    ]
    by_sweep = coll.by_sweep()
    summary, miss_rows = [], []
    for s in sweeps:
        runs = by_sweep.get(s, [])
        grid, points = grids.get(s), expected.get(s)
        if grid is None or points is None:
            summary.append([s, "—", str(len(runs)), "—", f"no readable {sweeps_dir / (s + '.yaml')}: expected grid unknown"])
            continue
        missing = missing_points(points, runs)
        varying = [k for k, v in grid.items() if len(v) > 1]
        summary.append([s, str(len(points)), str(len(runs)), str(len(missing)), ""])
        for point, statuses in missing:
            shown = {k: point[k] for k in varying if k in point} or point
            miss_rows.append([s, fmt_point(shown), ", ".join(statuses) or "no record"])
    blocks.append(Table(["sweep", "expected grid points", "run records", "missing points", "note"], summary))
    if miss_rows:
        blocks.append(Heading(3, "Missing grid points"))
        blocks.append(Table(["sweep", "grid point", "records found"], miss_rows))
    else:
        blocks.append(Para("No expected grid point is missing."))
    bad = [r for r in coll.runs if r.status not in ("finished",)]
    blocks.append(Heading(3, "Diverged, failed and unfinished runs"))
    if bad:
        rows = []
        for r in sorted(bad, key=lambda r: (r.sweep, r.status, r.run_id)):
            grid = grids.get(r.sweep) or {}
            keys = [k for k, v in grid.items() if len(v) > 1] or list(varying_keys(by_sweep.get(r.sweep, [])))
            cfg = fmt_point({k: r.config.get(k) for k in keys if k in r.config})
            err = (str(r.error).splitlines() or [""])[0][:160] if r.error else ""
            rows.append([r.sweep, r.run_id, cfg, r.status, "" if r.diverged_step is None else str(r.diverged_step), err])
        blocks.append(Table(["sweep", "run", "config", "status", "diverged_step", "error"], rows))
    else:
        blocks.append(Para("None: every run record finished."))
    if coll.corrupt:
        blocks.append(Heading(3, "Unreadable run records"))
        blocks.append(Bullets([f"`{p}`: {why}" for p, why in coll.corrupt]))
    if cost_needed:
        if coll.attention_cost is None:
            why = coll.attention_cost_error or "file not found"
            blocks.append(Para(f"Attention-cost benchmark `{coll.root / 'q4_attention_cost.json'}`: {why}; "
                               "Q4's speed and memory claims are not resolved."))
        else:
            blocks.append(Para(f"Attention-cost benchmark: {len(coll.attention_cost)} rows read from "
                               f"`{coll.attention_cost_path}`."))
    return blocks


# --- the document ------------------------------------------------------------------------
def _q5_blocks(by_sweep: Mapping, grid: Mapping[str, Sequence] | None) -> list[Block]:
    """The BERT-Table-5-style table of Q5, with the literature's numbers and BERT's NSP accuracy."""
    headers, rows = q5_table(by_sweep, grid)
    return [Heading(3, "Results per pretraining objective (BERT Table 5 style)"), Table(headers, rows),
            Para(f"Cells: mean ± 95% CI half-width over seeds (n seeds), fine-tuned with {Q5_LABELS} labels. For "
                 "comparison, BERT Table 5 (MNLI/QNLI/MRPC/SST-2/SQuAD): BERT-base 84.4/88.4/86.7/92.7/88.5, no NSP "
                 "83.9/84.9/86.5/92.6/87.9, left-to-right & no NSP 82.1/84.3/77.5/92.1/77.8. BERT's NSP accuracy "
                 "is 97-98% (§3.1). The synthetic corpus caps it far lower: half of its NSP negatives come from "
                 "another document of the same topic, which keeps the mood half the time, and is then a true "
                 "continuation in everything the generator varies; a reader of every unmasked topic and polar "
                 "word is right on about 0.80 of the pairs, on about 0.75 with 40% of the words masked.")]


def _q6_blocks(runs: Sequence[RunRecord], grid: Mapping[str, Sequence] | None) -> list[Block]:
    """How Q6's modes are matched, and the [SEP] x segment-embeddings table (or why there is none)."""
    blocks: list[Block] = [Para(
        "Pooling claims are made within one pretraining objective, never averaged across objectives. The frozen "
        "probe and full fine-tuning have matched budgets: the same steps, batch and schedule, each arm at its own "
        "lr chosen on a held-out selection split over the same grid (the lr table above; never on the reported "
        "validation split), so a gap between the modes is the frozen encoder's, not the optimiser's.")]
    if not {"data.pair_format", "model.segment_embeddings"} <= set(grid or {}):
        return [*blocks, Para("The [SEP] half of the question (`data.pair_format` sep/concat x "
                              "`model.segment_embeddings`) has no sweep grid (sweeps/q6_sep_segments.yaml), so no "
                              "[SEP] claim is measured here.")]
    headers, rows = sep_segments_table(runs, grid)
    return [*blocks, Heading(3, "[SEP] x segment embeddings (pair tagging, no boundary word)"), Table(headers, rows),
            Para("Cells: mean ± 95% CI half-width over seeds of the pair-tagging accuracy (chance 0.5); each cell "
                 "fine-tunes an MLM encoder pretrained with the same segment-embeddings setting. concat rows are "
                 "all segment 0, so under concat nothing marks where B begins, and the words do not tell it either "
                 "(three alike clauses, B from the second or the third): no reader tags more than 5/6 of A's "
                 "words right there, against 1.0 with [SEP] or segment ids.")]


def _question_blocks(q: str, title: str, text: str, by_sweep: Mapping, results: Sequence[ClaimResult],
                     figures: Mapping[str, Sequence[FigureResult]], grids: Mapping[str, Mapping],
                     suite: str) -> list[Block]:
    """The section of one question: its figures, its tables, its claims (the suite's sweeps and texts)."""
    question_sweeps = SUITE_SWEEPS.get(suite, QUESTION_SWEEPS)
    blocks: list[Block] = []
    blocks.append(Heading(2, title, anchor=q))
    own = SUITE_TEXTS.get(suite, {}).get(q)  # the real suite measures the question on other tasks
    blocks.append(Para(f"Measured here: {own}" if own else f"Claim under test: {text}"))
    seeds = sorted({r.seed for sw in question_sweeps.get(q, ()) for r in by_sweep.get(sw, [])}, key=str)
    for f in figures.get(q, []):
        blocks.append(Image(f.path, f"{f.title}. {_figure_caption(f.name, len(seeds))}", list(f.notes)))
    if q == "q1":
        blocks.append(Heading(3, "Divergence (a finding, not a failure)"))
        t = divergence_table(by_sweep.get(question_sweeps["q1"][0], []), grids.get(question_sweeps["q1"][0]))
        blocks.append(t if t else Para("No Q1 run records."))
    blocks.extend(lr_choice_blocks(question_sweeps.get(q, ()), by_sweep, grids))
    if q == "q5" and "q5_finetune" in question_sweeps["q5"]:
        blocks.extend(_q5_blocks(by_sweep, grids.get("q5_finetune")))
    if q == "q6" and "q6_cls_sep" in question_sweeps["q6"]:
        blocks.extend(_q6_blocks(by_sweep.get("q6_sep_segments", []), grids.get("q6_sep_segments")))
    q_results = [r for r in results if r.claim.question == q]
    blocks.append(Heading(3, "Claims"))
    if not q_results:
        blocks.append(Para("No claims for this question."))
    for r in q_results:
        blocks.extend(_claim_blocks(r))
    return blocks


def build_document(
    suite: str,
    coll: RunCollection,
    results: Sequence[ClaimResult],
    figures: Mapping[str, Sequence[FigureResult]],
    grids: Mapping[str, Mapping],
    expected: Mapping[str, list[dict]],
    sweeps_dir: Path,
    report_dir: Path,
) -> list[Block]:
    counts = verdict_counts(results)
    by_sweep = coll.by_sweep()
    counted = sum((counts[t] for t in COUNTED_TIERS), Counter())
    forest, caption = forest_plot(results, report_dir / "figures" / "forest.png")
    seed_only = [r.claim.id for r in results if r.estimate is not None and not r.interval.startswith("seeds +")
                 and r.claim.source == "runs" and r.claim.metric.startswith("val")]
    blocks: list[Block] = [
        Heading(1, f"Transformer ablations — report for suite `{suite}`"),
        Para(f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(coll.runs)} run records in "
             f"{len(coll.sweeps)} sweeps under `{coll.root}`"
             + (f" ({len(coll.corrupt)} unreadable)" if coll.corrupt else "")
             + f". Counted claims (primary + secondary): **{counts_text(counted)}**. Checks: "
               f"{counts_text(counts['check'])}. " + control_rate(results)[0]),
        Image(forest, caption),
        Para(HOW_TO_READ + (f" **Validation sampling:** {len(seed_only)} validation-metric claim(s) have no "
                            "per-example outcomes (runs older than the per-example records, or sharded): their "
                            "intervals cover seeds only and understate the uncertainty." if seed_only else "")),
        *claim_tables(results),
        *_not_reproduced_blocks(results),
    ]
    question_sweeps = SUITE_SWEEPS.get(suite, QUESTION_SWEEPS)  # the real suite: other sweeps, four questions
    for q, (title, text) in QUESTIONS.items():
        if q in question_sweeps:
            blocks.extend(_question_blocks(q, title, text, by_sweep, results, figures, grids, suite))
    imprecise = [r for r in results if r.claim.imprecision]
    blocks.append(Heading(2, "Imprecise wordings, and what the data shows", anchor="imprecision"))
    if imprecise:
        blocks.append(Bullets([f"**{r.claim.question.upper()} ({r.claim.id}).** {r.claim.imprecision} "
                               f"*Data:* {_data_says(r)}" for r in imprecise]))
    else:
        blocks.append(Para("No imprecision notes in the claims file."))
    sweeps = sorted({s for q in question_sweeps.values() for s in q} | {r.claim.sweep for r in results if r.claim.sweep}
                    | set(coll.sweeps))
    cost_needed = any(r.claim.source == "attention_cost" for r in results)
    blocks.extend(missing_blocks(coll, grids, expected, sweeps, sweeps_dir, cost_needed))
    return blocks


def _not_reproduced_blocks(results: Sequence[ClaimResult]) -> list[Block]:
    """Every counted claim whose literature direction did not reproduce here, said plainly."""
    missed = [r for r in results if r.claim.tier in COUNTED_TIERS and r.verdict not in (SUPPORTED, NOT_RUN)]
    text = [f"**{r.claim.id}** ({r.claim.question.upper()}): {at_this_scale(r)}" for r in missed]
    return [Heading(2, "Directions that did not reproduce at this scale", anchor="not-reproduced"),
            Bullets(text) if text else Para("Every counted claim that ran reproduced its literature direction.")]


def _figure_caption(name: str, n_seeds: int) -> str:
    if name == "q4_cost":
        return ("Points: mean over the benchmark's repeats per T; bars: 95% t-interval over the repeats (repeats "
                "are not independent replicates; peak memory is deterministic). No multiplicity adjustment.")
    if name == "q5_table":
        return f"Cells: mean ± 95% t-interval half-width over seeds (n = {n_seeds} seeds), unadjusted."
    return (f"n = {n_seeds} seeds per cell (fewer where runs are missing: see the notes); bars: 95% t-intervals over "
            "seeds, unadjusted for multiplicity, clipped to a bounded metric's range; no bar for one seed or zero "
            "variance.")


HOW_TO_READ = (
    "How to read: each effect is oriented so that a positive value (or a ratio above 1×) is the claimed direction. "
    "Intervals are Student-t intervals over seeds (paired by seed when both settings ran the same seeds, Welch "
    "otherwise) from scipy.stats; where the runs kept per-example validation outcomes, the variance of a paired "
    "bootstrap over validation examples (the same resample in every seed and arm, since the validation set is "
    "shared) is added. Intervals of bounded metrics are clipped to the metric's range (noted where it happens). "
    "Each claim's p is twice the smaller of its own one-sided test (t, non-inferiority, or TOST for equivalence "
    "and at-chance claims) and the test of the opposite; **supported**/**contradicted** need the adjusted p below "
    "the tier's level (Holm 5% over the primaries, Benjamini-Hochberg 10% over the secondaries). **not resolved — "
    "underpowered** gives the minimum detectable effect and the seeds that would resolve it; **not resolved — "
    "cannot discriminate**: every compared arm sits at the metric's ceiling or floor; **deterministic**: zero "
    "variance over seeds, a measured value that is never counted as evidence; **not run**: no runs."
)


def print_verdicts(results: Sequence[ClaimResult], console: Any = None, title: str = "Verdicts") -> None:
    """A Rich table of claim verdicts on the console, by tier."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = console or Console()
    style = {SUPPORTED: "green", CONTRADICTED: "red", UNDERPOWERED: "yellow", CANNOT_DISCRIMINATE: "yellow",
             DETERMINISTIC: "blue"}
    t = RichTable(title=title, show_lines=False)
    t.add_column("tier", no_wrap=True, min_width=9)
    t.add_column("claim", overflow="fold", ratio=1, min_width=24)
    t.add_column("effect [adjusted CI]", overflow="fold", min_width=16)
    t.add_column("n", justify="right", no_wrap=True, min_width=3)
    t.add_column("p adj", justify="right", no_wrap=True, min_width=8)
    t.add_column("verdict", overflow="fold", min_width=14)
    for tier in TIERS:
        for r in (r for r in results if r.claim.tier == tier):
            padj = "—" if r.p_adjusted is None else f"{r.p_adjusted:.3g}"
            t.add_row(tier, r.claim.id, format_effect(r.claim, r.shown, compact=True), n_text(r), padj,
                      Text(r.verdict or "", style=style.get(r.verdict, "")))
    console.print(t)
    counts = verdict_counts(results)
    for tier in TIERS:
        console.print(f"{tier}: {counts_text(counts[tier])}")
    console.print(control_rate(results)[0].replace("**", ""))
