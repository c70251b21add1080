"""``ablate views`` (the wandb-workspaces report per question, built without network),
``ablate report --wandb`` offline, and ``ablate sync --dry-run`` without a login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wandb_workspaces.reports.v2 as wr
import yaml

from transformer_ablations import cli
from transformer_ablations.config import RunConfig, flatten, to_dict
from transformer_ablations.report import figures
from transformer_ablations.report.wandb_views import build_views, describe_views, views
from transformer_ablations.sweeps.sync import find_offline_runs, read_offline_run

ROOT = Path(__file__).resolve().parents[1]
SWEEPS, CLAIMS = ROOT / "sweeps", ROOT / "experiments" / "claims.yaml"
CONFIG_KEYS = set(flatten(to_dict(RunConfig())))


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("WANDB_API_KEY", "NETRC", "WANDB_ENTITY", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def toggles_of(sweep: str) -> list[str]:
    """The keys a sweep file varies (seed and the scale left out), read straight from the file."""
    params = yaml.safe_load((SWEEPS / f"{sweep}.yaml").read_text())["parameters"]
    return [k for k, p in params.items() if len(p.get("values", [])) > 1 and k != "seed"]


def grids(report: wr.Report) -> list[wr.PanelGrid]:
    return [b for b in report.blocks if isinstance(b, wr.PanelGrid)]


def test_q2_view_has_coordinates_grouped_bars_and_curves():
    report = build_views("q2", "ent", "proj", "quick", SWEEPS, CLAIMS)
    assert (report.entity, report.project) == ("ent", "proj")
    runs, by_toggles, *lookup = grids(report)  # q2_positional, then q2_lookup (issue 15)
    assert len(lookup) == 2
    for grid in (runs, by_toggles):
        (rs,) = grid.runsets
        assert rs.filters == "Config(\"experiment\") == 'q2_positional' and Config(\"scale\") == 'quick'"
    assert runs.runsets[0].groupby == []
    assert by_toggles.runsets[0].groupby == ["config.model.positional.value", "config.model.arch.value"]
    (coords,) = runs.panels
    accessors = [c._to_model().accessor for c in coords.columns]
    assert accessors[:2] == ["config:model.positional.value", "config:model.arch.value"]
    assert accessors[2] == "summary:val/acc"
    bars = [p for p in by_toggles.panels if isinstance(p, wr.BarPlot)]
    lines = [p for p in by_toggles.panels if isinstance(p, wr.LinePlot)]
    assert bars[0].metrics == ["val/acc"] and len(bars) + len(lines) == len(by_toggles.panels)
    for bar in bars:
        spec = bar._to_model().config
        assert (spec.group_agg, spec.group_area, spec.vertical, spec.aggregate) == ("mean", "stderr", True, True)
    assert {tuple(p.y) for p in lines} >= {("train/loss",), ("val/loss",), ("val/acc",)}
    assert {p.x for p in lines} == {"trainer/global_step"}
    assert all(p._to_model().config.group_agg == "mean" for p in lines)


@pytest.mark.parametrize("question", list(figures.QUESTION_SWEEPS))
def test_every_question_views_each_sweep_over_its_own_toggles(question):
    report = build_views(question, "ent", "proj", "full", SWEEPS, CLAIMS)
    sweeps = figures.QUESTION_SWEEPS[question]
    pairs = grids(report)
    assert len(pairs) == 2 * len(sweeps)
    for sweep, runs, by_toggles in zip(sweeps, pairs[::2], pairs[1::2], strict=True):
        toggles = toggles_of(sweep)
        metric = yaml.safe_load((SWEEPS / f"{sweep}.yaml").read_text())["metric"]["name"]
        assert "'full'" in runs.runsets[0].filters
        assert by_toggles.runsets[0].groupby == [f"config.{t}.value" for t in toggles]
        accessors = [c._to_model().accessor for c in runs.panels[0].columns]
        config_axes = [a.removeprefix("config:").removesuffix(".value") for a in accessors if a.startswith("config:")]
        assert config_axes == toggles and set(config_axes) <= CONFIG_KEYS  # keys the runs log, flat
        assert f"summary:{metric}" in accessors
        assert next(p.metrics for p in by_toggles.panels if isinstance(p, wr.BarPlot)) == [metric]


def test_views_without_login_say_how_to_log_in(no_login, capsys):
    rc = cli.main(["views", "q2", "--sweeps", str(SWEEPS), "--claims", str(CLAIMS)])
    out = capsys.readouterr()
    assert rc == 2 and out.out == ""
    (line,) = out.err.strip().splitlines()
    assert "wandb login" in line and "WANDB_API_KEY" in line


def test_views_dry_run_prints_the_panels_offline(no_login, capsys):
    assert cli.main(["views", "q1", "--dry-run", "--sweeps", str(SWEEPS), "--claims", str(CLAIMS)]) == 0
    out = capsys.readouterr().out
    assert "ParallelCoordinatesPlot: config:model.attention.scaling.value, config:model.head_dim.value" in out
    assert "grouped by config.model.attention.scaling.value, config.model.head_dim.value" in out
    assert "LinePlot: trainer/global_step, attn/entropy" in out


def test_views_bad_question_is_one_line(no_login, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["views", "q9"])
    assert err.value.code == 2 and "valid: q1, q2, q3, q4, q5, q6, all" in capsys.readouterr().err


def test_logged_in_views_save_one_report_per_question(monkeypatch, capsys):
    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.example/{self.entity}/{self.project}"))
    rc = views(["q2", "q3"], entity="ent", sweeps_dir=SWEEPS, claims_path=CLAIMS, env={"WANDB_API_KEY": "k" * 40})
    assert rc == 0 and [r.title for r in saved] == ["transformer-ablations q2 (quick)", "transformer-ablations q3 (quick)"]
    assert describe_views(saved[0]) == describe_views(build_views("q2", "ent", "transformer-ablations", "quick",
                                                                  SWEEPS, CLAIMS))
    assert "views q3: https://wandb.example/ent/transformer-ablations" in capsys.readouterr().out


def _fake_report(out: Path) -> Path:
    """What build_report writes: report.md/.html, verdicts.json, figures/*.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = out / "quick"
    (d / "figures").mkdir(parents=True)
    (d / "report.md").write_text("# report\n")
    (d / "report.html").write_text("<html><body>report</body></html>")
    verdicts = [{"id": "q2_x", "question": "q2", "verdict": "supported", "effect": 0.3, "n": 3,
                 "literature": {"direction": "up", "anchor": "Haviv 2022"}}]
    (d / "verdicts.json").write_text(json.dumps(verdicts))
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(d / "figures" / "q2.png")
    plt.close(fig)
    return d / "report.md"


def test_report_wandb_flag_logs_an_offline_run_that_sync_lists(no_login, tmp_path, monkeypatch, capsys):
    from transformer_ablations import report

    reports = tmp_path / "reports"
    monkeypatch.setattr(report, "build_report", lambda runs, suite, out, *a, **k: _fake_report(Path(out)))
    assert cli.main(["report", "--wandb", "--out", str(reports)]) == 0
    assert "make sync" in capsys.readouterr().out
    (offline,) = find_offline_runs(reports)
    run = read_offline_run(offline)
    assert run.complete and run.exit_code == 0 and run.name == "report quick"
    logged = run.history[-1]
    assert logged["verdicts/_type"] == "table-file" and logged["figures/q2/_type"] == "image-file"

    rc = cli.main(["sync", "--dry-run", "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(reports)])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"{offline}  complete (exit 0" in out and "wandb sync" in out and "not logged in" in out
