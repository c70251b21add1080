"""Validation-sampling variance: a paired bootstrap over validation examples.

Every run of a sweep sees the same validation set, so the spread over seeds measures training
noise only; a second validation sample would move every arm's score. Runs written since
``training/eval_records.py`` keep their per-example outcomes (``val_examples.json``). For a
contrast ``sum_i c_i * mean_{seeds of group i} metric(run)`` this module resamples the examples
with replacement (``N_BOOT`` times, fixed seed), applies the SAME resample to every run of every
arm and seed (the examples are shared, so the resample is paired), recomputes the contrast and
returns its variance. :func:`.stats.contrast_ci` adds it to the seed variance.

When a run has no per-example file (older runs), the metric is not a validation metric (e.g.
``attn/entropy``), or the runs did not see the same validation set (fingerprints differ), the
interval stays the seed-only t-interval and the reason is returned for the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..training.eval_records import EXAMPLES_FILE
from .collect import RunRecord

N_BOOT = 2000
BOOT_SEED = 20261202

SEED_ONLY = "seeds only"
WITH_EXAMPLES = "seeds + validation examples (paired bootstrap)"


@lru_cache(maxsize=4096)
def _read(path: str, mtime: float) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sets"), dict) else None


def run_examples(run: RunRecord) -> dict | None:
    """The run's ``val_examples.json`` (None when absent or unreadable)."""
    if run.path is None:
        return None
    f = Path(run.path).parent / EXAMPLES_FILE
    try:
        mtime = f.stat().st_mtime
    except OSError:
        return None
    return _read(str(f), mtime)


def metric_arrays(record: dict | None, metric: str) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(fingerprint, num, den) of ``metric`` (``val/acc``, ``val_len4x/acc`` ...) in one record."""
    if record is None or "/" not in metric:
        return None
    set_name, key = metric.split("/", 1)
    entry = record["sets"].get(set_name)
    cell = entry.get("metrics", {}).get(key) if isinstance(entry, dict) else None
    if not isinstance(cell, dict) or len(cell.get("num", ())) != len(cell.get("den", ())) or not cell.get("num"):
        return None
    return str(entry.get("fingerprint")), np.asarray(cell["num"], float), np.asarray(cell["den"], float)


def bootstrap_contrast(arrays: Sequence[tuple[float, np.ndarray, np.ndarray]], log: bool = False,
                       n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> float:
    """Variance over a paired bootstrap of examples of ``sum_r w_r * f(sum(num_r) / sum(den_r))``.

    ``arrays``: one ``(weight, num, den)`` per run, all over the same examples (same length);
    ``f`` is log when ``log``. Replicates where a run's resampled denominator is 0 are dropped.
    """
    weights = np.asarray([w for w, _, _ in arrays], float)
    num = np.stack([a for _, a, _ in arrays], axis=1)  # [E, R]
    den = np.stack([d for _, _, d in arrays], axis=1)
    n_ex = num.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_ex, np.full(n_ex, 1.0 / n_ex), size=n_boot).astype(float)  # [B, E]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (counts @ num) / (counts @ den)  # [B, R]
        if log:
            values = np.log(values)
    contrast = values @ weights
    contrast = contrast[np.isfinite(contrast)]
    return float(np.var(contrast, ddof=1)) if len(contrast) > 1 else math.nan


def example_variance(groups: Sequence[Mapping[Hashable, Sequence[RunRecord]]], coeffs: Sequence[float], metric: str,
                     log: bool = False) -> tuple[float, str]:
    """(validation-sampling variance of the contrast, how the interval was built).

    ``groups[i]`` maps a seed to the runs averaged into that seed's value of group i.
    Returns ``(0.0, "seeds only: <why>")`` when the bootstrap is not possible.
    """
    arrays: list[tuple[float, np.ndarray, np.ndarray]] = []
    prints: set[str] = set()
    for c, group in zip(coeffs, groups):
        for runs in group.values():
            for r in runs:
                got = metric_arrays(run_examples(r), metric)
                if got is None:
                    why = "no per-example outcomes" if run_examples(r) is None else f"no per-example {metric}"
                    return 0.0, f"{SEED_ONLY}: {why} for run {r.run_id} (older run, or not a validation metric)"
                prints.add(got[0])
                arrays.append((c / len(group) / len(runs), got[1], got[2]))
    if len(prints) > 1 or len({len(a) for _, a, _ in arrays}) > 1:
        return 0.0, f"{SEED_ONLY}: the runs did not see the same validation examples (fingerprints differ)"
    var = bootstrap_contrast(arrays, log=log)
    if not math.isfinite(var):
        return 0.0, f"{SEED_ONLY}: the bootstrap had no finite replicate"
    return var, WITH_EXAMPLES
