"""Saved wandb views per question (``ablate views q1``), built with ``wandb-workspaces``.

One wandb report per question; for each of the question's sweeps it holds two panel grids over
that sweep's runs (``experiment`` and ``scale`` filtered):

* **runs**: a parallel-coordinates panel, one axis per toggle the sweep varies, then the
  primary metrics (the sweep's metric and those its claims test);
* **by toggles**: the runs grouped by all varying toggles (seeds averaged, standard-error
  bars): one bar chart per primary metric, and line plots of the learning curves
  (``train/loss``, ``val/loss``, the sweep metric; attention statistics for Q1 and Q4) over
  ``trainer/global_step``.

:func:`build_views` is pure (no network: sweep and claims files in, view objects out);
:func:`save_views` uploads them and needs a login.

Config keys are logged flat (``model.positional`` is one key), so the backend paths name them
with ``.value`` at the end (``config.model.positional.value``); ``wandb-workspaces`` would
otherwise read a dotted name as a nested config (``config.model.value.positional``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr

from ..config import ConfigError
from ..runs.wandb_login import DEFAULT_PROJECT, LOGIN_HINT, has_wandb_login
from ..sweeps.validate import grid_points, load_sweep, parse_point
from .claims import load_claims
from .collect import grid_dimensions, sweep_file
from .figures import QUESTION_SWEEPS

STEP = "trainer/global_step"  # Lightning's WandbLogger x axis
CURVES = ("train/loss", "val/loss")
EXTRA_CURVES = {
    "q1": ("attn/entropy", "attn/logit_std", "train/grad_norm_qk"),
    "q4": ("attn/entropy", "train/step_time_ms"),
}
AGG, RANGE = "mean", "stderr"  # seeds averaged, standard-error bars


@dataclass(frozen=True)
class SweepView:
    """What one sweep's panels show."""

    sweep: str
    experiment: str
    description: str
    toggles: tuple[str, ...]  # the config keys the sweep varies, seed left out (averaged over)
    metrics: tuple[str, ...]  # the sweep metric first, then the metrics its claims test
    curves: tuple[str, ...]


def config_path(key: str) -> str:
    """The backend path of a flat config key, for run-set grouping."""
    return f"config.{key}.value"


class FlatConfigColumn(wr.ParallelCoordinatesPlotColumn):
    """A parallel-coordinates axis on a flat dotted config key (``config:model.positional.value``);
    the library's own column would address ``config:model.value.positional``."""

    def _to_model(self):
        column = super()._to_model()
        column.accessor = f"config:{self.metric.name}.value"
        return column


def sweep_view(question: str, sweep: str, sweeps_dir: str | Path, claims_path: str | Path) -> SweepView:
    """A sweep's toggles (from its grid), experiment name, and metrics (sweep metric + its claims')."""
    spec = load_sweep(sweep_file(sweeps_dir, sweep))
    grid = grid_dimensions(spec)
    toggles = tuple(k for k, values in grid.items() if len(values) > 1 and k != "seed")
    experiment = parse_point(spec, next(iter(grid_points(spec, None)))).experiment
    claims = load_claims(claims_path, sweeps_dir)
    metrics = [spec.metric_name] if spec.metric_name else []
    metrics += [c.metric for c in claims if c.sweep == sweep and c.source == "runs" and "{" not in c.metric]
    metrics = tuple(dict.fromkeys(metrics))
    curves = tuple(dict.fromkeys((*CURVES, *metrics[:1], *EXTRA_CURVES.get(question, ()))))
    return SweepView(sweep, experiment, str(spec.raw.get("description") or sweep), toggles, metrics, curves)


def runset(view: SweepView, entity: str, project: str, scale: str, grouped: bool) -> wr.Runset:
    return wr.Runset(
        entity=entity,
        project=project,
        name=f"{view.sweep} ({scale})" + (" by toggles" if grouped else ""),
        filters=[expr.Config("experiment") == view.experiment, expr.Config("scale") == scale],
        groupby=[config_path(t) for t in view.toggles] if grouped else [],
    )


