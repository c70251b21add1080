"""The sweep index (``runs/<suite>/<sweep>/sweep.json``) and the run records as wandb's search
engine sees them (``sweeps.SweepRun``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_text
from ..runs import records
from ..runs.summary import RunSummary
from .validate import Point, SweepSpec, sweeps_engine, to_python


def metric_of(summary: RunSummary | None, name: str | None):
    if not summary or not name:
        return None
    value = summary.metrics.get(name)
    if value is None:
        value = summary.best.get(name)
    return value


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def records_in(sweep_dir: Path) -> dict[str, RunSummary]:
    out = {}
    for path in sorted(Path(sweep_dir).glob("*/summary.json")):
        summary = records.read_summary(path.parent)
        if summary:
            out[summary.run_id] = summary
    return out


_STATE = {"finished": "finished", "diverged": "finished", "failed": "failed", "running": "running",
          "interrupted": "running"}


def sweep_run(spec: SweepSpec, summary: RunSummary):
    engine = sweeps_engine()
    params = {k: {"value": summary.config.get(k)} for k in spec.parameters}
    metrics = {k: v for k, v in summary.metrics.items() if isinstance(v, (int, float))}
    return engine.SweepRun(name=summary.run_id, state=_STATE.get(summary.status, "running"),
                           config=params, summaryMetrics=metrics)


def sweep_run_from_params(params: dict, state: str):
    engine = sweeps_engine()
    return engine.SweepRun(state=state, config={k: {"value": v} for k, v in params.items()})


def write_index(plan, suggested: Sequence[Point], options) -> dict:
    """``<sweep dir>/sweep.json`` of an executor's ``SweepPlan`` (and ``ExecutorOptions``), rebuilt from the
    run records and written atomically."""
    spec = plan.spec
    path = plan.sweep_dir / "sweep.json"
    points = plan.points if spec.method == "grid" else list(suggested)
    entries, counts = [], {}
    if spec.method != "grid":  # other executors' suggestions stay listed
        old = _read_json(path)
        mine = {p.run_id for p in points}
        entries += [e for e in (old or {}).get("points", []) if e.get("run_id") not in mine]
    cache: dict = {}
    for p in points:
        if p.run_id not in cache:
            cache[p.run_id] = records.read_summary(p.run_dir)
        summary = cache[p.run_id]
        status = str(summary.status) if summary else "pending"
        entries.append({"index": p.index, "params": p.params, "run_id": p.run_id, "status": status,
                        "metric": metric_of(summary, spec.metric_name)})
    seen = set()
    for e in entries:
        if e["run_id"] not in seen:
            seen.add(e["run_id"])
            counts[e["status"]] = counts.get(e["status"], 0) + 1
    index = {
        "sweep": spec.name,
        "file": str(spec.path),
        "file_hash": spec.file_hash,
        "method": spec.method,
        "metric": {"name": spec.metric_name, "goal": spec.metric_goal},
        "command": ["ablate", spec.subcommand, *spec.base_args, "${args}"],
        "scale": plan.scale,
        "suite": plan.out_dir.name,
        "max_runs": options.max_runs,
        "extra": options.extra,
        "n_points": len(entries),
        "n_runs": len(seen),
        "counts": counts,
        "needs": sorted(plan.needs),
        "updated_at": now(),
        "points": entries,
    }
    atomic_write_text(path, json.dumps(to_python(index), indent=2, default=str))
    return index


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
