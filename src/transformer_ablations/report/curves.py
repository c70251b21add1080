"""Learning curves (issue 15: the evidence that runs reached their plateau): a validation metric
against the training step, one line per arm (mean over seeds of each run's ``metrics.csv``), with
the range over seeds shaded. The caption notes, per arm, the last step-to-step change of the mean:
a curve still rising at the end is not a plateau, and the report says so instead of the reader
having to guess from the picture. A run that ``train.patience`` stopped at its plateau keeps its last
value on to the arm's last step (it stopped because the curve was flat), and the caption counts them."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .collect import RunRecord, fmt_point
from .plotting import FigureResult, _empty, _figure, _no_runs, _Notes, _save

PLATEAU_TOLERANCE = 0.01  # |last change of the mean| below this (metric units) reads as flat


def read_curve(run: RunRecord, metric: str) -> dict[int, float]:
    """step -> value of ``metric`` in the run's ``metrics.csv`` (finite values only)."""
    path = Path(run.path).parent / "metrics.csv" if run.path is not None else None
    if path is None or not path.is_file():
        return {}
    out: dict[int, float] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                step, value = int(float(row.get("step") or "nan")), float(row.get(metric) or "nan")
            except ValueError:
                continue
            if math.isfinite(value):
                out[step] = value
    return out


def fig_learning_curves(runs: Sequence[RunRecord], sweep: str, arms: Sequence[tuple[str, Mapping[str, Any]]],
                        metric: str, out_dir: Path, name: str, show: str | None = None) -> FigureResult:
    """``arms``: (label, config match) pairs; one panel, ``metric`` against the step. ``show``: a config
    key whose values in each arm's runs the caption lists (e.g. the lr an arm was trained at)."""
    path = Path(out_dir) / f"{name}.png"
    title = f"{name.split('_')[0].upper()}: learning curves of {metric} (mean over seeds, range shaded)"
    if not runs:
        return _no_runs(path, title, sweep)
    notes = _Notes()
    fig, axes = _figure(1, 1, 7, 3.8)
    ax, drew = axes[0][0], False
    for label, match in arms:
        chosen = [r for r in runs if r.usable and r.matches(match)]
        if show is not None and chosen:
            values = sorted({str(r.config.get(show)) for r in chosen})
            notes.other.append(f"{label}: {show} = {', '.join(values)}")
            notes.other.extend(_grid_edge_notes(label, chosen))
        read = [(r, c) for r in chosen if (c := read_curve(r, metric))]
        curves = [c for _, c in read]
        if not curves:
            notes.other.append(f"{fmt_point(match)}: no learning curve ({metric} in metrics.csv)")
            continue
        steps = sorted({step for c in curves for step in c})
        per_step: dict[int, list[float]] = defaultdict(list)
        for r, c in read:
            last = max(c)
            for step in steps:
                if step in c:
                    per_step[step].append(c[step])
                elif step > last and r.plateau_step is not None:  # stopped at its plateau: the value stays
                    per_step[step].append(c[last])
        steps = sorted(per_step)
        stopped = sorted(r.plateau_step for r, _ in read if r.plateau_step is not None)
        if stopped:
            notes.other.append(f"{label}: {len(stopped)} of {len(read)} runs stopped at their plateau "
                               f"(train.patience) at steps {', '.join(map(str, stopped))}; "
                               f"{len(read) - len(stopped)} ran to the last step")
        mean = [sum(per_step[s]) / len(per_step[s]) for s in steps]
        line = ax.plot(steps, mean, marker="o", markersize=3, label=f"{label} (n={len(curves)})")[0]
        ax.fill_between(steps, [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps],
                        color=line.get_color(), alpha=0.15)
        drew = True
        if len(steps) >= 2:
            change = mean[-1] - mean[-2]
            state = "flat" if abs(change) < PLATEAU_TOLERANCE else "still changing"
            notes.other.append(f"{label}: last change {change:+.3f} between steps {steps[-2]} and {steps[-1]} ({state})")
    if drew:
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    else:
        _empty(ax, f"no {metric} curves in the runs' metrics.csv")
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def _grid_edge_notes(label: str, runs: Sequence[RunRecord]) -> list[str]:
    """A note per distinct lr choice (``train.lr_from``) that sits at the smallest or largest lr of its
    grid: the best lr may lie beyond the grid, so the arm may not be at its own best setting."""
    notes = []
    for sel in {repr(r.lr_selection): r.lr_selection for r in runs if r.lr_selection}.values():
        grid = sorted(float(lr) for lr in sel.get("grid") or {})
        if len(grid) >= 2 and float(sel["lr"]) in (grid[0], grid[-1]):
            side = "smallest" if float(sel["lr"]) == grid[0] else "largest"
            notes.append(f"{label}: the chosen lr {float(sel['lr']):g} is the {side} of the grid "
                         f"({', '.join(f'{lr:g}' for lr in grid)}); its best lr may lie beyond it")
    return notes


def arms_of(keys: Mapping[str, Sequence[Any]]) -> list[tuple[str, dict]]:
    """Every combination of the values of ``keys`` as (label, match)."""
    arms: list[dict] = [{}]
    for key, values in keys.items():
        arms = [{**a, key: v} for a in arms for v in values]
    return [(", ".join(f"{k.split('.')[-1]}={v}" for k, v in a.items()), a) for a in arms]
