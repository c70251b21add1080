"""Read run records for the report.

- local: ``runs/<suite>/<sweep>/<run_id>/summary.json`` (the sweep is the directory name) and
  the Q4 attention-cost benchmark ``runs/<suite>/q4_attention_cost.json``;
- online: the runs of a wandb sweep (:func:`collect_wandb`);
- the grid a sweep file asks for (``sweeps/<sweep>.yaml``, read and normalised by the sweep
  executor's own parser), to list missing runs.

Corrupt or unreadable ``summary.json`` files are kept in a list for the report, never fatal.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, flatten, to_dict
from ..runs.summary import FINAL, CorruptRecord, RunSummary, Status
from ..sweeps.validate import SweepSpec, grid_points, parse_point

USABLE_STATUSES = FINAL  # runs whose metrics count (a diverged run's last metrics)

ATTENTION_COST_FILE = "q4_attention_cost.json"

# Config entries that differ between runs of one grid point without changing the experiment
# (where outputs go, the checkpoint path of seed s, ...). Ignored when grouping runs.
PER_RUN_KEYS = frozenset(
    {
        "seed",
        "experiment",
        "finetune.pretrained",
        "train.out_dir",
        "train.wandb",
        "train.accelerator",
        "train.devices",
        "train.strategy",
        "data.num_workers",
        "data.cache_dir",
    }
)

# Sweep parameters that are not grid dimensions of a suite (the executor sets the scale per suite).
GRID_IGNORED_KEYS = frozenset({"scale", "train.out_dir", "train.wandb"})


@dataclass
class RunRecord:
    sweep: str
    run_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    seed: Any = None
    path: Path | None = None
    diverged_step: int | None = None
    error: str | None = None
    plateau_step: int | None = None  # train.patience stopped the run here (its curve was flat)
    lr_selection: dict[str, Any] | None = None  # train.lr_from: the lr grid's scores and the choice

    @property
    def usable(self) -> bool:
        return self.status in USABLE_STATUSES

    def metric(self, key: str) -> float | None:
        """The metric as a finite float, else None (absent, null, NaN, inf, not a number)."""
        v = self.metrics.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        v = float(v)
        return v if math.isfinite(v) else None

    def matches(self, match: Mapping[str, Any]) -> bool:
        return config_matches(self.config, match)


@dataclass
class RunCollection:
    """Everything read from ``runs/<suite>``."""

    root: Path
    runs: list[RunRecord] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    attention_cost: list[dict] | None = None
    attention_cost_path: Path | None = None
    attention_cost_error: str | None = None

    def by_sweep(self) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = defaultdict(list)
        for r in self.runs:
            out[r.sweep].append(r)
        return dict(out)

    @property
    def sweeps(self) -> list[str]:
        return sorted({r.sweep for r in self.runs})


# --- values ------------------------------------------------------------------------------
def same_value(a: Any, b: Any) -> bool:
    """Config value equality across YAML/JSON spellings: 256 == 256.0 == "256", True != 1."""
    if a is None or b is None:
        other = b if a is None else a
        return other is None or str(other).lower() in ("null", "~")  # "none" is a toggle value, not null
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool):
            return a == b
        s = str(b if isinstance(a, bool) else a).lower()
        return s == str(a if isinstance(a, bool) else b).lower()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def canonical(v: Any) -> Any:
    """A hashable, spelling-independent form of a config value (for grouping)."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return tuple(canonical(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, canonical(x)) for k, x in v.items()))
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def config_matches(config: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    """True when every ``key: value`` of ``match`` holds in ``config`` (absent key: no match)."""
    return all(k in config and same_value(config[k], v) for k, v in match.items())


def fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def fmt_point(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in point.items())


# --- local run records -------------------------------------------------------------------
def _seed_of(config: Mapping[str, Any], run_id: str) -> Any:
    if config.get("seed") is not None:
        try:
            return int(config["seed"])
        except (TypeError, ValueError):
            return config["seed"]
    m = re.match(r"^s(\d+)-", run_id)
    return int(m.group(1)) if m else None


def read_record(path: Path, sweep: str | None = None) -> RunRecord:
    """One ``summary.json`` as the report sees it. Raises :class:`CorruptRecord` (one line)."""
    path = Path(path)
    summary = RunSummary.load(path)
    return RunRecord(
        sweep=sweep or path.parent.parent.name,
        run_id=summary.run_id,
        status=summary.status,
        config=summary.config,
        metrics=summary.metrics,
        seed=_seed_of(summary.config, summary.run_id),
        path=path,
        diverged_step=summary.diverged_step,
        error=summary.error,
        plateau_step=summary.plateau_step,
        lr_selection=summary.lr_selection,
    )


def load_attention_cost(path: Path) -> list[dict]:
    """Rows of the attention-cost benchmark JSON. Raises ValueError (one line) when malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CorruptRecord(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise CorruptRecord("no 'rows' list")
    return [r for r in rows if isinstance(r, dict)]


def collect_runs(runs_dir: str | Path, suite: str) -> RunCollection:
    """Read every ``<runs_dir>/<suite>/<sweep>/*/summary.json`` (and the attention-cost JSON)."""
    root = Path(runs_dir) / suite
    coll = RunCollection(root=root)
    if not root.is_dir():
        return coll
    for path in sorted(root.glob("*/*/summary.json")):
        try:
            coll.runs.append(read_record(path))
        except ValueError as e:
            coll.corrupt.append((path, str(e)))
    cost = root / ATTENTION_COST_FILE
    if cost.is_file():
        coll.attention_cost_path = cost
        try:
            coll.attention_cost = load_attention_cost(cost)
        except (OSError, ValueError) as e:
            coll.attention_cost_error = str(e)
    return coll


def group_runs(runs: Iterable[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """Runs grouped by their config minus seed (and minus :data:`PER_RUN_KEYS`)."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in runs:
        key = tuple(sorted((k, canonical(v)) for k, v in r.config.items() if k not in PER_RUN_KEYS))
        groups[key].append(r)
    return dict(groups)


def varying_keys(runs: Iterable[RunRecord], exclude: Iterable[str] = ()) -> dict[str, list]:
    """Config keys (minus per-run keys and ``exclude``) that take more than one value in ``runs``."""
    values: dict[str, dict] = defaultdict(dict)
    skip = PER_RUN_KEYS | set(exclude)
    runs = list(runs)
    for r in runs:
        for k, v in r.config.items():
            if k not in skip:
                values[k].setdefault(canonical(v), v)
    keys = {k for r in runs for k in r.config} - skip
    out = {}
    for k in sorted(keys):
        vs = values.get(k, {})
        missing = any(k not in r.config for r in runs)
        if len(vs) + missing > 1:
            out[k] = sorted(vs.values(), key=lambda x: (str(type(x)), str(x)))
    return out


# --- sweep files -------------------------------------------------------------------------
def sweep_file(sweeps_dir: str | Path, sweep: str) -> Path:
    return Path(sweeps_dir) / f"{sweep}.yaml"


def sweep_grid(spec: SweepSpec) -> dict[str, list]:
    """``parameters`` of a loaded sweep file as ``dotted key -> list of values``.

    Distributions (min/max, ...) are not a grid: they give no expected points.
    """
    return {k: list(p["values"]) if "values" in p else [p["value"]]
            for k, p in spec.parameters.items() if "values" in p or "value" in p}


def grid_dimensions(spec: SweepSpec) -> dict[str, list]:
    """The grid a sweep's runs vary over: :func:`sweep_grid` without the scale, which the suite sets."""
    return {k: v for k, v in sweep_grid(spec).items() if k not in GRID_IGNORED_KEYS}


def expected_points(spec: SweepSpec, grid: Mapping[str, list], scale: str | None = None) -> list[dict]:
    """The grid points of a sweep as their runs record them, restricted to the keys of ``grid``.

    Each point is parsed as the sweep executor parses it (the experiment file's ``when:`` rules,
    its scale block, config validation), so points that normalise to one run are one point.
    In the order of the sweep file's values. Raises ConfigError when a point cannot run.
    """
    def file_order(params: dict) -> tuple:
        return tuple(grid[k].index(params[k]) for k in grid)

    seen, out = set(), []
    for params in sorted(grid_points(spec, scale), key=file_order):
        config = flatten(to_dict(parse_point(spec, params)))
        point = {k: config[k] for k in grid}
        key = tuple((k, canonical(v)) for k, v in point.items())
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


def missing_points(points: Iterable[dict], runs: Iterable[RunRecord]) -> list[tuple[dict, list[str]]]:
    """Expected points with no finished (or diverged) run, each with the statuses of any records found."""
    runs = list(runs)
    out = []
    for point in points:
        found = [r for r in runs if r.matches(point)]
        if not any(r.usable for r in found):
            out.append((point, sorted({r.status for r in found})))
    return out


# --- wandb -------------------------------------------------------------------------------
_WANDB_STATES = {"finished": Status.FINISHED, "running": Status.RUNNING, "crashed": Status.FAILED,
                 "failed": Status.FAILED, "killed": Status.FAILED}


def collect_wandb(sweep_path: str, sweep_name: str | None = None) -> list[RunRecord]:
    """Runs of an online wandb sweep ``entity/project/sweep_id`` as run records.

    Needs a wandb login and the network; raises ConfigError (one line) otherwise.
    """
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise ConfigError(
            f"collect_wandb({sweep_path}) needs online wandb but WANDB_MODE={mode}; "
            "report from the local run records under runs/<suite> instead"
        )
    try:
        import wandb

        api = wandb.Api(timeout=30)
        sweep = api.sweep(sweep_path)
        wruns = list(sweep.runs)
        name = sweep_name or (sweep.config or {}).get("name") or sweep_path.rsplit("/", 1)[-1]
    except Exception as e:  # noqa: BLE001 - network, login, unknown sweep: one line for the user
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"cannot read wandb sweep {sweep_path} (offline, not logged in, or no such sweep): "
            f"{type(e).__name__}: {first}"
        ) from None
    records = []
    for wr in wruns:
        config = flatten({k: v for k, v in dict(wr.config).items() if not k.startswith("_")})
        summary = dict(getattr(wr.summary, "_json_dict", {}) or {})
        metrics = {k: v for k, v in summary.items() if "/" in k and isinstance(v, (int, float))}
        status = summary.get("status") if isinstance(summary.get("status"), str) else None
        status = status or _WANDB_STATES.get(str(wr.state), str(wr.state))
        run_id = summary.get("run_id") or wr.id
        records.append(
            RunRecord(
                sweep=name, run_id=str(run_id), status=status, config=config, metrics=metrics,
                seed=_seed_of(config, str(run_id)), diverged_step=summary.get("diverged_step"),
                error=summary.get("error"), plateau_step=summary.get("plateau_step"),
            )
        )
    return records
