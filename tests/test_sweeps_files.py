"""The eight sweep files of the repository: the sweeps table of docs/ARCHITECTURE.md, and each
one validates against its experiment file (schema, vocabulary, every grid point parses)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from transformer_ablations.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# sweep -> (subcommand, metric, goal, {parameter: values}) -- docs/ARCHITECTURE.md, "Sweeps"
TABLE = {
    "q1_scaling": ("fit", "val/acc", "maximize", {
        "model.attention.scaling": ["sqrt_dk", "none", "qk_norm"], "model.head_dim": [16, 64, 256]}),
    "q2_positional": ("fit", "val/acc", "maximize", {
        "model.positional": ["none", "sinusoidal", "learned", "rope", "alibi"], "model.arch": ["encoder", "decoder"]}),
    "q2_lookup": ("fit", "val/acc", "maximize", {"model.positional": ["none", "sinusoidal", "learned", "rope", "alibi"]}),
    "q3_attention": ("fit", "val/exact_match", "maximize", {
        "model.arch": ["encoder_decoder", "decoder"], "model.cross_attention": ["full", "pooled"]}),
    "q4_additive": ("fit", "val/acc", "maximize", {
        "model.attention.kind": ["dot", "additive"], "model.attention.scaling": ["sqrt_dk", "none"],
        "model.head_dim": [16, 256]}),
    "q5_pretrain": ("fit", "val/loss", "minimize", {
        "objective": ["mlm", "mlm_nsp", "causal"], "model.segment_embeddings": [True, False]}),
    "q5_finetune": ("finetune", "val/acc", "maximize", {
        "objective": ["mlm", "mlm_nsp", "causal", "none"], "data.task": ["single", "pair_tag"],
        "data.n_train": [16, 64, 256]}),
    "q6_cls_sep": ("finetune", "val/acc", "maximize", {
        "finetune.pooling": ["cls", "mean"], "finetune.mode": ["full", "probe"], "objective": ["mlm", "mlm_nsp"]}),
    "q6_sep_segments": ("finetune", "val/acc", "maximize", {
        "data.pair_format": ["sep", "concat"], "model.segment_embeddings": [True, False]}),
}


CONSTANTS = {"q1_scaling": {"train.lr_from": "auto:q1_lr_select"},  # one-value parameters besides scale
             "q5_finetune": {"train.lr_from": "auto:q5_lr_select"}, "q6_cls_sep": {"train.lr_from": "auto:q6_cls_lr_select"},
             "q6_sep_segments": {"train.lr_from": "auto:q6_sep_lr_select"}}
FIRST_SEED = {"q4_additive": 5}  # Q4's own seeds: none of its runs is a Q1 run (same settings as Q1's dot arms)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_sweep_file_matches_the_sweeps_table(name):
    sub, metric, goal, grid = TABLE[name]
    raw = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
    assert raw["method"] == "grid"
    assert raw["metric"] == {"name": metric, "goal": goal}
    assert raw["command"] == ["${env}", "ablate", sub, "--config", f"experiments/{name}.yaml", "${args}"]
    params = raw["parameters"]
    seeds = params.pop("seed")["values"]
    first = FIRST_SEED.get(name, 0)
    assert seeds == list(range(first, first + len(seeds))) and len(seeds) >= 3, seeds
    assert params.pop("scale") == {"value": "quick"}
    constants = {k: params.pop(k)["value"] for k in [k for k, v in params.items() if "value" in v]}
    assert constants == CONSTANTS.get(name, {})
    assert {k: v["values"] for k, v in params.items()} == grid
    assert all("." in k or k == "objective" for k in params), "flat dotted names (wandb issue 4345)"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_sweep_file_validates_against_its_experiment(name, monkeypatch):
    from transformer_ablations.sweeps.validate import validate_sweep

    monkeypatch.chdir(ROOT)
    experiment = ROOT / "experiments" / f"{name}.yaml"
    if not experiment.is_file():
        pytest.fail(f"experiments/{name}.yaml is missing: sweeps/{name}.yaml runs it (the experiment files are "
                    "written alongside the training code)")
    for scale in ("smoke", "quick", "full"):
        try:
            spec = validate_sweep(ROOT / "sweeps" / f"{name}.yaml", scale=scale)
        except ConfigError as err:
            pytest.fail(f"sweeps/{name}.yaml at --scale {scale}: {err}")
        assert spec.name == name and spec.method == "grid"


def test_q3_decoder_points_normalise_to_one_run(monkeypatch):
    """decoder x pooled is made decoder x full by the experiment's `when:` block: 12 points, 9 runs."""
    from transformer_ablations.sweeps.executor import Executor, ExecutorOptions

    monkeypatch.chdir(ROOT)
    try:
        plan = Executor(ExecutorOptions(scale="smoke", runs_dir="/nonexistent-runs")).plan(ROOT / "sweeps/q3_attention.yaml")
    except ConfigError as err:
        pytest.fail(f"q3 grid does not parse: {err} (a `when:` block must win over the sweep's --key=value flags)")
    assert len(plan.points) == 12
    assert len(plan.runs) == 9
    assert sum(len(p.aliases) for p in plan.runs) == 3


