"""Statistics behind the report's verdicts, on numbers with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from transformer_ablations.report.claims import Claim
from transformer_ablations.report.collect import collect_runs, same_value
from transformer_ablations.report.evaluate import evaluate_claim
from transformer_ablations.report.stats import (
    CONTRADICTED,
    NOT_RESOLVED,
    SUPPORTED,
    betainc,
    contrast_ci,
    difference_ci,
    mean_ci,
    slope_ci,
    t_cdf,
    t_quantile,
    verdict,
)


# --- Student t ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 3, 3.1824),
        (0.975, 4, 2.7764),
        (0.975, 10, 2.2281),
        (0.975, 30, 2.0423),
        (0.95, 5, 2.0150),
        (0.995, 2, 9.9248),
        (0.025, 4, -2.7764),
        (0.975, 1e6, 1.9600),
        (0.975, math.inf, 1.9600),
    ],
)
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_inverts_cdf_for_fractional_df():
    for df in (0.7, 2.5, 50 / 17, 7.3):
        q = t_quantile(0.975, df)
        assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-10)
    assert t_quantile(0.975, 2) < t_quantile(0.975, 50 / 17) < t_quantile(0.975, 3) or \
        t_quantile(0.975, 3) < t_quantile(0.975, 50 / 17) < t_quantile(0.975, 2)


def test_t_quantile_agrees_with_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.95, 0.975, 0.999):
        for df in (0.5, 1, 2, 2.94, 4, 9.5, 100, 1e5):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9)
    assert betainc(2, 3, 0.4) == pytest.approx(float(stats.beta.cdf(0.4, 2, 3)), rel=1e-12)


def test_betainc_closed_form():
    # I_x(1, 1) = x ; I_x(a, 1) = x^a
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, abs=1e-14)
    assert betainc(3, 1, 0.5) == pytest.approx(0.125, abs=1e-14)


# --- intervals ---------------------------------------------------------------------------
def test_mean_ci_known_interval():
    est = mean_ci([1.0, 2.0, 3.0])  # mean 2, s = 1, n = 3
    half = 4.302652729749464 * 1.0 / math.sqrt(3)
    assert est.mean == pytest.approx(2.0)
    assert est.lo == pytest.approx(2.0 - half, abs=1e-9)
    assert est.hi == pytest.approx(2.0 + half, abs=1e-9)
    assert est.n == 3 and est.df == 2


def test_mean_ci_single_value_has_no_interval():
    est = mean_ci([0.7])
    assert est.mean == 0.7 and not est.has_interval and "n=1" in est.note


def test_paired_difference_by_seed():
    a = {0: 3.0, 1: 5.0, 2: 7.0}
    b = {0: 2.0, 1: 3.0, 2: 4.0}  # per-seed differences 1, 2, 3
    est = difference_ci(a, b)
    assert est.method == "paired"
    half = t_quantile(0.975, 2) / math.sqrt(3)
    assert (est.mean, est.lo, est.hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))


def test_welch_when_seeds_differ():
    a = {0: 1.0, 1: 2.0, 2: 3.0}  # mean 2, var 1
    b = {3: 4.0, 4: 6.0, 5: 8.0}  # mean 6, var 4
    est = difference_ci(a, b)
    assert est.method == "welch"
    se2 = 1 / 3 + 4 / 3
    df = se2**2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    assert df == pytest.approx(50 / 17)
    assert est.df == pytest.approx(50 / 17)
    half = t_quantile(0.975, 50 / 17) * math.sqrt(se2)
    assert (est.mean, est.lo, est.hi) == pytest.approx((-4.0, -4.0 - half, -4.0 + half))
    assert est.ns == (3, 3)


def test_pairing_removes_seed_variance():
    # strongly seed-correlated values: the paired CI is much narrower than Welch's
    a = {0: 0.50, 1: 0.70, 2: 0.90}
    b = {0: 0.45, 1: 0.66, 2: 0.84}
    paired = difference_ci(a, b)
    unpaired = difference_ci(a, {s + 10: v for s, v in b.items()})
    assert paired.method == "paired" and unpaired.method == "welch"
    assert paired.mean == pytest.approx(unpaired.mean)
    assert paired.half_width < unpaired.half_width / 5
    assert paired.lo > 0 > unpaired.lo


def test_contrast_difference_in_differences():
    groups = [{0: 5.0, 1: 6.0}, {0: 1.0, 1: 1.0}, {0: 2.0, 1: 2.0}, {0: 1.0, 1: 1.0}]
    est = contrast_ci(groups, [1, -1, -1, 1])  # per seed: (5-1)-(2-1)=3, (6-1)-(2-1)=4
    assert est.method == "paired" and est.mean == pytest.approx(3.5)
    assert est.half_width == pytest.approx(t_quantile(0.975, 1) * math.sqrt(0.5) / math.sqrt(2))


def test_welch_needs_two_seeds_per_group():
    est = difference_ci({0: 1.0, 1: 2.0}, {5: 1.0})
    assert not est.has_interval and "n=1" in est.note


def test_slope_interval():
    est = slope_ci([0, 1, 2, 3], [1, 3, 4, 7])
    assert est.mean == pytest.approx(1.9) and est.df == 2 and est.lo < 1.9 < est.hi
    exact = slope_ci([0, 1, 2], [1, 3, 5])
    assert exact.mean == pytest.approx(2.0) and exact.half_width == pytest.approx(0.0, abs=1e-12)


# --- verdicts ----------------------------------------------------------------------------
def test_directional_verdicts():
    assert verdict(mean_ci([1.0, 1.1, 1.2]), "a_better")[0] == SUPPORTED
    assert verdict(mean_ci([1, 2, 3]), "a_better")[0] == NOT_RESOLVED  # 2 ± 2.48 includes 0
    assert verdict(mean_ci([-1.0, -1.1, -1.2]), "a_better")[0] == CONTRADICTED
    assert verdict(mean_ci([-1, 2, 1]), "a_better")[0] == NOT_RESOLVED
    v, why = verdict(mean_ci([2.0]), "a_better")
    assert v == NOT_RESOLVED and "n=1" in why


def test_equivalence_verdicts():
    inside = mean_ci([0.001, -0.002, 0.0015])
    assert verdict(inside, "equivalent", margin=0.03)[0] == SUPPORTED
    outside = mean_ci([0.20, 0.21, 0.19])
    assert verdict(outside, "equivalent", margin=0.03)[0] == CONTRADICTED
    below = mean_ci([-0.20, -0.21, -0.19])
    assert verdict(below, "equivalent", margin=0.03)[0] == CONTRADICTED
    wide = mean_ci([0.0, 0.05, -0.05])
    assert verdict(wide, "equivalent", margin=0.03)[0] == NOT_RESOLVED
    assert verdict(mean_ci([0.0]), "equivalent", margin=0.03)[0] == NOT_RESOLVED


def test_not_worse_and_chance_verdicts():
    assert verdict(mean_ci([-0.001, 0.0, 0.001]), "a_not_worse", margin=0.02)[0] == SUPPORTED
    assert verdict(mean_ci([-0.01, 0.0, 0.01]), "a_not_worse", margin=0.02)[0] == NOT_RESOLVED  # lo = -0.025
    assert verdict(mean_ci([-0.10, -0.11, -0.09]), "a_not_worse", margin=0.02)[0] == CONTRADICTED
    # the estimate is a's mean minus chance
    assert verdict(mean_ci([0.0, 0.0, 0.0]), "a_at_chance", margin=0.02)[0] == SUPPORTED
    assert verdict(mean_ci([0.3, 0.31, 0.29]), "a_at_chance", margin=0.02)[0] == CONTRADICTED
    assert verdict(mean_ci([0.01, 0.012, 0.011]), "a_at_chance", margin=0.02)[0] == NOT_RESOLVED


# --- claims on hand-made run records -----------------------------------------------------
def _write(root: Path, sweep: str, config: dict, metrics: dict, status: str = "finished", **extra) -> None:
    run_id = f"s{config['seed']}-" + "-".join(f"{v}" for k, v in sorted(config.items()) if k != "seed")
    d = root / sweep / run_id
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(
        {"run_id": run_id, "experiment": sweep, "status": status, "config": config, "metrics": metrics,
         "diverged_step": extra.get("diverged_step"), "error": extra.get("error")}))


def _claim(**kw) -> Claim:
    base = {"id": "c", "question": "q1", "claim": "x", "metric": "val/acc", "higher_is_better": True,
            "a": {"model.attention.scaling": "sqrt_dk"}, "b": {"model.attention.scaling": "none"},
            "expect": "a_better", "literature_direction": "d", "literature_anchor": "a", "sweep": "q1_scaling"}
    base.update(kw)
    return Claim(**base)


def test_claim_selects_condition_and_averages_other_keys_per_seed(tmp_path):
    root = tmp_path / "runs" / "t"
    acc = {("sqrt_dk", 256): [0.9, 0.92, 0.94], ("none", 256): [0.6, 0.7, 0.8],
           ("sqrt_dk", 16): [0.9, 0.9, 0.9], ("none", 16): [0.9, 0.9, 0.9]}
    for (scaling, dk), vals in acc.items():
        for seed, v in enumerate(vals):
            for lr, shift in ((1e-3, 0.01), (3e-3, -0.01)):  # a second grid key, averaged per seed
                _write(root, "q1_scaling", {"model.attention.scaling": scaling, "model.head_dim": dk,
                                            "train.lr": lr, "seed": seed}, {"val/acc": v + shift})
    runs = collect_runs(tmp_path / "runs", "t").by_sweep()["q1_scaling"]
    res = evaluate_claim(_claim(condition={"model.head_dim": 256}), runs)
    # per-seed differences 0.3, 0.22, 0.14 -> mean 0.22, s = 0.08
    half = t_quantile(0.975, 2) * 0.08 / math.sqrt(3)
    assert res.estimate.method == "paired"
    assert (res.estimate.mean, res.estimate.lo, res.estimate.hi) == pytest.approx((0.22, 0.22 - half, 0.22 + half))
    assert res.verdict == SUPPORTED
    assert any("train.lr" in d for d in res.details)
    eq = evaluate_claim(_claim(condition={"model.head_dim": 16}, expect="equivalent", margin=0.03), runs)
    assert eq.verdict == SUPPORTED
    grows = evaluate_claim(_claim(expect="gap_grows", along={"key": "model.head_dim", "from": 16, "to": 256}), runs)
    assert grows.estimate.mean == pytest.approx(0.22) and grows.verdict == SUPPORTED
    # lower-is-better orientation flips the sign
    flipped = evaluate_claim(_claim(condition={"model.head_dim": 256}, higher_is_better=False), runs)
    assert flipped.estimate.mean == pytest.approx(-0.22) and flipped.verdict == CONTRADICTED


def test_claim_with_one_seed_is_not_resolved(tmp_path):
    root = tmp_path / "runs" / "t"
    _write(root, "q1_scaling", {"model.attention.scaling": "sqrt_dk", "seed": 0}, {"val/acc": 0.9})
    _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": 0}, {"val/acc": 0.5})
    runs = collect_runs(tmp_path / "runs", "t").runs
    res = evaluate_claim(_claim(), runs)
    assert res.verdict == NOT_RESOLVED and "n=1" in res.reason


def test_unusable_runs_are_excluded_and_diverged_runs_count(tmp_path):
    root = tmp_path / "runs" / "t"
    for seed in range(3):
        _write(root, "q1_scaling", {"model.attention.scaling": "sqrt_dk", "seed": seed}, {"val/acc": 0.9 + 0.01 * seed})
    _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": 0}, {"val/acc": 0.5})
    _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": 1}, {"val/acc": 0.4}, status="diverged",
           diverged_step=40)
    _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": 2}, {"val/acc": None}, status="failed",
           error="boom")
    res = evaluate_claim(_claim(), collect_runs(tmp_path / "runs", "t").runs)
    assert res.estimate.method == "welch"  # seeds {0,1,2} vs {0,1}
    assert res.estimate.ns == (3, 2)
    assert any("diverged" in d for d in res.details) and any("unfinished, failed" in d for d in res.details)


def test_same_value_spellings():
    assert same_value(256, 256.0) and same_value(256, "256") and same_value("none", "none")
    assert not same_value(True, 1) and same_value(True, "true") and same_value(None, "null")
    assert not same_value("none", None)
