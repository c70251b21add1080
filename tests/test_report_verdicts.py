"""Verdicts with known answers: Holm, Benjamini-Hochberg, TOST, the "at chance" rule, tiers,
negative controls, the bootstrap over validation examples, and a seeded null simulation that runs
many null datasets through the real verdict code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from transformer_ablations.report.claims import Claim
from transformer_ablations.report.collect import RunCollection, RunRecord, collect_runs
from transformer_ablations.report.evaluate import evaluate_claim, evaluate_claims
from transformer_ablations.report.examples import WITH_EXAMPLES, bootstrap_contrast
from transformer_ablations.report.stats import claim_p_values, mean_ci
from transformer_ablations.report.verdicts import (
    CONTRADICTED,
    SUPPORTED,
    UNDERPOWERED,
    benjamini_hochberg,
    false_support_rate,
    holm,
)
from transformer_ablations.training.eval_records import EXAMPLES_FILE


# --- multiple comparisons ----------------------------------------------------------------------
def test_holm_on_hand_made_p_values():
    # sorted .005 .01 .03 .04 -> x4 x3 x2 x1 = .02 .03 .06 .04 -> running max .02 .03 .06 .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []
    # Holm rejects what Bonferroni rejects and more: .013 * 3 = .039 < .05 only after stepping down
    assert [p < 0.05 for p in holm([0.001, 0.013, 0.02])] == [True, True, True]


def test_benjamini_hochberg_on_hand_made_p_values():
    # sorted .005 .01 .03 .04 -> x m/rank = .02 .02 .04 .04, running min from the top
    p = [0.01, 0.04, 0.03, 0.005]
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg(p) == pytest.approx(list(st.false_discovery_control(p, method="bh")))
    # BH at 10% finds more than Holm at 5% on the same p-values
    q = [0.001, 0.02, 0.03, 0.04, 0.2]
    assert sum(x < 0.10 for x in benjamini_hochberg(q)) == 4 and sum(x < 0.05 for x in holm(q)) == 1


def test_family_adjustment_changes_the_verdict():
    """p = 0.013 alone is supported; as one of six such primaries, Holm multiplies it by six: not resolved."""
    claims, runs = [], []
    for i in range(6):
        dk = 16 * (i + 1)
        claims.append(_claim(f"c{i}", tier="primary", question=f"q{i + 1}", a={"model.head_dim": dk}, b={},
                             chance=0.5, expect="a_above_chance"))
        runs += [_record({"model.head_dim": dk, "seed": s}, {"val/acc": v}) for s, v in enumerate((0.54, 0.55, 0.56))]
    alone = evaluate_claim(claims[0], runs)
    p = st.ttest_1samp([0.54, 0.55, 0.56], 0.5).pvalue
    assert alone.tested.p == pytest.approx(p) and alone.verdict == SUPPORTED
    together = evaluate_claims(claims, RunCollection(Path("."), runs))
    assert [r.p_adjusted for r in together] == pytest.approx([6 * p] * 6)
    assert {r.verdict for r in together} == {UNDERPOWERED}
    # the adjusted interval is at the level Holm tested it (1 - 0.05/6 here), so it now includes 0
    assert together[0].adjusted.confidence == pytest.approx(1 - 0.05 / 6) and together[0].adjusted.lo < 0


# --- TOST and the "at chance" rule ----------------------------------------------------------------
def test_tost_in_and_out_of_the_margin():
    inside = mean_ci([0.001, -0.002, 0.0015])
    p_tost, p_out = claim_p_values(inside, "equivalent", 0.03)
    lower = st.ttest_1samp([0.001, -0.002, 0.0015], -0.03, alternative="greater").pvalue
    upper = st.ttest_1samp([0.001, -0.002, 0.0015], 0.03, alternative="less").pvalue
    assert p_tost == pytest.approx(max(lower, upper)) and p_tost < 0.01 < p_out
    outside = mean_ci([0.20, 0.21, 0.19])
    assert claim_p_values(outside, "equivalent", 0.03)[1] < 0.01
    wide = mean_ci([0.0, 0.05, -0.05])
    assert min(claim_p_values(wide, "equivalent", 0.03)) > 0.05


def _chance_claim(margin: float, **kw) -> Claim:
    return _claim("chance", expect="a_at_chance", a={"model.head_dim": 16}, b={}, chance=0.5, margin=margin, **kw)


def _chance_runs(offsets) -> list[RunRecord]:
    return [_record({"model.head_dim": 16, "seed": s}, {"val/acc": 0.5 + o}) for s, o in enumerate(offsets)]


def test_noisy_values_around_chance_are_not_supported():
    """The old rule supported [0, .04, -.03] because its wide interval includes chance."""
    res = evaluate_claim(_chance_claim(0.02), _chance_runs([0.0, 0.04, -0.03]))
    assert res.verdict == UNDERPOWERED and res.verdict != SUPPORTED
    assert res.tested.p_claim > 0.05 and "minimum detectable effect" in res.reason


def test_tight_values_near_chance_follow_tost():
    """The old rule left [.011, .012, .0115] unresolved because its tight interval excludes chance."""
    runs = _chance_runs([0.011, 0.012, 0.0115])
    within = evaluate_claim(_chance_claim(0.02), runs)  # tightly inside chance ± 0.02: at chance
    assert within.verdict == SUPPORTED
    beyond = evaluate_claim(_chance_claim(0.005), runs)  # tightly outside chance ± 0.005: not at chance
    assert beyond.verdict == CONTRADICTED


# --- negative controls and the null simulation ----------------------------------------------------
def test_relabel_and_split_seed_controls_are_built_from_existing_runs():
    runs = []
    for seed in range(5):
        runs.append(_record({"model.attention.scaling": "sqrt_dk", "seed": seed}, {"val/acc": 0.9 + 0.01 * seed}))
        runs.append(_record({"model.attention.scaling": "none", "seed": seed}, {"val/acc": 0.5 + 0.01 * seed}))
    relabel = evaluate_claim(_claim("r", tier="control", control="relabel"), runs)
    a, b = relabel.groups
    swapped = [s for s in a.values if a.values[s] < 0.7]
    assert len(swapped) == 2 and all(b.values[s] > 0.7 for s in swapped)  # 2 of 5 seeds swapped
    assert relabel.estimate.mean == pytest.approx(0.4 * (3 - 2) / 5) and relabel.verdict != SUPPORTED
    split = evaluate_claim(_claim("s", tier="control", control="split_seeds", b={}), runs)
    h1, h2 = split.groups
    assert set(h1.values).isdisjoint(h2.values) and len(h1.values) + len(h2.values) == 5
    assert split.estimate.method == "welch"


def _null_dataset(rng, k: int) -> list[RunRecord]:
    runs = []
    for seed in range(4):
        base = rng.normal(0.7, 0.05)  # a seed effect shared by both arms
        for scaling in ("sqrt_dk", "none"):
            acc = float(np.clip(base + rng.normal(0, 0.02), 0, 1))
            runs.append(_record({"model.attention.scaling": scaling, "seed": seed}, {"val/acc": acc}, f"{k}"))
    return runs


def test_seeded_null_simulation_false_support_rate_is_at_most_5_percent():
    rng = np.random.default_rng(0)
    claims = [_claim("null_control", tier="control", control="relabel"),
              _claim("null_split", tier="control", control="split_seeds", b={}),
              _claim("null_check", tier="check")]  # a plain a-vs-b claim on null data, unadjusted at 5%
    verdicts = {c.id: [] for c in claims}
    n = 600
    for k in range(n):
        for r in evaluate_claims(claims, RunCollection(Path("."), _null_dataset(rng, k))):
            verdicts[r.claim.id].append(r.verdict)
    for cid, vs in verdicts.items():
        _, tested, rate, _, _ = false_support_rate(vs)
        assert tested == n and rate <= 0.05, (cid, rate)
        assert 0.005 < rate, (cid, rate)  # not vacuous: the machinery does call some nulls supported
        either = sum(v in (SUPPORTED, CONTRADICTED) for v in vs) / n  # two-sided: both kinds of false finding
        assert either <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n), (cid, either)


def test_equivalence_at_the_margin_is_rarely_supported():
    """TOST's size: a true offset exactly at the margin is called 'at chance' at most 5% of the time."""
    rng = np.random.default_rng(1)
    supported = 0
    for _ in range(800):
        runs = _chance_runs(0.02 + rng.normal(0, 0.01, size=3))
        supported += evaluate_claim(_chance_claim(0.02, tier="check"), runs).verdict == SUPPORTED
    assert supported / 800 <= 0.05


