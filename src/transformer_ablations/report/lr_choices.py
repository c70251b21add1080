"""The lr each arm trained at, where a sweep chose it per arm (``train.lr_from``): one table per sweep.

Each row is one arm (the sweep's own toggles), each column one lr of the selection grid with its mean
selection score (``val_select``, over the selection seeds), and the choice. The reported ``val``
metrics never enter it (training/lr_select.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .collect import RunRecord, fmt_value, varying_keys
from .document import Block, Heading, Para, Table

IGNORED = {"seed", "train.lr", "train.lr_from"}


def _arm_keys(runs: Sequence[RunRecord], grid: Mapping[str, Sequence] | None) -> list[str]:
    """The sweep's own toggles (its grid), else the keys that vary among its runs."""
    keys = [k for k, v in (grid or {}).items() if len(v) > 1 and k not in IGNORED]
    return keys or list(varying_keys(runs, exclude=IGNORED))


def lr_choice_table(runs: Sequence[RunRecord], grid: Mapping[str, Sequence] | None = None) -> tuple[Table, str] | None:
    """The lr grid's selection scores and the chosen lr per arm of one sweep, and the selection metric;
    None where no arm chose its lr."""
    chosen = [r for r in runs if r.lr_selection and r.lr_selection.get("grid")]
    if not chosen:
        return None
    keys = _arm_keys(chosen, grid)
    lrs = sorted({float(lr) for r in chosen for lr in r.lr_selection["grid"]})
    rows: dict[str, list[str]] = {}
    for r in sorted(chosen, key=lambda r: [str(r.config.get(k)) for k in keys]):
        arm = ", ".join(f"{k.split('.')[-1]}={fmt_value(r.config.get(k))}" for k in keys) or "all runs"
        if arm in rows:
            continue
        scores = {float(lr): s for lr, s in r.lr_selection["grid"].items()}
        best = float(r.lr_selection["lr"])
        cells = []
        for lr in lrs:
            s = scores.get(lr)
            text = "—" if s is None else f"{s['mean']:.3f} (n={s['n']})"
            cells.append(f"**{text}**" if lr == best else text)
        rows[arm] = [arm, *cells, f"{best:g}"]
    metric = chosen[0].lr_selection.get("metric", "val_select")
    return Table(["arm", *(f"lr {lr:g}" for lr in lrs), "chosen lr"], list(rows.values())), metric


def lr_choice_blocks(sweeps: Sequence[str], by_sweep: Mapping[str, Sequence[RunRecord]],
                     grids: Mapping[str, Mapping]) -> list[Block]:
    """A heading, the table and how to read it, for each of ``sweeps`` whose arms chose their lr."""
    blocks: list[Block] = []
    for sweep in sweeps:
        built = lr_choice_table(by_sweep.get(sweep, []), grids.get(sweep))
        if built is None:
            continue
        table, metric = built
        source = next(r.lr_selection.get("sweep") for r in by_sweep[sweep] if r.lr_selection)
        blocks += [Heading(3, f"Learning rate per arm ({sweep})"), table,
                   Para(f"Each arm trains at its own lr, chosen on `{metric}` (a held-out split; the reported "
                        f"`val` metrics are never selected on) by the selection sweep `{source}`: cells are the "
                        "mean score over its seeds, the chosen lr in bold (ties: the smaller lr). A choice at "
                        "either end of the grid may have its best lr beyond it.")]
    return blocks
