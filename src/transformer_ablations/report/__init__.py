"""Run records + ``experiments/claims.yaml`` -> effects with intervals, tiered verdicts, figures, report.

- :mod:`.collect`    read ``runs/<suite>/<sweep>/*/summary.json``, the attention-cost JSON, wandb sweeps
- :mod:`.stats`      scipy.stats t-intervals, paired/Welch contrasts, slopes, p-values (t, TOST), power
- :mod:`.examples`   validation-sampling variance: paired bootstrap over per-example outcomes
- :mod:`.verdicts`   tiers, Holm / Benjamini-Hochberg, the verdict vocabulary, false-support rate
- :mod:`.claims`     load and validate the claims file
- :mod:`.evaluate`   claims × runs -> :class:`ClaimResult` (:mod:`.cost` for the attention benchmark)
- :mod:`.results`    claim results, preliminary verdicts, the per-tier adjustment
- :mod:`.figures`    one figure per question (PNG); :mod:`.forest` the forest plot
- :mod:`.render`     the document (:mod:`.document` blocks, :mod:`.tables`) and the Rich console table
- :mod:`.wandb_log`  the report as a wandb run (``--wandb``); :mod:`.wandb_views` saved views per question
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..config import ConfigError, toggle_values
from ..sweeps.validate import load_sweep
from .claims import Claim, load_claims
from .collect import (
    RunCollection,
    RunRecord,
    collect_runs,
    collect_wandb,
    expected_points,
    grid_dimensions,
    group_runs,
    sweep_file,
)
from .document import to_html, to_markdown
from .evaluate import ClaimResult, evaluate_claims
from .figures import QUESTION_SWEEPS, make_figures
from .formatting import effect_label, format_effect
from .real_figures import SUITE_SWEEPS, make_real_figures
from .render import build_document, print_verdicts
from .stats import Estimate, contrast_ci, difference_ci, mean_ci
from .verdicts import TIERS, VERDICTS, benjamini_hochberg, holm
from .wandb_log import log_report_to_wandb

__all__ = [
    "TIERS",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "Estimate",
    "RunCollection",
    "RunRecord",
    "benjamini_hochberg",
    "build_report",
    "collect_runs",
    "collect_wandb",
    "contrast_ci",
    "difference_ci",
    "evaluate_claims",
    "group_runs",
    "holm",
    "load_claims",
    "log_report_to_wandb",
    "mean_ci",
]

REPORT_MD, REPORT_HTML, VERDICTS_JSON, FIGURES_DIR = "report.md", "report.html", "verdicts.json", "figures"


def build_report(
    runs_dir: str | Path,
    suite: str,
    out_dir: str | Path,
    claims_path: str | Path,
    sweeps_dir: str | Path,
    *,
    console: bool | Any = True,
) -> Path:
    """Write ``<out_dir>/<suite>/report.md``, ``report.html``, ``verdicts.json`` and ``figures/*.png``.

    ``runs_dir`` holds ``<suite>/<sweep>/<run_id>/summary.json`` (and ``<suite>/q4_attention_cost.json``);
    ``out_dir`` is the reports root (e.g. ``reports``). Returns the path of ``report.md``.
    ``console``: True prints a Rich table of verdicts, False prints nothing, or pass a
    ``rich.console.Console``. Raises :class:`ConfigError` (one line) for an invalid claims file,
    no run records, or run records of other sweeps only.
    """
    sweeps_dir = Path(sweeps_dir)
    claims = load_claims(claims_path, sweeps_dir)
    coll = collect_runs(runs_dir, suite)
    root = Path(runs_dir) / suite
    if not coll.runs:
        extra = f" ({len(coll.corrupt)} unreadable summary.json, e.g. {coll.corrupt[0][0]}: {coll.corrupt[0][1]})" \
            if coll.corrupt else ""
        raise ConfigError(f"no run records under {root}: run `make sweep Q=<q1..q6>` or `make quick` first{extra}")
    needed = sorted({c.sweep for c in claims if c.sweep})
    if not set(coll.sweeps) & set(needed):
        raise ConfigError(
            f"run records under {root} are only for sweep(s) {', '.join(coll.sweeps)}; the claims use "
            f"{', '.join(needed)}: run `make sweep Q=<q>` for those (or pick another --suite)"
        )
    grids: dict[str, dict] = {}
    expected: dict[str, list[dict]] = {}
    question_sweeps = SUITE_SWEEPS.get(suite, QUESTION_SWEEPS)
    for s in sorted(set(needed) | set(coll.sweeps) | {x for q in question_sweeps.values() for x in q}):
        f = sweep_file(sweeps_dir, s)
        if f.is_file():
            try:
                grids[s], expected[s] = _grid_and_points(f, suite)
            except ConfigError:
                continue  # reported as "expected grid unknown"
    report_dir = Path(out_dir) / suite
    report_dir.mkdir(parents=True, exist_ok=True)
    figures = (make_real_figures if suite in SUITE_SWEEPS else make_figures)(coll, grids, report_dir / FIGURES_DIR)
    results = evaluate_claims(claims, coll)
    blocks = build_document(suite, coll, results, figures, grids, expected, sweeps_dir, report_dir)
    title = f"Transformer ablations — {suite}"
    # atomically (temp + rename): a crash mid-write keeps the previous report whole
    atomic_write_text(report_dir / REPORT_MD, to_markdown(blocks, report_dir))
    atomic_write_text(report_dir / REPORT_HTML, to_html(blocks, title))
    verdicts = [r.as_dict(effect_label(r.claim), format_effect(r.claim, r.shown)) for r in results]
    atomic_write_text(report_dir / VERDICTS_JSON, json.dumps(verdicts, indent=2, ensure_ascii=False))
    if console:
        print_verdicts(results, None if console is True else console, title=f"Verdicts ({suite})")
    return report_dir / REPORT_MD


def _grid_and_points(path: Path, suite: str) -> tuple[dict[str, list], list[dict]]:
    """A sweep's grid (config keys only: the suite sets the scale) and the points its runs record."""
    spec = load_sweep(path)
    grid = grid_dimensions(spec)
    scale = suite if suite in toggle_values()["scale"] else None  # runs/<scale> unless named otherwise
    return grid, expected_points(spec, grid, scale)