def test_false_support_rate_interval():
    k, n, rate, lo, hi = false_support_rate([SUPPORTED] + [UNDERPOWERED] * 19)
    ci = st.binomtest(1, 20).proportion_ci(method="exact")
    assert (k, n, rate) == (1, 20, 0.05) and (lo, hi) == pytest.approx((ci.low, ci.high))


# --- bootstrap over validation examples ---------------------------------------------------------
def test_bootstrap_variance_on_a_hand_made_case():
    rng = np.random.default_rng(3)
    n = 400
    a = (rng.random(n) < 0.7).astype(float)
    b = (rng.random(n) < 0.5).astype(float)
    ones = np.ones(n)
    var = bootstrap_contrast([(1.0, a, ones), (-1.0, b, ones)])
    expected = np.var(a - b, ddof=1) / n  # the variance of a mean of paired differences
    assert var == pytest.approx(expected, rel=0.12)
    assert bootstrap_contrast([(1.0, a, ones), (-1.0, a, ones)]) == 0.0  # same outcomes: no variance
    # a ratio metric: token accuracy with rows of different lengths
    den = rng.integers(1, 6, size=n).astype(float)
    num = np.minimum(den, rng.integers(0, 6, size=n)).astype(float)
    v = bootstrap_contrast([(1.0, num, den)])
    ratio = num.sum() / den.sum()
    delta = np.var(num - ratio * den, ddof=1) / n / den.mean() ** 2  # delta method
    assert v == pytest.approx(delta, rel=0.15)