def panels(view: SweepView) -> tuple[list, list]:
    """(the runs grid's panels, the grouped grid's panels)."""
    toggles = " x ".join(view.toggles) or "runs"
    coords = wr.ParallelCoordinatesPlot(
        title=f"{view.sweep}: {toggles} -> {', '.join(view.metrics)}",
        columns=[FlatConfigColumn(wr.Config(t)) for t in view.toggles]
        + [wr.ParallelCoordinatesPlotColumn(wr.SummaryMetric(m)) for m in view.metrics],
    )
    bars = [
        wr.BarPlot(title=f"{m} by {toggles} (mean over seeds, std. error)", metrics=[m], orientation="v",
                   groupby_aggfunc=AGG, groupby_rangefunc=RANGE, aggregate=True)
        for m in view.metrics
    ]
    lines = [
        wr.LinePlot(title=f"{key} by {toggles}", x=STEP, y=[key], groupby_aggfunc=AGG, groupby_rangefunc=RANGE,
                    aggregate=True)
        for key in view.curves
    ]
    return [coords], [*bars, *lines]


def build_views(question: str, entity: str, project: str, scale: str = "quick", sweeps_dir: str | Path = "sweeps",
                claims_path: str | Path = "experiments/claims.yaml") -> wr.Report:
    """The wandb report for ``question`` (q1 … q6): built, not saved. Raises ConfigError (one line)."""
    if question not in QUESTION_SWEEPS:
        raise ConfigError(f"question {question!r} is not valid; valid: {', '.join(QUESTION_SWEEPS)}")
    blocks: list = []
    for sweep in QUESTION_SWEEPS[question]:
        view = sweep_view(question, sweep, sweeps_dir, claims_path)
        by_runs, by_toggles = panels(view)
        blocks += [
            wr.H2(f"{view.sweep}: {view.description}"),
            wr.P(f"Toggles: {', '.join(view.toggles) or 'none'}; seeds averaged; metrics: {', '.join(view.metrics)}."),
            wr.PanelGrid(runsets=[runset(view, entity, project, scale, grouped=False)], panels=by_runs),
            wr.PanelGrid(runsets=[runset(view, entity, project, scale, grouped=True)], panels=by_toggles),
        ]
    return wr.Report(project=project, entity=entity, title=f"transformer-ablations {question} ({scale})",
                     description=f"Ablation views of {question}: toggles, primary metrics and learning curves.",
                     blocks=blocks, width="fluid")


def save_views(report: wr.Report) -> str:
    """Save (upload) a built report; needs a wandb login and the network. Returns its URL."""
    report.save()
    return report.url


def describe_views(report: wr.Report) -> list[str]:
    """One line per panel grid and panel: what ``ablate views --dry-run`` prints."""
    lines = [f"report: {report.title}"]
    for block in report.blocks:
        if not isinstance(block, wr.PanelGrid):
            continue
        rs = block.runsets[0]
        grouped = f"; grouped by {', '.join(rs.groupby)}" if rs.groupby else ""
        lines.append(f"  runs {rs.name}: {rs.filters}{grouped}")
        for panel in block.panels:
            if isinstance(panel, wr.ParallelCoordinatesPlot):
                keys = [c._to_model().accessor for c in panel.columns]
            else:
                keys = [*([panel.x] if isinstance(panel, wr.LinePlot) else []), *(getattr(panel, "y", None) or panel.metrics)]
            lines.append(f"    {type(panel).__name__}: {', '.join(map(str, keys))}")
    return lines


def views(questions: list[str], *, scale: str = "quick", project: str | None = None, entity: str | None = None,
          sweeps_dir: str | Path = "sweeps", claims_path: str | Path = "experiments/claims.yaml",
          dry_run: bool = False, env: Mapping[str, str] = os.environ) -> int:
    """``ablate views``: build each question's report; save it when logged in (``dry_run``: print
    what would be saved, login or not). Not logged in: one line saying how to log in, exit 2."""
    logged_in = has_wandb_login(env) and env.get("WANDB_MODE", "").lower() not in ("offline", "disabled", "dryrun")
    if not logged_in and not dry_run:
        why = f"WANDB_MODE={env['WANDB_MODE']} keeps wandb offline; unset it" if has_wandb_login(env) \
            else f"not logged in to wandb; {LOGIN_HINT}"
        print(f"ablate views: {why}, then run `ablate views {' '.join(questions)}` again "
              "(`--dry-run` shows the views without a login)", file=sys.stderr)
        return 2
    project = project or env.get("WANDB_PROJECT") or DEFAULT_PROJECT
    entity = entity or env.get("WANDB_ENTITY") or (_default_entity() if logged_in else "<entity>")
    for question in questions:
        report = build_views(question, entity, project, scale, sweeps_dir, claims_path)
        if dry_run:
            print("\n".join(describe_views(report)))
        else:
            print(f"views {question}: {save_views(report)}", flush=True)
    return 0


def _default_entity() -> str:
    import wandb

    return wandb.Api(timeout=30).default_entity
