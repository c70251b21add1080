"""Shared pieces of the report's figures: the Agg canvas, axes helpers, error bars that respect a
bounded metric's range, and the notes a figure's caption carries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .collect import RunRecord, canonical, fmt_point, fmt_value, varying_keys
from .evaluate import cell_estimate
from .stats import Estimate


@dataclass
class FigureResult:
    name: str
    path: Path
    title: str
    notes: list[str] = field(default_factory=list)


Grid = Mapping[str, Sequence[Any]]


# --- helpers -----------------------------------------------------------------------------
def _figure(nrows: int, ncols: int, w: float = 4.3, h: float = 3.3):
    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="0.4", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _axis(key: str, grid: Grid, runs: Sequence[RunRecord], fallback: Sequence[Any] = ()) -> list:
    if key in grid:
        return list(grid[key])
    seen: dict = {}
    for r in runs:
        if key in r.config:
            seen.setdefault(canonical(r.config[key]), r.config[key])
    if seen:
        return sorted(seen.values(), key=_sort_key)
    return list(fallback)


def _sort_key(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _yerr(est: Estimate) -> tuple[float, float]:
    """(below, above) the mean: intervals of bounded metrics are clipped, so bars may be asymmetric."""
    return (est.mean - est.lo, est.hi - est.mean) if est.has_interval else (0.0, 0.0)


def _bars_of(errs: Sequence[tuple[float, float]]) -> list[list[float]]:
    return [[e[0] for e in errs], [e[1] for e in errs]]


class _Notes:
    """Collects cells without data / with a single seed, for the figure's caption."""

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.single: list[str] = []
        self.flat: list[str] = []
        self.other: list[str] = []

    def see(self, est: Estimate, where: Mapping[str, Any] | str) -> bool:
        label = where if isinstance(where, str) else fmt_point(where)
        if est.n == 0 or not math.isfinite(est.mean):
            self.missing.append(label)
            return False
        if not est.has_interval:
            (self.flat if est.deterministic else self.single).append(label)
        return True

    def lines(self) -> list[str]:
        out = list(self.other)
        if self.missing:
            out.append(f"no finished runs for: {'; '.join(self.missing)}")
        if self.single:
            out.append(f"one seed only (no error bar): {'; '.join(self.single)}")
        if self.flat:
            out.append(f"zero variance across seeds, deterministic (no error bar): {'; '.join(self.flat)}")
        return out


def _averaged_note(runs: Sequence[RunRecord], used: Sequence[str], notes: _Notes) -> None:
    """The keys that vary among the runs of one cell (the same ``used`` values), which a cell averages
    over; a key that only differs between cells (an lr chosen per arm) is no average."""
    cells: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        cells.setdefault(tuple(canonical(r.config.get(k)) for k in used), []).append(r)
    extra: dict[str, dict] = {}
    for cell in cells.values():
        for k, vs in varying_keys(cell, exclude=used).items():
            extra.setdefault(k, {}).update({canonical(v): v for v in vs})
    extra = {k: sorted(v.values(), key=lambda x: (str(type(x)), str(x))) for k, v in sorted(extra.items())}
    if extra:
        notes.other.append("per seed, averaged over " + "; ".join(
            f"{k} ∈ {{{', '.join(map(fmt_value, v))}}}" for k, v in extra.items()))


def _lines_vs_x(ax, runs, notes: _Notes, xkey: str, xs: Sequence, series: Sequence[tuple[str, dict]],
                metric: str, base: Mapping[str, Any] | None = None, logx: bool = False) -> bool:
    drew = False
    n = max(len(series), 1)
    for i, (label, match) in enumerate(series):
        px, py, pe = [], [], []
        for x in xs:
            where = {**(base or {}), **match, xkey: x}
            est = cell_estimate(runs, where, metric)
            if notes.see(est, f"{fmt_point(where)} [{metric}]"):
                jitter = (i - (n - 1) / 2) * 0.04
                px.append(float(x) * (2 ** jitter) if logx else float(x) + jitter * _span(xs))
                py.append(est.mean)
                pe.append(_yerr(est))
        if px:
            ax.errorbar(px, py, yerr=_bars_of(pe), marker="o", capsize=3, label=label)
            drew = True
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(x) for x in xs])
        ax.set_xticklabels([fmt_value(x) for x in xs])
    ax.set_xlabel(xkey)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if drew:
        ax.legend(fontsize=8)
    else:
        _empty(ax, f"no data for {metric}")
    return drew


def _span(xs: Sequence) -> float:
    try:
        vals = [float(x) for x in xs]
        return (max(vals) - min(vals)) or 1.0
    except (TypeError, ValueError):
        return 1.0


def _bars(ax, runs, notes: _Notes, xkey: str, xs: Sequence, hue_key: str, hues: Sequence, metric: str,
          base: Mapping[str, Any] | None = None, chance: float | None = None) -> bool:
    width = 0.8 / max(len(hues), 1)
    drew = False
    for j, h in enumerate(hues):
        pos, ys, es = [], [], []
        for i, x in enumerate(xs):
            where = {**(base or {}), xkey: x, hue_key: h}
            est = cell_estimate(runs, where, metric)
            if notes.see(est, f"{fmt_point(where)} [{metric}]"):
                pos.append(i + (j - (len(hues) - 1) / 2) * width)
                ys.append(est.mean)
                es.append(_yerr(est))
        if pos:
            ax.bar(pos, ys, width=width, yerr=_bars_of(es), capsize=3, label=f"{hue_key.split('.')[-1]}={fmt_value(h)}")
            drew = True
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([fmt_value(x) for x in xs])
    ax.set_xlabel(xkey)
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    if chance is not None:
        ax.axhline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance {chance:g}")
    if drew:
        ax.legend(fontsize=8)
    else:
        _empty(ax, f"no data for {metric}")
    return drew


def _no_runs(fig_path: Path, title: str, sweep: str) -> FigureResult:
    fig, axes = _figure(1, 1, 5, 2.5)
    _empty(axes[0][0], f"no run records for sweep {sweep}")
    _save(fig, fig_path, title)
    return FigureResult(fig_path.stem, fig_path, title, [f"no run records for sweep {sweep}"])