def test_q5_and_q6_run_after_q5_pretrain(monkeypatch, tmp_path):
    from transformer_ablations.sweeps.executor import Executor, ExecutorOptions
    from transformer_ablations.sweeps.validate import resolve_sweep_files

    monkeypatch.chdir(ROOT)
    files = resolve_sweep_files(["q6_cls_sep", "q6_cls_lr_select", "q5"])  # q5 -> q5_finetune, q5_lr_select, q5_pretrain
    plans = Executor(ExecutorOptions(scale="smoke", runs_dir=tmp_path, max_runs=1)).plan_all(files)
    order = [p.spec.name for p in plans]
    assert order.index("q5_pretrain") < order.index("q5_lr_select") < order.index("q5_finetune")
    assert order.index("q5_pretrain") < order.index("q6_cls_lr_select") < order.index("q6_cls_sep")
    assert not any(tmp_path.iterdir()), "planning writes nothing"


@pytest.mark.parametrize("claims_file", ["claims.yaml", "claims_real.yaml"])
def test_every_claim_reads_arms_its_sweep_runs(claims_file, monkeypatch, tmp_path):
    """Each compared arm of each claim (its settings plus the condition) is a run its sweep plans, after the
    `when:` rules fold grid points together: a claim, or a control, can never be "not run" by design."""
    from test_real_suite import write_corpora
    from transformer_ablations.config import flatten, to_dict
    from transformer_ablations.report import load_claims
    from transformer_ablations.sweeps.executor import Executor, ExecutorOptions

    monkeypatch.chdir(ROOT)
    real = claims_file == "claims_real.yaml"
    if real:  # the real sweeps plan from local copies of the corpora
        text, sst2 = write_corpora(tmp_path)
        monkeypatch.setenv("ABLATE_TEXT", str(text))
        monkeypatch.setenv("ABLATE_SST2", str(sst2))
    claims = [c for c in load_claims(ROOT / "experiments" / claims_file, ROOT / "sweeps") if c.sweep]
    files = [f for f in sorted((ROOT / "sweeps").glob("*.yaml")) if f.stem.startswith("real_") == real]
    plans = Executor(ExecutorOptions(scale="real" if real else "quick", runs_dir=str(tmp_path / "runs"))).plan_all(files)
    configs = {p.spec.name: [flatten(to_dict(r.cfg)) for r in p.runs] for p in plans}
    missing = []
    for c in claims:
        free = set(c.along or {}) | ({c.best_of["key"]} if c.best_of else set())
        for side, arm in (("a", c.a), ("b", c.b)):
            want = {k: v for k, v in {**arm, **c.condition}.items() if k not in free}
            if arm and not any(all(cfg.get(k) == v for k, v in want.items()) for cfg in configs[c.sweep]):
                missing.append(f"{c.id} {side}: {want}")
    assert not missing, missing
