"""Render the report: ``report.md`` (figures as relative PNG links), a self-contained
``report.html`` (PNGs embedded as base64 data URIs) and a Rich console table of verdicts.

The document is built once as a list of blocks (headings, paragraphs, tables, images, lists)
and written to both formats, so the two never disagree.
"""

from __future__ import annotations

import base64
import html
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claims import Claim
from .collect import RunCollection, RunRecord, fmt_point, fmt_value, missing_points, varying_keys
from .evaluate import ClaimResult, format_effect
from .figures import QUESTION_SWEEPS, FigureResult, q5_table
from .stats import CONTRADICTED, NOT_RESOLVED, SUPPORTED, VERDICTS

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


# --- document blocks ---------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    caption: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Bullets:
    items: list[str]


Block = Heading | Para | Table | Image | Bullets


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block], base_dir: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' <a id="{b.anchor}"></a>' if b.anchor else ""
            out.append(f"{'#' * b.level} {b.text}{anchor}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            for r in b.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
            out.append("")
        elif isinstance(b, Image):
            rel = b.path.relative_to(base_dir) if b.path.is_relative_to(base_dir) else b.path
            out.append(f"![{b.caption}]({rel.as_posix()})\n")
            out.append(f"*{b.caption}*\n")
            for n in b.notes:
                out.append(f"> Note: {n}\n")
        elif isinstance(b, Bullets):
            out.extend(f"- {i}" for i in b.items)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _inline(s: str) -> str:
    s = html.escape(str(s), quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\[([^\]]+)\]\(#([\w-]+)\)", r'<a href="#\2">\1</a>', s)
    return s


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{border-bottom:1px solid #eee;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f4f4f4}tr:nth-child(even) td{background:#fafafa}
td.v-supported{background:#d9f2d9!important;font-weight:600}td.v-contradicted{background:#f7d4d4!important;
font-weight:600}td.v-not-resolved{background:#f3f0d8!important}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-style:italic;color:#555}
.note{color:#7a5a00;font-size:.9em}code{background:#f4f4f4;padding:0 3px;border-radius:3px}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    out = [
        (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>"
        )
    ]
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{b.anchor}"' if b.anchor else ""
            out.append(f"<h{b.level}{anchor}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.headers) + "</tr></thead><tbody>")
            for r in b.rows:
                cells = []
                for c in r:
                    cls = f' class="v-{c.replace(" ", "-")}"' if c in VERDICTS else ""
                    cells.append(f"<td{cls}>{_inline(c)}</td>")
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(Path(b.path).read_bytes()).decode() if Path(b.path).is_file() else ""
            notes = "".join(f"<div class='note'>Note: {_inline(n)}</div>" for n in b.notes)
            out.append(f"<figure><img alt='{html.escape(b.caption, quote=True)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{_inline(b.caption)}</figcaption>{notes}</figure>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


# --- pieces ------------------------------------------------------------------------------
def n_text(r: ClaimResult) -> str:
    e = r.estimate
    if e is None:
        return "0"
    if e.method in ("paired", "one-sample", "slope") or len(e.ns) <= 1:
        return str(e.n)
    return "/".join(map(str, e.ns))


def summary_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    rows = []
    for r in results:
        c = r.claim
        rows.append([
            f"[{c.id}](#{c.id})", c.question.upper(), c.claim, f"{r.effect_text}", r.effect_label, n_text(r),
            f"{c.literature_direction} — {c.literature_anchor}", r.verdict,
        ])
    return rows


SUMMARY_HEADERS = ["id", "Q", "claim", "measured effect ± 95% CI [low, high]", "effect is", "n seeds",
                   "literature (direction — anchor)", "verdict"]


def _claim_blocks(r: ClaimResult) -> list[Block]:
    c = r.claim
    where = f"sweep `{c.sweep}`" if c.source == "runs" else "attention-cost benchmark"
    items = [
        f"**Claim:** {c.claim}",
        f"**Measured on:** {where}, metric `{c.metric}` ({'higher' if c.higher_is_better else 'lower'} is the "
        f"claimed direction for a); a = {fmt_point(c.a) or '—'}"
        + (f"; b = {fmt_point(c.b)}" if c.b else "")
        + (f"; condition {fmt_point(c.condition)}" if c.condition else "")
        + (f"; along {fmt_point(c.along)}" if c.along else ""),
        f"**Expectation:** {_expect_text(c)}",
    ]
    for g in r.groups:
        e = g.estimate
        if c.scale == "log" and g.values:
            val = f"geometric mean {math.exp(e.mean):.4g}" if math.isfinite(e.mean) else "—"
        elif e.has_interval:
            val = f"{e.mean:.4f} [{e.lo:.4f}, {e.hi:.4f}]"
        elif g.values:
            val = f"{e.mean:.4f} (no CI)"
        else:
            val = "no values"
        items.append(f"{g.label}: {val}, n={len(g.values)}")
    est = r.estimate
    method = f" ({est.method}, df={est.df:.3g})" if est is not None and est.df is not None else (
        f" ({est.method})" if est is not None else "")
    items.append(f"**Effect** ({r.effect_label}): {r.effect_text}{method}")
    items.append(f"**Verdict: {r.verdict}** — {r.reason}")
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
    if c.expect == "a_better":
        return "a better than b (the CI of the oriented effect excludes 0)"
    if c.expect == "a_not_worse":
        return f"a not worse than b by more than {m:g}"
    if c.expect == "equivalent":
        return f"equivalent: |effect| ≤ {m:g}" + (" (relative)" if c.scale == "log" else "")
    if c.expect == "a_at_chance":
        return f"a at chance ({ch:g}): mean within ±{m:g} and the CI includes chance"
    if c.expect == "a_above_chance":
        return f"a {'above' if c.higher_is_better else 'below'} chance ({ch:g})"
    if c.expect == "gap_grows":
        return "the effect grows along " + (fmt_point(c.along) if c.along else "?")
    return c.expect


def _data_says(r: ClaimResult) -> str:
    if r.estimate is None:
        return f"not measured yet ({r.reason})."
    return f"{r.effect_label} = {r.effect_text}, n={n_text(r)} → {r.verdict}."


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
def build_document(
    suite: str,
    coll: RunCollection,
    results: Sequence[ClaimResult],
    figures: Mapping[str, Sequence[FigureResult]],
    grids: Mapping[str, Mapping],
    expected: Mapping[str, list[dict]],
    sweeps_dir: Path,
) -> list[Block]:
    counts = Counter(r.verdict for r in results)
    by_sweep = coll.by_sweep()
    blocks: list[Block] = [
        Heading(1, f"Transformer ablations — report for suite `{suite}`"),
        Para(f"Generated {time.strftime('%Y-%m-%d %H:%M')} from {len(coll.runs)} run records in "
             f"{len(coll.sweeps)} sweeps under `{coll.root}`"
             + (f" ({len(coll.corrupt)} unreadable)" if coll.corrupt else "")
             + f". Claims: **{counts[SUPPORTED]} supported**, **{counts[CONTRADICTED]} contradicted**, "
               f"**{counts[NOT_RESOLVED]} not resolved** at this budget."),
        Para("How to read: each effect is oriented so that a positive value (or a ratio above 1×) is the claimed "
             "direction. Intervals are 95% Student-t intervals over seeds: paired by seed when both settings ran "
             "the same seeds, Welch otherwise. **supported**: the interval excludes 0 in the claimed direction "
             "(for an equivalence claim: it lies inside ±margin; for a chance claim: the mean is within the margin "
             "of chance and the interval includes chance). **contradicted**: it excludes 0 the other way (or lies "
             "entirely outside the equivalence margin). **not resolved**: neither, or fewer than two seeds."),
        Heading(2, "Summary of claims", anchor="summary"),
        Table(SUMMARY_HEADERS, summary_rows(results)),
    ]
    for q, (title, text) in QUESTIONS.items():
        blocks.append(Heading(2, title, anchor=q))
        blocks.append(Para(f"Claim under test: {text}"))
        for f in figures.get(q, []):
            blocks.append(Image(f.path, f.title, list(f.notes)))
        if q == "q1":
            blocks.append(Heading(3, "Divergence (a finding, not a failure)"))
            t = divergence_table(by_sweep.get("q1_scaling", []), grids.get("q1_scaling"))
            blocks.append(t if t else Para("No Q1 run records."))
        if q == "q6" and not {"data.pair_format", "model.segment_embeddings"} & set(grids.get("q6_cls_sep") or {}):
            blocks.append(Para("The [SEP] half of the question (`data.pair_format` sep/concat, "
                               "`model.segment_embeddings`) is not a dimension of the q6_cls_sep grid, so no [SEP] "
                               "claim is measured here; every Q6 run uses the experiment's pair format."))
        if q == "q5":
            blocks.append(Heading(3, "Results per pretraining objective (BERT Table 5 style)"))
            headers, rows = q5_table(by_sweep, grids.get("q5_finetune"))
            blocks.append(Table(headers, rows))
            blocks.append(Para("Cells: mean ± 95% CI half-width over seeds (n seeds). For comparison, BERT Table 5 "
                               "(MNLI/QNLI/MRPC/SST-2/SQuAD): BERT-base 84.4/88.4/86.7/92.7/88.5, no NSP "
                               "83.9/84.9/86.5/92.6/87.9, left-to-right & no NSP 82.1/84.3/77.5/92.1/77.8."))
        q_results = [r for r in results if r.claim.question == q]
        blocks.append(Heading(3, "Claims"))
        if not q_results:
            blocks.append(Para("No claims for this question."))
        for r in q_results:
            blocks.extend(_claim_blocks(r))
    imprecise = [r for r in results if r.claim.imprecision]
    blocks.append(Heading(2, "Imprecise wordings, and what the data shows", anchor="imprecision"))
    if imprecise:
        blocks.append(Bullets([f"**{r.claim.question.upper()} ({r.claim.id}).** {r.claim.imprecision} "
                               f"*Data:* {_data_says(r)}" for r in imprecise]))
    else:
        blocks.append(Para("No imprecision notes in the claims file."))
    sweeps = sorted({s for q in QUESTION_SWEEPS.values() for s in q} | {r.claim.sweep for r in results if r.claim.sweep}
                    | set(coll.sweeps))
    cost_needed = any(r.claim.source == "attention_cost" for r in results)
    blocks.extend(missing_blocks(coll, grids, expected, sweeps, sweeps_dir, cost_needed))
    return blocks


def print_verdicts(results: Sequence[ClaimResult], console: Any = None, title: str = "Verdicts") -> None:
    """A Rich table of claim verdicts on the console."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    style = {SUPPORTED: "green", CONTRADICTED: "red", NOT_RESOLVED: "yellow"}
    t = RichTable(title=title, show_lines=False)
    t.add_column("claim", overflow="fold", ratio=1)
    t.add_column("effect [95% CI]", no_wrap=True, min_width=24)
    t.add_column("n", justify="right", no_wrap=True, min_width=2)
    t.add_column("verdict", no_wrap=True, min_width=12)
    for r in results:
        t.add_row(r.claim.id, format_effect(r.claim, r.estimate, compact=True), n_text(r),
                  f"[{style.get(r.verdict, '')}]{r.verdict}[/]")
    console.print(t)
    counts = Counter(r.verdict for r in results)
    console.print(f"{counts[SUPPORTED]} supported, {counts[CONTRADICTED]} contradicted, "
                  f"{counts[NOT_RESOLVED]} not resolved")
