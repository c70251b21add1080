"""Per-setting learning-rate selection (Q1: each arm at its own best lr, as Britz et al. 2017 tuned
per setting), built on two ordinary sweeps and the run records; no search logic of its own.

1. A *selection* sweep (e.g. ``sweeps/q1_lr_select.yaml``) trains every setting at every lr of a
   grid with a few seeds, with ``data.selection_split: true``: each run is also evaluated on
   ``val_select``, a held-out split disjoint from ``val`` (another data seed).
2. The *final* sweep (``sweeps/q1_scaling.yaml``) sets ``train.lr_from: auto:<selection sweep>``.
   Before a run trains, :func:`select_lr` reads the selection sweep's finished runs whose config
   equals this run's in every key but the seed, the lr and where outputs go
   (:data:`IGNORED`), averages ``val_select/<monitor metric>`` over seeds per lr, and takes the
   best (ties: the smaller lr). ``val`` never enters the choice, so the reported ``val`` metrics
   are not selected on.
3. A final run whose seed and chosen lr equal a finished selection run is that same training
   (same init, data order and splits): :func:`adopt_selection_run` copies its record (metrics,
   per-example outcomes; not its checkpoints, the record points at them) instead of training again.
   So does a run that another final sweep of the same selection has trained already (same
   settings, seed, lr and precision; ``experiment`` aside).

The executor orders the final sweep after the selection sweep (``train.lr_from`` is a dependency
like ``finetune.pretrained: auto:``). The record of every final run has ``lr_selection``: the
sweep, the lr grid with the mean selection score and the seeds behind each, and the choice.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections import defaultdict
from pathlib import Path

from ..config import ConfigError, RunConfig, flatten, to_dict
from ..runs.records import read_summary, write_config, write_summary
from ..runs.summary import RunSummary, Status

# train.precision: the lr chosen at full precision is the one a low-precision run of that arm trains at
# (Q1's bf16 runs); it is no copy of a selection run of another precision (adopt_selection_run).
IGNORED = ("seed", "experiment", "train.lr", "train.lr_from", "train.out_dir", "train.wandb", "data.num_workers",
           "data.cache_dir", "train.accelerator", "model.vocab_size", "train.precision")


def _identity(flat: dict) -> dict:
    return {k: v for k, v in flat.items() if k not in IGNORED}


def _selection_runs(cfg: RunConfig) -> tuple[str, Path, list[tuple[Path, RunSummary]]]:
    sweep = cfg.train.lr_from.removeprefix("auto:")
    root = Path(cfg.train.out_dir) / sweep
    mine = _identity(flatten(to_dict(cfg)))
    return sweep, root, _finished_like(root.glob("*/"), mine)


def _finished_like(run_dirs, identity: dict) -> list[tuple[Path, RunSummary]]:
    """The finished runs among ``run_dirs`` whose settings are ``identity`` (:data:`IGNORED` aside)."""
    found = []
    for run_dir in sorted(p for p in run_dirs if p.is_dir()):
        summary = read_summary(run_dir)
        if summary is not None and summary.status == Status.FINISHED and _identity(summary.config) == identity:
            found.append((run_dir, summary))
    return found


def select_lr(cfg: RunConfig) -> dict | None:
    """The selection record for ``cfg`` (``train.lr_from: auto:<sweep>``), or None without one.
    Raises :class:`ConfigError` when the selection sweep has no matching finished run."""
    if not cfg.train.lr_from:
        return None
    sweep, root, runs = _selection_runs(cfg)
    key = "val_select/" + cfg.train.monitor.split("/", 1)[-1]
    scores: dict[float, list[float]] = defaultdict(list)
    for _, summary in runs:
        value = summary.metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            scores[float(summary.config["train.lr"])].append(float(value))
    if not scores:
        raise ConfigError(
            f"train.lr_from={cfg.train.lr_from}: no finished {sweep} run under {root} with this run's settings and "
            f"{key}; run `ablate sweep {sweep}` first (its runs need data.selection_split=true)"
        )
    sign = 1.0 if cfg.train.monitor_mode == "max" else -1.0
    means = {lr: sum(v) / len(v) for lr, v in scores.items()}
    best = max(sorted(means), key=lambda lr: sign * means[lr])  # sorted: the first (smaller) lr wins a tie
    return {"sweep": sweep, "metric": key, "lr": best,
            "grid": {str(lr): {"mean": means[lr], "n": len(scores[lr])} for lr in sorted(means)}}


def _same_training(cfg: RunConfig, selection: dict, own_sweep: Path) -> tuple[Path, RunSummary] | None:
    """The finished run whose training this run would repeat (same settings, seed, chosen lr and
    precision): a selection run, else a run another final sweep of the same selection trained
    itself (Q1: q1_bf16's fp32 arm is q1_scaling's d_k = 256 runs)."""
    sweep, root, runs = _selection_runs(cfg)
    mine = _identity(flatten(to_dict(cfg)))
    others = (p for p in Path(cfg.train.out_dir).glob("*/*/") if p.parent not in (root, own_sweep))
    siblings = [(d, s) for d, s in _finished_like(others, mine)
                if not s.reused_from and (s.lr_selection or {}).get("sweep") == sweep]
    for source, summary in [*runs, *siblings]:  # selection runs first: a sibling's own copy is never the source
        conf = summary.config
        if (conf.get("seed") == cfg.seed and float(conf["train.lr"]) == selection["lr"]
                and conf.get("train.precision") == cfg.train.precision):
            return source, summary
    return None


def adopt_selection_run(cfg: RunConfig, run_dir: Path, selection: dict | None) -> RunSummary | None:
    """Step 3 of the module docstring: the record of this run copied from the run that already did
    its training (:func:`_same_training`), or None when there is none."""
    if selection is None:
        return None
    run_dir = Path(run_dir)
    found = _same_training(cfg, selection, run_dir.parent)
    if found is None:
        return None
    source, summary = found
    shutil.copytree(source, run_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("checkpoints", "wandb", "summary.json", "stdout.log", "*.lock", ".*.tmp"))
    chosen = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=selection["lr"]))
    write_config(run_dir, chosen)
    adopted = dataclasses.replace(
        summary, run_id=run_dir.name, experiment=cfg.experiment, run_dir=str(run_dir),
        config={**flatten(to_dict(cfg)), "train.lr": selection["lr"]},
        config_hash=run_dir.name.split("-", 1)[-1], lr_selection=selection, reused_from=str(source))
    write_summary(run_dir, adopted)
    print(f"[{adopted.status}] {run_dir}  {source} is this training (the chosen lr={selection['lr']:g}, "
          "same settings and seed): record copied")
    return adopted
