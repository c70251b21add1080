"""Figures and section texts of the real-text suite (``make real``: runs/real/ -> reports/real/).

The real suite runs other sweeps than the quick suite (``sweeps/real_*.yaml``, claims in
``experiments/claims_real.yaml``); :data:`SUITE_SWEEPS` says which feed which question, and the
report draws one figure per sweep with the helpers of :mod:`.plotting` (same error bars and notes
as the quick suite's figures).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .collect import RunCollection, RunRecord, fmt_value
from .evaluate import cell_estimate
from .plotting import (
    FigureResult,
    Grid,
    _averaged_note,
    _axis,
    _bars,
    _bars_of,
    _figure,
    _lines_vs_x,
    _no_runs,
    _Notes,
    _save,
    _yerr,
)

REAL_SUITE = "real"
# which sweeps feed which question's section, figures and seed counts
SUITE_SWEEPS: dict[str, dict[str, tuple[str, ...]]] = {
    REAL_SUITE: {
        "q1": ("real_q1_scaling",),
        "q2": ("real_q2_mlm", "real_q2_causal"),
        "q5": ("real_q5_pretrain", "real_q5_finetune"),
        "q6": ("real_q6_probe",),
    },
}
# the section texts where the real suite measures something else than the quick suite's tasks
SUITE_TEXTS: dict[str, dict[str, str]] = {
    REAL_SUITE: {
        "q1": ("On Tiny Shakespeare: masked-LM with and without 1/√d_k at d_k = 16 and 256, two learning rates "
               "(each arm compared at its best one)."),
        "q2": ("On Tiny Shakespeare: masked-LM with learned or no positions (Haviv et al. 2022), and a causal LM per "
               "positional encoding trained at T = 64 tokens and evaluated at T, 2T and 4T (Press et al. 2022)."),
        "q5": ("Pretraining on the unlabelled SST-2 training sentences (masked-LM or causal LM), then fine-tuning on "
               "500 or 2000 SST-2 labels against a random init with the same tokenizer; all 872 dev sentences."),
        "q6": "A linear probe on the frozen masked-LM encoder: [CLS] vector vs mean of the token vectors, on SST-2.",
    },
}
_POSITIONALS = ("none", "sinusoidal", "learned", "rope", "alibi")


def _fig_q1(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = out_dir / "real_q1_scaling.png", "Q1 (Shakespeare MLM): loss, accuracy and max attention prob vs d_k"
    if not runs:
        return _no_runs(path, title, "real_q1_scaling")
    notes = _Notes()
    dks = _axis("model.head_dim", grid, runs)
    series = [(f"scaling={fmt_value(s)} lr={fmt_value(lr)}", {"model.attention.scaling": s, "train.lr": lr})
              for s in _axis("model.attention.scaling", grid, runs, ("sqrt_dk", "none"))
              for lr in _axis("train.lr", grid, runs)]
    fig, axes = _figure(1, 3)
    for ax, metric in zip(axes[0], ("val/loss", "val/acc", "attn/max_prob")):
        _lines_vs_x(ax, runs, notes, "model.head_dim", dks, series, metric, logx=True)
    _averaged_note(runs, ("model.head_dim", "model.attention.scaling", "train.lr"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def _fig_q2_mlm(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = out_dir / "real_q2_mlm.png", "Q2 (Shakespeare MLM): validation loss with and without positions"
    if not runs:
        return _no_runs(path, title, "real_q2_mlm")
    notes = _Notes()
    fig, axes = _figure(1, 1, 5, 3.3)
    _bars(axes[0][0], runs, notes, "model.positional", _axis("model.positional", grid, runs, ("learned", "none")),
          "objective", ["mlm"], "val/loss")
    _averaged_note(runs, ("model.positional",), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def _fig_q2_length(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = out_dir / "real_q2_length.png", "Q2 (Shakespeare causal LM): validation loss at T, 2T and 4T"
    if not runs:
        return _no_runs(path, title, "real_q2_causal")
    notes = _Notes()
    positionals = _axis("model.positional", grid, runs, _POSITIONALS)
    fig, axes = _figure(1, 1, 6, 3.6)
    ax = axes[0][0]
    for i, (label, metric) in enumerate((("T", "val/loss"), ("2T", "val_len2x/loss"), ("4T", "val_len4x/loss"))):
        px, py, pe = [], [], []
        for x, pos in enumerate(positionals):
            est = cell_estimate(runs, {"model.positional": pos}, metric)
            if notes.see(est, f"positional={fmt_value(pos)} [{metric}]"):
                px.append(x + (i - 1) * 0.12)
                py.append(est.mean)
                pe.append(_yerr(est))
        if px:
            ax.errorbar(px, py, yerr=_bars_of(pe), marker="o", linestyle="none", capsize=3,
                        label=f"evaluated at {label}")
    ax.set_xticks(range(len(positionals)))
    ax.set_xticklabels([fmt_value(p) for p in positionals])
    ax.set_xlim(-0.5, len(positionals) - 0.5)
    ax.set_xlabel("model.positional (trained at T = seq_len)")
    ax.set_ylabel("validation loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _averaged_note(runs, ("model.positional",), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def _fig_q5(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = out_dir / "real_q5_labels.png", "Q5 (SST-2): dev accuracy vs labels per pretraining objective"
    if not runs:
        return _no_runs(path, title, "real_q5_finetune")
    notes = _Notes()
    series = [(f"objective={o}", {"objective": o}) for o in _axis("objective", grid, runs, ("mlm", "causal", "none"))]
    fig, axes = _figure(1, 1, 5, 3.6)
    _lines_vs_x(axes[0][0], runs, notes, "data.n_train", _axis("data.n_train", grid, runs), series, "val/acc",
                logx=True)
    axes[0][0].axhline(0.5, color="0.3", linestyle="--", linewidth=1)
    _averaged_note(runs, ("objective", "data.n_train"), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def _fig_q6(runs: Sequence[RunRecord], grid: Grid, out_dir: Path) -> FigureResult:
    path, title = out_dir / "real_q6_probe.png", "Q6 (SST-2): frozen-encoder probe accuracy per pooling"
    if not runs:
        return _no_runs(path, title, "real_q6_probe")
    notes = _Notes()
    fig, axes = _figure(1, 1, 5, 3.3)
    _bars(axes[0][0], runs, notes, "finetune.pooling", _axis("finetune.pooling", grid, runs, ("cls", "mean")),
          "finetune.mode", ["probe"], "val/acc", chance=0.5)
    _averaged_note(runs, ("finetune.pooling",), notes)
    _save(fig, path, title)
    return FigureResult(path.stem, path, title, notes.lines())


def make_real_figures(collection: RunCollection, grids: Mapping[str, Grid], out_dir: Path) -> dict[str, list[FigureResult]]:
    """Every figure of the real-text report, by question (a PNG with a note where data is missing)."""
    out_dir = Path(out_dir)
    by_sweep = collection.by_sweep()

    def make(fn: Callable, sweep: str) -> Callable[[], FigureResult]:
        return lambda: fn(by_sweep.get(sweep, []), grids.get(sweep) or {}, out_dir)

    makers = {"q1": [make(_fig_q1, "real_q1_scaling")],
              "q2": [make(_fig_q2_mlm, "real_q2_mlm"), make(_fig_q2_length, "real_q2_causal")],
              "q5": [make(_fig_q5, "real_q5_finetune")],
              "q6": [make(_fig_q6, "real_q6_probe")]}
    return {q: [m() for m in fns] for q, fns in makers.items()}