def _write_run(root: Path, config: dict, acc: float, correct: list[float] | None) -> None:
    d = root / "q1_scaling" / f"s{config['seed']}-{config['model.attention.scaling']}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": "finished", "config": config, "metrics": {"val/acc": acc}}))
    if correct is not None:
        sets = {"val": {"fingerprint": "f", "n": len(correct),
                        "metrics": {"acc": {"num": correct, "den": [1.0] * len(correct)}}}}
        (d / EXAMPLES_FILE).write_text(json.dumps({"version": 1, "step": 1, "sets": sets}))


def test_example_bootstrap_widens_claim_intervals_and_older_runs_fall_back(tmp_path):
    rng = np.random.default_rng(4)
    for with_examples, suite in ((True, "new"), (False, "old")):
        for seed in range(3):
            for scaling, p in (("sqrt_dk", 0.8), ("none", 0.6)):
                correct = (rng.random(200) < p).astype(float).tolist()
                _write_run(tmp_path / suite, {"model.attention.scaling": scaling, "seed": seed},
                           sum(correct) / 200, correct if with_examples else None)
    new = evaluate_claim(_claim("c"), collect_runs(tmp_path, "new").runs)
    assert new.interval == WITH_EXAMPLES and new.estimate.var_examples > 0
    seed_only = mean_ci([new.groups[0].values[s] - new.groups[1].values[s] for s in range(3)])
    assert new.estimate.half_width > seed_only.half_width
    old = evaluate_claim(_claim("c"), collect_runs(tmp_path, "old").runs)
    assert old.interval.startswith("seeds only: no per-example outcomes") and old.estimate.var_examples == 0


