"""Intervals behind the report's verdicts, on numbers with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as st

from transformer_ablations.report.claims import Claim
from transformer_ablations.report.collect import collect_runs, same_value
from transformer_ablations.report.evaluate import evaluate_claim
from transformer_ablations.report.results import contrast_bounds, metric_bounds
from transformer_ablations.report.stats import (
    contrast_ci,
    difference_ci,
    mean_ci,
    min_detectable_effect,
    seeds_needed,
    slope_ci,
)
from transformer_ablations.report.verdicts import (
    CONTRADICTED,
    DETERMINISTIC,
    NOT_RUN,
    SUPPORTED,
    UNDERPOWERED,
)

T975_2 = 4.302652729749464  # t_{0.975, 2} from the tables


# --- intervals ---------------------------------------------------------------------------
def test_mean_ci_known_interval():
    est = mean_ci([1.0, 2.0, 3.0])  # mean 2, s = 1, n = 3
    half = T975_2 * 1.0 / math.sqrt(3)
    assert (est.mean, est.lo, est.hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half), abs=1e-9)
    assert est.n == 3 and est.df == 2 and est.se == pytest.approx(1 / math.sqrt(3))


def test_mean_ci_single_value_has_no_interval():
    est = mean_ci([0.7])
    assert est.mean == 0.7 and not est.has_interval and "n=1" in est.note and not est.deterministic


def test_zero_variance_is_deterministic_never_an_interval():
    est = mean_ci([0.5, 0.5, 0.5])
    assert est.deterministic and not est.has_interval and not est.testable and "deterministic" in est.note
    # a paired contrast whose per-seed differences are all equal is deterministic too
    paired = difference_ci({0: 0.9, 1: 0.7, 2: 0.8}, {0: 0.4, 1: 0.2, 2: 0.3})
    assert paired.deterministic and paired.mean == pytest.approx(0.5)
    assert not mean_ci([0.5, 0.5, 0.51]).deterministic


def test_paired_difference_by_seed():
    est = difference_ci({0: 3.0, 1: 5.0, 2: 7.0}, {0: 2.0, 1: 3.0, 2: 4.0})  # differences 1, 2, 3
    assert est.method == "paired"
    half = T975_2 / math.sqrt(3)
    assert (est.mean, est.lo, est.hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))


def test_welch_when_seeds_differ():
    est = difference_ci({0: 1.0, 1: 2.0, 2: 3.0}, {3: 4.0, 4: 6.0, 5: 8.0})  # vars 1 and 4
    se2 = 1 / 3 + 4 / 3
    assert est.method == "welch" and est.df == pytest.approx(50 / 17) and est.ns == (3, 3)
    half = float(st.t.ppf(0.975, 50 / 17)) * math.sqrt(se2)
    assert (est.mean, est.lo, est.hi) == pytest.approx((-4.0, -4.0 - half, -4.0 + half))
    ref = st.ttest_ind([1, 2, 3], [4, 6, 8], equal_var=False)  # the same test as scipy's Welch
    assert 2 * st.t.sf(abs(est.mean / est.se), est.df) == pytest.approx(ref.pvalue)


def test_pairing_removes_seed_variance():
    a = {0: 0.50, 1: 0.70, 2: 0.90}
    b = {0: 0.45, 1: 0.66, 2: 0.84}
    paired, unpaired = difference_ci(a, b), difference_ci(a, {s + 10: v for s, v in b.items()})
    assert paired.method == "paired" and unpaired.method == "welch"
    assert paired.half_width < unpaired.half_width / 5 and paired.lo > 0 > unpaired.lo


def test_contrast_difference_in_differences():
    groups = [{0: 5.0, 1: 6.0}, {0: 1.0, 1: 1.0}, {0: 2.0, 1: 2.0}, {0: 1.0, 1: 1.0}]
    est = contrast_ci(groups, [1, -1, -1, 1])  # per seed: 3, 4
    assert est.method == "paired" and est.mean == pytest.approx(3.5)
    assert est.half_width == pytest.approx(float(st.t.ppf(0.975, 1)) * math.sqrt(0.5) / math.sqrt(2))


def test_welch_needs_two_seeds_per_group():
    est = difference_ci({0: 1.0, 1: 2.0}, {5: 1.0})
    assert not est.has_interval and "n=1" in est.note


def test_slope_interval_and_exact_line():
    est = slope_ci([0, 1, 2, 3], [1, 3, 4, 7])
    ref = st.linregress([0, 1, 2, 3], [1, 3, 4, 7])
    assert est.mean == pytest.approx(1.9) and est.df == 2 and est.se == pytest.approx(ref.stderr)
    exact = slope_ci([0, 1, 2], [1, 3, 5])
    assert exact.mean == pytest.approx(2.0) and exact.deterministic and not exact.has_interval


def test_validation_sampling_variance_widens_the_interval():
    seeds = mean_ci([0.80, 0.82, 0.84])  # s = 0.02, se² = 0.02²/3
    both = mean_ci([0.80, 0.82, 0.84], var_examples=0.01**2)
    se_seed2 = 0.02**2 / 3
    assert both.se == pytest.approx(math.sqrt(se_seed2 + 1e-4))
    assert both.df == 2  # the seeds' df: adding variance never narrows the interval
    assert both.half_width == pytest.approx(T975_2 * math.sqrt(se_seed2 + 1e-4)) and both.half_width > seeds.half_width


# --- bounded metrics ---------------------------------------------------------------------
def test_bounded_intervals_stay_in_the_unit_interval():
    assert metric_bounds("val/acc") == (0, 1) and metric_bounds("val_len4x/acc") == (0, 1)
    assert metric_bounds("val/exact_match_src8") == (0, 1) and metric_bounds("val/mcc") == (-1, 1)
    assert metric_bounds("val/loss") is None
    for values in ([0.97, 1.0, 0.99], [0.0, 0.04, 0.01], [0.2, 0.9, 0.99]):
        est = mean_ci(values, bounds=(0.0, 1.0))
        assert 0.0 <= est.lo <= est.mean <= est.hi <= 1.0
    assert mean_ci([0.97, 1.0, 0.99], bounds=(0.0, 1.0)).clipped
    assert mean_ci([0.97, 1.0, 0.99]).hi > 1.0  # unbounded: the t-interval runs past 1
    assert contrast_bounds((0.0, 1.0), [1, -1]) == (-1.0, 1.0)
    assert contrast_bounds((0.0, 1.0), [1], -0.5) == (-0.5, 0.5)
    assert contrast_bounds((0.0, 1.0), [1, -1, -1, 1]) == (-2.0, 2.0)


def test_claim_intervals_and_figure_cells_are_clipped(tmp_path):
    root = tmp_path / "runs" / "t"
    for seed, v in enumerate((0.97, 1.0, 0.99)):
        _write(root, "q1_scaling", {"model.attention.scaling": "sqrt_dk", "seed": seed}, {"val/acc": v})
        _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": seed}, {"val/acc": 0.5})
    runs = collect_runs(tmp_path / "runs", "t").runs
    res = evaluate_claim(_claim(expect="a_above_chance", b={}, chance=0.0), runs)
    assert res.estimate.hi <= 1.0 and res.estimate.clipped and "clipped" in res.estimate.note
    assert res.groups[0].estimate.hi <= 1.0


# --- power ---------------------------------------------------------------------------------
def test_minimum_detectable_effect_and_seeds_needed():
    est = mean_ci([0.0, 0.1, 0.05])  # s = 0.05
    z = lambda df: float(st.t.ppf(0.975, df) + st.t.ppf(0.8, df))
    assert min_detectable_effect(est, 0.05) == pytest.approx(z(2) * 0.05 / math.sqrt(3))
    n = seeds_needed(est, 0.05, 0.05)
    assert z(n - 1) * 0.05 / math.sqrt(n) <= 0.05 < z(n - 2) * 0.05 / math.sqrt(n - 1)
    assert seeds_needed(est, 0.05, 0.0) is None
    # validation-sampling variance does not shrink with seeds: a small target becomes unreachable
    floor = mean_ci([0.0, 0.1, 0.05], var_examples=0.02**2)
    assert seeds_needed(floor, 0.05, 0.03) is None and seeds_needed(floor, 0.05, 0.1) is not None


# --- claims on hand-made run records -----------------------------------------------------
def _write(root: Path, sweep: str, config: dict, metrics: dict, status: str = "finished", **extra) -> Path:
    run_id = f"s{config['seed']}-" + "-".join(f"{v}" for k, v in sorted(config.items()) if k != "seed")
    d = root / sweep / run_id
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(
        {"run_id": run_id, "experiment": sweep, "status": status, "config": config, "metrics": metrics,
         "diverged_step": extra.get("diverged_step"), "error": extra.get("error")}))
    return d


def _claim(**kw) -> Claim:
    base = {"id": "c", "question": "q1", "claim": "x", "metric": "val/acc", "higher_is_better": True,
            "a": {"model.attention.scaling": "sqrt_dk"}, "b": {"model.attention.scaling": "none"},
            "expect": "a_better", "literature_direction": "d", "literature_anchor": "a", "sweep": "q1_scaling",
            "tier": "check"}
    base.update(kw)
    return Claim(**base)


def test_claim_selects_condition_and_averages_other_keys_per_seed(tmp_path):
    root = tmp_path / "runs" / "t"
    acc = {("sqrt_dk", 256): [0.9, 0.92, 0.94], ("none", 256): [0.6, 0.7, 0.8],
           ("sqrt_dk", 16): [0.9, 0.9, 0.9], ("none", 16): [0.9, 0.9, 0.901]}
    for (scaling, dk), vals in acc.items():
        for seed, v in enumerate(vals):
            for lr, shift in ((1e-3, 0.01), (3e-3, -0.01)):  # a second grid key, averaged per seed
                _write(root, "q1_scaling", {"model.attention.scaling": scaling, "model.head_dim": dk,
                                            "train.lr": lr, "seed": seed}, {"val/acc": v + shift})
    runs = collect_runs(tmp_path / "runs", "t").by_sweep()["q1_scaling"]
    res = evaluate_claim(_claim(condition={"model.head_dim": 256}), runs)
    half = T975_2 * 0.08 / math.sqrt(3)  # per-seed differences 0.3, 0.22, 0.14 -> mean 0.22, s = 0.08
    assert res.estimate.method == "paired"
    assert (res.estimate.mean, res.estimate.lo, res.estimate.hi) == pytest.approx((0.22, 0.22 - half, 0.22 + half))
    assert res.verdict == SUPPORTED and res.tested.p == pytest.approx(st.ttest_1samp([0.3, 0.22, 0.14], 0).pvalue)
    assert any("train.lr" in d for d in res.details)
    assert "seeds only" in res.interval  # no per-example files: seed-only interval, and it says so
    eq = evaluate_claim(_claim(condition={"model.head_dim": 16}, expect="equivalent", margin=0.03), runs)
    assert eq.verdict == SUPPORTED
    grows = evaluate_claim(_claim(expect="gap_grows", along={"key": "model.head_dim", "from": 16, "to": 256}), runs)
    assert grows.estimate.mean == pytest.approx(0.22 + 0.001 / 3) and grows.verdict == SUPPORTED
    flipped = evaluate_claim(_claim(condition={"model.head_dim": 256}, higher_is_better=False), runs)
    assert flipped.estimate.mean == pytest.approx(-0.22) and flipped.verdict == CONTRADICTED


def test_ceiling_is_cannot_discriminate_and_constant_gap_is_deterministic(tmp_path):
    root = tmp_path / "runs" / "t"
    for seed in range(3):
        _write(root, "q1_scaling", {"model.attention.scaling": "sqrt_dk", "seed": seed}, {"val/acc": 1.0})
        _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": seed}, {"val/acc": 0.995 + 0.001 * seed})
        _write(root, "q1_scaling", {"model.attention.scaling": "qk_norm", "seed": seed}, {"val/acc": 0.5})
    runs = collect_runs(tmp_path / "runs", "t").runs
    ceiling = evaluate_claim(_claim(expect="equivalent", margin=0.03), runs)
    assert ceiling.verdict == "not resolved — cannot discriminate" and "ceiling" in ceiling.reason
    det = evaluate_claim(_claim(b={"model.attention.scaling": "qk_norm"}), runs)
    assert det.verdict == DETERMINISTIC and det.tested is None and det.holds is True
    d = det.as_dict("l", "t")
    assert d["deterministic"] is True and d["ci_low"] is None and d["p"] is None


def test_claim_with_one_seed_is_underpowered_and_no_runs_is_not_run(tmp_path):
    root = tmp_path / "runs" / "t"
    _write(root, "q1_scaling", {"model.attention.scaling": "sqrt_dk", "seed": 0}, {"val/acc": 0.9})
    _write(root, "q1_scaling", {"model.attention.scaling": "none", "seed": 0}, {"val/acc": 0.5})
    runs = collect_runs(tmp_path / "runs", "t").runs
    res = evaluate_claim(_claim(), runs)
    assert res.verdict == UNDERPOWERED and "n=1" in res.reason
    assert evaluate_claim(_claim(), []).verdict == NOT_RUN
    assert evaluate_claim(_claim(b={"model.attention.scaling": "qk_norm"}), runs).verdict == NOT_RUN


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
    assert res.estimate.method == "welch" and res.estimate.ns == (3, 2)
    assert any("diverged" in d for d in res.details) and any("unfinished, failed" in d for d in res.details)


def test_same_value_spellings():
    assert same_value(256, 256.0) and same_value(256, "256") and same_value("none", "none")
    assert not same_value(True, 1) and same_value(True, "true") and same_value(None, "null")
    assert not same_value("none", None)
