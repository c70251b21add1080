"""Figures for the report (matplotlib, Agg canvas; no pyplot global state).

One function per figure; each draws whatever data exists, and returns notes naming the cells
it expected (from the sweep grid) but found no finished runs for. Error bars are 95%
t-intervals over seeds (unadjusted; clipped to a bounded metric's range); a cell with one seed,
or with zero variance, is drawn without a bar (and noted).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .collect import RunCollection, RunRecord, fmt_point, fmt_value
from .curves import arms_of, fig_learning_curves
from .evaluate import cell_estimate
from .plotting import (
    FigureResult,
    Grid,
    _averaged_note,
    _axis,
    _bars,
    _bars_of,
    _empty,
    _figure,
    _lines_vs_x,
    _no_runs,
    _Notes,
    _save,
    _span,
    _yerr,
)
from .stats import mean_ci

# which sweeps feed which question's figures
QUESTION_SWEEPS: dict[str, tuple[str, ...]] = {
    "q1": ("q1_scaling", "q1_bf16"),
    "q2": ("q2_positional", "q2_lookup"),
    "q3": ("q3_attention",),
    "q4": ("q4_additive",),
    "q5": ("q5_pretrain", "q5_finetune"),
    "q6": ("q6_cls_sep", "q6_sep_segments"),
}

CHANCE_ORDER_TASK = 0.5


# --- Q1 ----------------------------------------------------------------------------------
def fig_q1_scaling(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q1_scaling.png", "Q1: loss, accuracy and attention entropy vs d_k per scaling"
    if not runs:
        return _no_runs(path, title, "q1_scaling")
    notes = _Notes()
    dks = _axis("model.head_dim", grid, runs)
    series = [(f"scaling={fmt_value(s)}", {"model.attention.scaling": s})
              for s in _axis("model.attention.scaling", grid, runs, ("sqrt_dk", "none", "qk_norm"))]
    fig, axes = _figure(1, 3)
    for ax, metric in zip(axes[0], ("val/loss", "val/acc", "attn/entropy")):
        _lines_vs_x(ax, runs, notes, "model.head_dim", dks, series, metric, logx=True)
    _averaged_note(runs, ("model.head_dim", "model.attention.scaling"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


# --- Q2 ----------------------------------------------------------------------------------
_POSITIONALS = ("none", "sinusoidal", "learned", "rope", "alibi")


def fig_q2_order(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q2_order_acc.png", "Q2: order-task accuracy per positional encoding × architecture"
    if not runs:
        return _no_runs(path, title, "q2_positional")
    notes = _Notes()
    fig, axes = _figure(1, 1, 7, 3.6)
    _bars(axes[0][0], runs, notes, "model.positional", _axis("model.positional", grid, runs, _POSITIONALS),
          "model.arch", _axis("model.arch", grid, runs, ("encoder", "decoder")), "val/acc", chance=CHANCE_ORDER_TASK)
    _averaged_note(runs, ("model.positional", "model.arch"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def _length_multiples(runs: Sequence[RunRecord]) -> list[int]:
    found = {1}
    for r in runs:
        for k in r.metrics:
            m = re.match(r"^val_len(\d+)x/", k)
            if m:
                found.add(int(m.group(1)))
    return sorted(found)


def _len_metric(mult: int, name: str) -> str:
    return f"val/{name}" if mult == 1 else f"val_len{mult}x/{name}"


def fig_q2_length(runs: Sequence[RunRecord], grid: Grid, out_dir: Path, name: str = "q2_length") -> FigureResult:
    sweep = "q2_lookup" if name.startswith("q2_lookup") else "q2_positional"
    path, title = Path(out_dir) / f"{name}.png", f"Q2 ({sweep}): loss and accuracy at the training length T, 2T, 4T"
    if not runs:
        return _no_runs(path, title, sweep)
    notes = _Notes()
    mults = _length_multiples(runs)
    if len(mults) == 1:
        notes.other.append("no val_len<k>x/ metrics: runs were not evaluated at longer lengths")
    archs = _axis("model.arch", grid, runs, ("encoder", "decoder"))
    positionals = _axis("model.positional", grid, runs, _POSITIONALS)
    fig, axes = _figure(len(archs), 2)
    for row, arch in zip(axes, archs):
        for ax, metric in zip(row, ("loss", "acc")):
            drew = False
            for i, pos in enumerate(positionals):
                px, py, pe = [], [], []
                for mult in mults:
                    where = {"model.arch": arch, "model.positional": pos}
                    est = cell_estimate(runs, where, _len_metric(mult, metric))
                    if notes.see(est, f"{fmt_point(where)} [{_len_metric(mult, metric)}]"):
                        px.append(mult * 2 ** ((i - (len(positionals) - 1) / 2) * 0.03))
                        py.append(est.mean)
                        pe.append(_yerr(est))
                if px:
                    ax.errorbar(px, py, yerr=_bars_of(pe), marker="o", capsize=3, label=f"{pos}")
                    drew = True
            ax.set_xscale("log", base=2)
            ax.set_xticks(mults)
            ax.set_xticklabels([f"{m}T" if m > 1 else "T" for m in mults])
            ax.set_title(f"arch={arch}", fontsize=9)
            ax.set_xlabel("evaluation length")
            ax.set_ylabel(f"val {metric}")
            ax.grid(alpha=0.3)
            if drew:
                ax.legend(fontsize=7, title="positional", title_fontsize=7)
            else:
                _empty(ax, f"no data for arch={arch}")
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


# --- Q3 ----------------------------------------------------------------------------------
Q3_VARIANTS = (
    ("encoder-decoder, full cross-attention", {"model.arch": "encoder_decoder", "model.cross_attention": "full"}),
    ("encoder-decoder, pooled cross-attention", {"model.arch": "encoder_decoder", "model.cross_attention": "pooled"}),
    ("decoder (prefix LM, self-attention)", {"model.arch": "decoder"}),
)


def _buckets(runs: Sequence[RunRecord], prefix: str = "val/exact_match_src") -> list[int]:
    rx = re.compile("^" + re.escape(prefix) + r"(\d+)$")
    return sorted({int(m.group(1)) for r in runs for k in r.metrics if (m := rx.match(k))})


def fig_q3_length(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q3_length.png", "Q3: exact match vs source length per attention variant"
    if not runs:
        return _no_runs(path, title, "q3_attention")
    notes = _Notes()
    tasks = _axis("data.task", grid, runs, ("reverse",))
    buckets = _buckets(runs)
    fig, axes = _figure(1, len(tasks))
    for ax, task in zip(axes[0], tasks):
        if not buckets:
            _empty(ax, "no val/exact_match_src<L> metrics")
            continue
        drew = False
        for i, (label, match) in enumerate(Q3_VARIANTS):
            px, py, pe = [], [], []
            for b in buckets:
                where = {**match, "data.task": task}
                metric = f"val/exact_match_src{b}"
                est = cell_estimate(runs, where, metric)
                if notes.see(est, f"{fmt_point(where)} [{metric}]"):
                    px.append(b + (i - 1) * 0.015 * _span(buckets))
                    py.append(est.mean)
                    pe.append(_yerr(est))
            if px:
                ax.errorbar(px, py, yerr=_bars_of(pe), marker="o", capsize=3, label=label)
                drew = True
        ax.set_title(f"task={task}", fontsize=9)
        ax.set_xticks(buckets)
        ax.set_xlabel("source length (bucket upper bound)")
        ax.set_ylabel("exact match")
        ax.grid(alpha=0.3)
        if drew:
            ax.legend(fontsize=7)
        else:
            _empty(ax, f"no data for task={task}")
    if not buckets:
        notes.other.append("no per-length metrics val/exact_match_src<L> in the run records")
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


# --- Q4 ----------------------------------------------------------------------------------
def fig_q4_quality(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q4_quality.png", "Q4: quality vs d_k per attention kind × scaling"
    if not runs:
        return _no_runs(path, title, "q4_additive")
    notes = _Notes()
    dks = _axis("model.head_dim", grid, runs)
    series = [(f"{k}, {s}", {"model.attention.kind": k, "model.attention.scaling": s})
              for k in _axis("model.attention.kind", grid, runs, ("dot", "additive"))
              for s in _axis("model.attention.scaling", grid, runs, ("sqrt_dk", "none"))]
    fig, axes = _figure(1, 2)
    for ax, metric in zip(axes[0], ("val/acc", "val/loss")):
        _lines_vs_x(ax, runs, notes, "model.head_dim", dks, series, metric, logx=True)
    _averaged_note(runs, ("model.head_dim", "model.attention.kind", "model.attention.scaling"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def fig_q4_cost(rows: Sequence[dict] | None, out_dir: Path, error: str | None = None) -> FigureResult:
    path, title = Path(out_dir) / "q4_cost.png", "Q4: attention time and peak memory vs sequence length T"
    notes = _Notes()
    fig, axes = _figure(1, 2)
    if not rows:
        why = error or "no attention-cost benchmark (runs/<suite>/q4_attention_cost.json)"
        for ax in axes[0]:
            _empty(ax, why)
        _save(fig, path, title)
        return FigureResult(path.stem, path, title, [why])
    kinds = sorted({str(r.get("kind")) for r in rows})
    dks = sorted({r.get("d_k") for r in rows if r.get("d_k") is not None}) or [None]
    Ts = sorted({r.get("T") for r in rows if isinstance(r.get("T"), (int, float))})
    for ax, metric, label in zip(axes[0], ("time_ms", "peak_mem_mb"), ("time per call (ms)", "peak memory (MB)")):
        drew = False
        for kind in kinds:
            for dk in dks:
                px, py, pe = [], [], []
                for T in Ts:
                    vals = [float(r[metric]) for r in rows if str(r.get("kind")) == kind and r.get("T") == T
                            and r.get("d_k") == dk and isinstance(r.get(metric), (int, float))
                            and math.isfinite(r[metric])]
                    est = mean_ci(vals)
                    if vals:
                        px.append(T)
                        py.append(est.mean)
                        pe.append(_yerr(est))
                    else:
                        notes.missing.append(f"kind={kind}, d_k={dk}, T={T} [{metric}]")
                if px and any(y > 0 for y in py):
                    ax.errorbar(px, py, yerr=_bars_of(pe), marker="o", capsize=3,
                                label=kind + (f", d_k={dk}" if len(dks) > 1 else ""))
                    drew = True
        if drew:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        else:
            _empty(ax, f"no {metric} values")
        ax.set_xlabel("T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


# --- Q5 ----------------------------------------------------------------------------------
Q5_OBJECTIVES = ("mlm_nsp", "mlm", "causal", "none")
# (column header, sweep, task filter, metric)
Q5_LABELS = 64  # the label count of the table and of the objective comparisons (claims.yaml)
Q5_COLUMNS = (
    ("single acc", "q5_finetune", {"data.task": "single", "data.n_train": Q5_LABELS}, "val/acc"),
    ("single MCC", "q5_finetune", {"data.task": "single", "data.n_train": Q5_LABELS}, "val/mcc"),
    ("pair-tag acc", "q5_finetune", {"data.task": "pair_tag", "data.n_train": Q5_LABELS}, "val/acc"),
    ("pair-tag F1", "q5_finetune", {"data.task": "pair_tag", "data.n_train": Q5_LABELS}, "val/f1"),
    ("NSP acc (pretraining)", "q5_pretrain", {"model.segment_embeddings": True}, "val/nsp_acc"),
)
Q5_TASKS = (("single", "single sentence (held-out polarity words)"), ("pair_tag", "pair tagging (label in B)"))


def q5_table(by_sweep: Mapping[str, Sequence[RunRecord]], grid: Grid | None = None) -> tuple[list[str], list[list[str]]]:
    """BERT-Table-5-style table: one row per pretraining objective, one column per task metric.

    Cells read ``mean ± CI half-width (n)``; "—" where no finished run has the metric.
    """
    finetune = by_sweep.get("q5_finetune", [])
    objectives = _axis("objective", grid or {}, finetune, Q5_OBJECTIVES)
    headers = ["objective"] + [c[0] for c in Q5_COLUMNS]
    rows = []
    for obj in objectives:
        row = [fmt_value(obj)]
        for _, sweep, where, metric in Q5_COLUMNS:
            est = cell_estimate(by_sweep.get(sweep, []), {**where, "objective": obj}, metric)
            if est.n == 0 or not math.isfinite(est.mean):
                row.append("—")
            elif est.has_interval:
                row.append(f"{est.mean:.3f} ± {est.half_width:.3f} (n={est.n})")
            else:
                row.append(f"{est.mean:.3f} (n={est.n})")
        rows.append(row)
    return headers, rows


def fig_q5_table(by_sweep: Mapping[str, Sequence[RunRecord]], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q5_table.png", "Q5: downstream results per pretraining objective (BERT Table 5 style)"
    headers, rows = q5_table(by_sweep, grid)
    fig, axes = _figure(1, 1, 10, 0.6 + 0.45 * (len(rows) + 1))
    ax = axes[0][0]
    ax.axis("off")
    notes = []
    if not by_sweep.get("q5_finetune") and not by_sweep.get("q5_pretrain"):
        notes.append("no run records for sweeps q5_pretrain and q5_finetune")
    if rows:
        table = ax.table(cellText=rows, colLabels=headers, loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.4)
    else:
        _empty(ax, "no objectives found")
    empty_cells = [f"{r[0]} / {h}" for r in rows for h, v in zip(headers[1:], r[1:]) if v == "—"]
    expected_empty = {f"{o} / NSP acc (pretraining)" for o in ("mlm", "causal", "none")}
    missing = [c for c in empty_cells if c not in expected_empty]
    if missing and by_sweep.get("q5_finetune"):
        notes.append(f"no finished runs for: {'; '.join(missing)}")
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes)


def fig_q5_labels(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    """Label-count curves: accuracy against the number of labelled examples, one line per objective."""
    path, title = Path(out_dir) / "q5_labels.png", "Q5: fine-tuned accuracy vs label count per pretraining objective"
    if not runs:
        return _no_runs(path, title, "q5_finetune")
    notes = _Notes()
    counts = _axis("data.n_train", grid, runs)
    series = [(f"objective={fmt_value(o)}", {"objective": o}) for o in _axis("objective", grid, runs, Q5_OBJECTIVES)]
    tasks = [(t, label) for t, label in Q5_TASKS if t in _axis("data.task", grid, runs)]
    fig, axes = _figure(1, max(len(tasks), 1))
    for ax, (task, label) in zip(axes[0], tasks):
        _lines_vs_x(ax, runs, notes, "data.n_train", counts, series, "val/acc", base={"data.task": task}, logx=True)
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("labelled examples (data.n_train)")
    _averaged_note(runs, ("objective", "data.task", "data.n_train"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


# --- Q6 ----------------------------------------------------------------------------------
def fig_q6_pooling(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q6_pooling.png", "Q6: single-sentence accuracy per pooling × fine-tuning mode"
    if not runs:
        return _no_runs(path, title, "q6_cls_sep")
    notes = _Notes()
    objectives = _axis("objective", grid, runs, ("mlm_nsp", "mlm"))
    fig, axes = _figure(1, len(objectives))
    for ax, obj in zip(axes[0], objectives):
        _bars(ax, runs, notes, "finetune.pooling", _axis("finetune.pooling", grid, runs, ("cls", "mean")),
              "finetune.mode", _axis("finetune.mode", grid, runs, ("full", "probe")), "val/acc",
              base={"objective": obj})
        ax.set_title(f"pretrained with {obj}", fontsize=9)
    _averaged_note(runs, ("finetune.pooling", "finetune.mode", "objective"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def sep_segments_table(runs: Sequence[RunRecord], grid: Grid | None = None) -> tuple[list[str], list[list[str]]]:
    """The [SEP] x segment-embeddings table: one row per pair format, one column per segments setting;
    cells ``mean ± CI half-width (n)`` of the pair-tagging accuracy."""
    grid = grid or {}
    segments = _axis("model.segment_embeddings", grid, runs, (True, False))
    headers = ["pair_format"] + [f"segment_embeddings={fmt_value(v)}" for v in segments]
    rows = []
    for fmt in _axis("data.pair_format", grid, runs, ("sep", "concat")):
        row = [fmt_value(fmt)]
        for seg in segments:
            est = cell_estimate(runs, {"data.pair_format": fmt, "model.segment_embeddings": seg}, "val/acc")
            row.append("—" if est.n == 0 or not math.isfinite(est.mean) else
                       f"{est.mean:.3f} ± {est.half_width:.3f} (n={est.n})" if est.has_interval else
                       f"{est.mean:.3f} (n={est.n})")
        rows.append(row)
    return headers, rows


def fig_q6_sep(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = Path(out_dir) / "q6_sep.png", "Q6: pair-tagging accuracy per pair format × segment embeddings"
    if not runs:
        return _no_runs(path, title, "q6_sep_segments")
    notes = _Notes()
    fig, axes = _figure(1, 1)
    _bars(axes[0][0], runs, notes, "data.pair_format", _axis("data.pair_format", grid, runs, ("sep", "concat")),
          "model.segment_embeddings", _axis("model.segment_embeddings", grid, runs, (True, False)), "val/acc",
          chance=0.5)
    _averaged_note(runs, ("data.pair_format", "model.segment_embeddings"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


# --- all ---------------------------------------------------------------------------------
def make_figures(collection: RunCollection, grids: Mapping[str, Grid], out_dir: Path) -> dict[str, list[FigureResult]]:
    """Every figure of the report, by question. Always writes every PNG (a note where data is missing)."""
    out_dir = Path(out_dir)
    by_sweep = collection.by_sweep()
    runs = lambda s: by_sweep.get(s, [])
    grid = lambda s: grids.get(s) or {}

    def curves(sweep: str, keys: Sequence[str], metric: str, name: str, show: str | None = None) -> FigureResult:
        """Issue 15: learning curves per arm (plateau evidence); ``show``: a config key whose value per arm
        the caption states (Q1: the lr each arm was chosen at)."""
        dims = {k: list(grid(sweep).get(k) or sorted({r.config.get(k) for r in runs(sweep)}, key=str)) for k in keys}
        present = [(label, m) for label, m in arms_of(dims) if any(r.matches(m) for r in runs(sweep))]
        return fig_learning_curves(runs(sweep), sweep, present, metric, out_dir, name, show)  # `when:`-folded arms: none
    makers: dict[str, list[Callable[[], FigureResult]]] = {
        "q1": [lambda: fig_q1_scaling(runs("q1_scaling"), grid("q1_scaling"), out_dir),
               lambda: curves("q1_scaling", ("model.attention.scaling", "model.head_dim"), "val/acc", "q1_curves",
                              show="train.lr"),
               lambda: curves("q1_bf16", ("model.attention.scaling", "train.precision"), "val/acc", "q1_bf16_curves",
                              show="train.lr")],
        "q2": [lambda: fig_q2_order(runs("q2_positional"), grid("q2_positional"), out_dir),
               lambda: fig_q2_length(runs("q2_positional"), grid("q2_positional"), out_dir),
               lambda: fig_q2_length(runs("q2_lookup"), grid("q2_lookup"), out_dir, "q2_lookup_length"),
               lambda: curves("q2_lookup", ("model.positional",), "val/acc", "q2_lookup_curves")],
        "q3": [lambda: fig_q3_length(runs("q3_attention"), grid("q3_attention"), out_dir),
               lambda: curves("q3_attention", ("model.arch", "model.cross_attention"), "val/token_acc", "q3_curves")],
        "q4": [lambda: fig_q4_quality(runs("q4_additive"), grid("q4_additive"), out_dir),
               lambda: curves("q4_additive", ("model.attention.kind", "model.attention.scaling", "model.head_dim"),
                              "val/acc", "q4_curves"),
               lambda: fig_q4_cost(collection.attention_cost, out_dir, collection.attention_cost_error)],
        "q5": [lambda: fig_q5_table(by_sweep, grid("q5_finetune"), out_dir),
               lambda: fig_q5_labels(runs("q5_finetune"), grid("q5_finetune"), out_dir)],
        "q6": [lambda: fig_q6_pooling(runs("q6_cls_sep"), grid("q6_cls_sep"), out_dir),
               lambda: fig_q6_sep(runs("q6_sep_segments"), grid("q6_sep_segments"), out_dir)],
    }
    return {q: [make() for make in fns] for q, fns in makers.items()}