# --- helpers ---------------------------------------------------------------------------------------
def _record(config: dict, metrics: dict, tag: str = "") -> RunRecord:
    rid = f"s{config['seed']}-" + "-".join(str(v) for k, v in sorted(config.items()) if k != "seed") + tag
    return RunRecord("q1_scaling", rid, "finished", config, metrics, seed=config["seed"])


def _claim(cid: str, **kw) -> Claim:
    base = {"id": cid, "question": "q1", "claim": "x", "metric": "val/acc", "higher_is_better": True,
            "a": {"model.attention.scaling": "sqrt_dk"}, "b": {"model.attention.scaling": "none"},
            "expect": "a_better", "literature_direction": "d", "literature_anchor": "a", "sweep": "q1_scaling",
            "tier": "secondary"}
    base.update(kw)
    return Claim(**base)


def test_attention_cost_is_analysed_per_length_and_identical_repeats_are_deterministic():
    rows = []
    for T in (64, 128, 256, 512):
        for rep in range(3):
            jitter = 1 + 0.01 * rep * (T % 3)
            rows += [{"kind": "dot_sdpa", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.01 * T * jitter,
                      "peak_mem_mb": 0.001 * T},
                     {"kind": "additive", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.0004 * T * T / jitter,
                      "peak_mem_mb": 0.001 * T * T}]
    coll = RunCollection(Path("."), attention_cost=rows)
    kw = {"source": "attention_cost", "sweep": None, "higher_is_better": False, "scale": "log",
          "a": {"kind": "dot_sdpa"}, "b": {"kind": "additive"}}
    time_c = _claim("t", metric="time_ms", **kw)
    mem_c = _claim("m", metric="peak_mem_mb", **kw)
    slope_c = _claim("s", metric="time_ms", expect="gap_grows", along={"key": "T"}, **kw)
    time_r, mem_r, slope_r = evaluate_claims([time_c, mem_c, slope_c], coll)
    assert time_r.estimate.n == 4 and time_r.estimate.df == 3  # distinct lengths, not 12 rows
    assert mem_r.verdict == "deterministic" and mem_r.holds and mem_r.estimate.mean == pytest.approx(
        np.mean([math.log(T) for T in (64, 128, 256, 512)]))
    assert any("identical repeats" in d for d in mem_r.details)
    assert slope_r.estimate.n == 4 and slope_r.estimate.mean == pytest.approx(math.log(2), rel=0.05)


def _arm(label: str, values: list[float]):
    from transformer_ablations.report.results import GroupSummary
    from transformer_ablations.report.stats import mean_ci

    return GroupSummary(label, {}, "val/acc", dict(enumerate(values)), mean_ci(values))


@pytest.mark.parametrize("arms, chance, expected", [
    ([[1.0, 0.995, 1.0], [1.0, 1.0, 0.999]], None, "ceiling"),
    ([[0.0, 0.004, 0.0], [0.002, 0.0, 0.0]], None, "floor"),  # at 0: the metric's floor, not the effect's (-1)
    ([[0.47, 0.51, 0.438], [0.5, 0.514, 0.49]], 0.5, "chance"),  # nothing learnt: below chance is noise too
    ([[0.47, 0.51, 0.438], [0.5, 0.514, 0.49]], None, None),  # without a chance level nothing is pinned
    ([[0.47, 0.51, 0.48], [0.5, 0.62, 0.49]], 0.5, None),  # one seed learnt something: compare
    ([[0.99, 1.0, 1.0], [0.5, 0.52, 0.49]], 0.5, None),
])
def test_arms_at_a_bound_or_at_chance_cannot_discriminate(arms, chance, expected):
    from transformer_ablations.report.results import metric_bounds, pinned

    groups = [_arm(label, values) for label, values in zip("ab", arms)]
    assert pinned(groups, metric_bounds("val/acc"), chance) == expected
    assert pinned(groups[:1], metric_bounds("val/acc"), chance) is None  # one arm is compared with chance itself
