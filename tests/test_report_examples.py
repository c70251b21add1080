"""Per-example validation records (training/eval_records.py) written by real smoke runs, and the
report's bootstrap over them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transformer_ablations.cli import parse_run_config
from transformer_ablations.report.claims import Claim
from transformer_ablations.report.collect import collect_runs
from transformer_ablations.report.evaluate import evaluate_claim
from transformer_ablations.report.examples import WITH_EXAMPLES
from transformer_ablations.training.eval_records import EXAMPLES_FILE
from transformer_ablations.training.run import train

EXP = Path(__file__).resolve().parents[1] / "experiments"


def _train(experiment: str, out: Path, *extra: str) -> Path:
    cfg = parse_run_config(["--config", str(EXP / f"{experiment}.yaml"), "--scale=smoke", f"--train.out_dir={out}",
                            f"--data.cache_dir={out.parent / 'cache'}", "--train.wandb=disabled",
                            "--train.accelerator=cpu", *extra])
    result = train(cfg)
    assert result["status"] == "finished", result
    return Path(result["run_dir"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples") / "runs"
    return {(exp, seed): _train(exp, out, f"--seed={seed}") for exp in ("q1_scaling", "q2_positional", "q3_attention")
            for seed in (0, 1)} | {"out": out}


@pytest.mark.parametrize("experiment", ["q1_scaling", "q2_positional", "q3_attention"])
def test_per_example_outcomes_reproduce_the_logged_metrics(runs, experiment):
    prints = set()
    for seed in (0, 1):
        d = runs[(experiment, seed)]
        record = json.loads((d / EXAMPLES_FILE).read_text())
        metrics = json.loads((d / "summary.json").read_text())["metrics"]
        checked = 0
        for name, entry in record["sets"].items():
            for key, cell in entry["metrics"].items():
                assert len(cell["num"]) == len(cell["den"]) == entry["n"]
                if f"{name}/{key}" in metrics and sum(cell["den"]) > 0:
                    assert sum(cell["num"]) / sum(cell["den"]) == pytest.approx(metrics[f"{name}/{key}"], abs=1e-5)
                    checked += 1
        assert checked >= 2, sorted(record["sets"]["val"]["metrics"])
        prints.add(record["sets"]["val"]["fingerprint"])
    # the validation sentences are the same across seeds (MLM masks may differ): examples pair
    assert len(prints) == 1


def test_report_intervals_include_validation_sampling(runs):
    claim = Claim(id="c", question="q1", claim="x", metric="val/acc", higher_is_better=True,
                  a={"model.attention.scaling": "sqrt_dk"}, b={}, expect="a_above_chance", chance=0.0,
                  literature_direction="d", literature_anchor="a", sweep="q1_scaling", tier="check")
    records = collect_runs(runs["out"].parent, runs["out"].name).by_sweep()["q1_scaling"]
    res = evaluate_claim(claim, records)
    assert res.interval == WITH_EXAMPLES and res.estimate.var_examples > 0
