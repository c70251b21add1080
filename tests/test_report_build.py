"""The report end to end on hand-made run records (no training, no network, no /work/shared),
and validation of claims files."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import zlib
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from transformer_ablations.config import ConfigError, flatten, to_dict
from transformer_ablations.report import TIERS, VERDICTS, build_report, load_claims, log_report_to_wandb
from transformer_ablations.report.collect import (
    collect_runs,
    collect_wandb,
    expected_points,
    grid_dimensions,
    group_runs,
)
from transformer_ablations.sweeps.executor import Executor, ExecutorOptions
from transformer_ablations.sweeps.validate import load_sweep

REPO = Path(__file__).resolve().parents[1]
CLAIMS = REPO / "experiments" / "claims.yaml"
SEEDS = [0, 1, 2]

# the sweeps table of docs/ARCHITECTURE.md
SWEEPS = {
    "q1_scaling": {"model.attention.scaling": ["sqrt_dk", "none", "qk_norm"], "model.head_dim": [16, 64, 256]},
    "q1_bf16": {"model.attention.scaling": ["sqrt_dk", "none"], "model.head_dim": [256],
                "train.precision": ["32-true", "bf16-mixed"]},
    "q2_positional": {"model.positional": ["none", "sinusoidal", "learned", "rope", "alibi"],
                      "model.arch": ["encoder", "decoder"]},
    "q2_lookup": {"model.positional": ["none", "sinusoidal", "learned", "rope", "alibi"]},
    "q3_attention": {"model.arch": ["encoder_decoder", "decoder"], "model.cross_attention": ["full", "pooled"]},
    "q4_additive": {"model.attention.kind": ["dot", "additive"], "model.attention.scaling": ["sqrt_dk", "none"],
                    "model.head_dim": [16, 256]},
    "q5_pretrain": {"objective": ["mlm", "mlm_nsp", "causal"], "model.segment_embeddings": [True, False]},
    "q5_finetune": {"objective": ["mlm", "mlm_nsp", "causal", "none"], "data.task": ["single", "pair_tag"],
                    "data.n_train": [16, 64, 256]},
    "q6_cls_sep": {"finetune.pooling": ["cls", "mean"], "finetune.mode": ["full", "probe"],
                   "objective": ["mlm", "mlm_nsp"]},
    "q6_sep_segments": {"data.pair_format": ["sep", "concat"], "model.segment_embeddings": [True, False]},
}


# a small experiment file per sweep, with the `when:` rules of experiments/*.yaml: what `ablate fit|finetune`
# needs to parse every grid point (the monitor is the sweep's metric)
ACC = {"monitor": "val/acc", "monitor_mode": "max"}
LOSS = {"monitor": "val/loss", "monitor_mode": "min"}
EXACT_MATCH = {"monitor": "val/exact_match", "monitor_mode": "max"}
GOALS = {"max": "maximize", "min": "minimize"}
FINETUNE = {"pretrained": "auto:q5_pretrain", "pooling": "mean"}
EXPERIMENTS = {
    "q1_scaling": {"objective": "mlm", "data": {"task": "corpus"}, "train": ACC},
    "q1_bf16": {"objective": "mlm", "data": {"task": "corpus"}, "train": ACC},
    "q2_positional": {"objective": "none", "data": {"task": "order"}, "train": ACC},
    "q2_lookup": {"objective": "none", "model": {"arch": "decoder"}, "data": {"task": "lookup"}, "train": ACC},
    "q3_attention": {"objective": "seq2seq", "model": {"arch": "encoder_decoder"},
                     "data": {"task": "reverse"}, "train": EXACT_MATCH,
                     "when": [{"if": {"model.arch": "decoder"}, "set": {"model.cross_attention": "full"}}]},
    "q4_additive": {"objective": "mlm", "data": {"task": "corpus"}, "train": ACC},
    "q5_pretrain": {"objective": "mlm_nsp", "data": {"task": "corpus"}, "train": LOSS,
                    "when": [{"if": {"objective": "causal"},
                              "set": {"model.arch": "decoder", "model.segment_embeddings": True}},
                             {"if": {"objective": "mlm_nsp"}, "set": {"model.segment_embeddings": True}}]},
    "q5_finetune": {"data": {"task": "single"}, "finetune": FINETUNE, "train": ACC},
    "q6_cls_sep": {"data": {"task": "single"}, "finetune": FINETUNE, "train": ACC},
    "q6_sep_segments": {"data": {"task": "pair_tag"}, "finetune": FINETUNE, "train": ACC},
}
FINETUNE_SWEEPS = ("q5_finetune", "q6_cls_sep", "q6_sep_segments")


def write_sweeps(d: Path, sweeps: dict = SWEEPS, experiments: dict = EXPERIMENTS) -> Path:
    """Sweep files shaped like sweeps/*.yaml (command with --config, a fixed scale), and their experiment
    files: both pass the sweep executor's checks, and every grid point parses."""
    d.mkdir(parents=True, exist_ok=True)
    exp_dir = d.parent / "experiments"
    exp_dir.mkdir(exist_ok=True)
    for name, params in sweeps.items():
        exp = {"experiment": name, **experiments[name]}
        train = exp["train"]
        subcommand = "finetune" if name in FINETUNE_SWEEPS else "fit"
        spec = {"name": name, "method": "grid",
                "metric": {"name": train["monitor"], "goal": GOALS[train["monitor_mode"]]},
                "command": ["${env}", "ablate", subcommand, "--config", f"experiments/{name}.yaml",
                            "${args}"],
                "parameters": {**{k: {"values": v} for k, v in params.items()}, "seed": {"values": SEEDS},
                               "scale": {"value": "quick"}}}
        (d / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        (exp_dir / f"{name}.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    return d


def _noise(cfg: dict, seed: int) -> float:
    h = zlib.crc32(json.dumps(cfg, sort_keys=True).encode())
    return 0.004 * (((h + 7 * seed) % 5) - 2)


def _metrics(sweep: str, c: dict) -> dict:
    """Smoke-like metrics with the effects the literature expects."""
    if sweep == "q1_scaling":
        unscaled = c["model.attention.scaling"] == "none"
        bad = unscaled and c["model.head_dim"] == 256
        acc = {16: 0.9, 64: 0.8, 256: 0.6}[c["model.head_dim"]] if unscaled else 0.9
        return {"val/acc": acc, "val/loss": 1.0 - acc, "attn/entropy": 0.3 if bad else 0.7,
                "attn/logit_std": 9.0 if bad else 1.0, "attn/max_prob": 0.9 if bad else 0.4,
                "attn/saturated": 0.5 if bad else 0.1, "attn/init/saturated": 0.8 if bad else 0.0,
                "train/init_grad_norm_qk": 0.01 if bad else 0.3}
    if sweep == "q1_bf16":  # bf16 costs the unscaled arm 10 points more; nothing overflows
        acc = 0.9 if c["model.attention.scaling"] == "sqrt_dk" else (0.7 if c["train.precision"] == "32-true" else 0.6)
        return {"val/acc": acc, "val/loss": 1.0 - acc, "train/nonfinite_steps": 0}
    if sweep == "q2_lookup":
        near, far = {"learned": (0.8, 0.2), "sinusoidal": (0.75, 0.3), "rope": (0.8, 0.4), "alibi": (0.7, 0.6),
                     "none": (0.5, 0.45)}[c["model.positional"]]
        return {"val/acc": near, "val/loss": 1 - near, "val_len2x/acc": (near + far) / 2, "val_len4x/acc": far,
                "val_len2x/loss": 1 - (near + far) / 2, "val_len4x/loss": 1 - far}
    if sweep == "q2_positional":
        pos, arch = c["model.positional"], c["model.arch"]
        if arch == "encoder" and pos == "none":
            return {"val/acc": 0.5, "val/loss": 0.693, "val_len2x/acc": 0.5, "val_len4x/acc": 0.5,
                    "val_len2x/loss": 0.693, "val_len4x/loss": 0.693}
        acc = 0.93 if pos == "none" else 0.95
        far = {"learned": 0.6, "sinusoidal": 0.7, "rope": 0.75, "alibi": 0.9, "none": 0.88}[pos]
        return {"val/acc": acc, "val/loss": 1 - acc, "val_len2x/acc": (acc + far) / 2, "val_len4x/acc": far,
                "val_len2x/loss": 1 - (acc + far) / 2, "val_len4x/loss": 1 - far}
    if sweep == "q3_attention":
        pooled = c["model.arch"] == "encoder_decoder" and c["model.cross_attention"] == "pooled"
        by_len = {8: 0.8, 16: 0.4, 32: 0.1} if pooled else {8: 0.95, 16: 0.9, 32: 0.85}
        out = {f"val/exact_match_src{L}": v for L, v in by_len.items()}
        out["val/exact_match"] = sum(by_len.values()) / 3
        out["val/token_acc"] = out["val/exact_match"] + 0.05
        out["val/loss"] = 1 - out["val/exact_match"]
        if c["model.arch"] == "encoder_decoder":
            out.update({"val/head_drop_cross": 0.2, "val/head_drop_self": 0.05, "val/head_drop_cross_minus_self": 0.15})
        return out
    if sweep == "q4_additive":
        bad = c["model.attention.kind"] == "dot" and c["model.attention.scaling"] == "none" and c["model.head_dim"] == 256
        acc = 0.6 if bad else 0.9
        return {"val/acc": acc, "val/loss": 1 - acc}
    if sweep == "q5_pretrain":
        out = {"val/loss": 3.0, "val/acc": 0.3}
        if c["objective"] == "mlm_nsp":
            out["val/nsp_acc"] = 0.8
        return out
    if sweep == "q5_finetune":
        obj, task, fewer = c["objective"], c["data.task"], {16: 0.1, 64: 0.05, 256: 0.0}[c["data.n_train"]]
        table = {"single": {"mlm_nsp": 0.85, "mlm": 0.85, "causal": 0.845, "none": 0.7},
                 "pair_tag": {"mlm_nsp": 0.85, "mlm": 0.85, "causal": 0.5, "none": 0.8}}
        acc = table[task][obj] - (3 * fewer if obj == "none" else fewer if obj != "causal" or task == "single" else 0.0)
        return {"val/acc": acc, "val/f1": acc - 0.02, "val/mcc": 2 * acc - 1, "val/loss": 1 - acc}
    if sweep == "q6_cls_sep":
        pool, mode, obj = c["finetune.pooling"], c["finetune.mode"], c["objective"]
        if mode == "full":
            acc = {"cls": 0.85, "mean": 0.85}[pool]
        else:
            acc = {"cls": 0.6 if obj == "mlm" else 0.7, "mean": 0.78}[pool]
        return {"val/acc": acc, "val/loss": 1 - acc}
    if sweep == "q6_sep_segments":
        acc = 0.9 if c["data.pair_format"] == "sep" else 0.7
        return {"val/acc": acc, "val/f1": acc - 0.02, "val/mcc": 2 * acc - 1, "val/loss": 1 - acc}
    raise KeyError(sweep)


def write_run(root: Path, sweep: str, cfg: dict, metrics: dict, status: str = "finished", **extra) -> Path:
    run_id = f"s{cfg['seed']}-{zlib.crc32(json.dumps(cfg, sort_keys=True).encode()):08x}"
    d = root / sweep / run_id
    d.mkdir(parents=True, exist_ok=True)
    full_cfg = {"experiment": sweep, "scale": "smoke", "train.out_dir": str(root), "data.task": "reverse",
                "finetune.pretrained": f"ckpt/s{cfg['seed']}", "model.cross_attention": "full", **cfg}
    summary = {"run_id": run_id, "experiment": sweep, "status": status, "config": full_cfg, "config_hash": run_id[3:],
               "metrics": metrics, "best": {}, "diverged_step": extra.get("diverged_step"),
               "error": extra.get("error"), "wall_time_s": 1.0}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def write_all_runs(root: Path) -> dict[tuple, Path]:
    """One finished run per grid point and seed (decoder × pooled normalised to full, as the executor does)."""
    dirs = {}
    for sweep, params in SWEEPS.items():
        keys = list(params)
        for combo in itertools.product(*params.values()):
            cfg = dict(zip(keys, combo))
            if cfg.get("model.arch") == "decoder" and "model.cross_attention" in cfg:
                cfg["model.cross_attention"] = "full"
            if sweep == "q5_pretrain" and cfg["objective"] != "mlm":  # the experiment's `when:` rules
                cfg["model.segment_embeddings"] = True
            for seed in SEEDS:
                c = {**cfg, "seed": seed}
                key = (sweep, *sorted((k, str(v)) for k, v in c.items()))
                if key in dirs:
                    continue
                m = {k: (v + _noise(c, seed) if k.startswith(("val", "attn", "train/init")) else v) for k, v in _metrics(sweep, cfg).items()}
                if sweep == "q2_positional" and cfg["model.arch"] == "encoder" and cfg["model.positional"] == "none":
                    m = _metrics(sweep, cfg)  # exactly chance: permutation invariance
                dirs[key] = write_run(root, sweep, c, m)
    return dirs


def write_attention_cost(root: Path) -> None:
    rows = []
    for T in (64, 128, 256, 512, 1024):
        for rep in range(3):
            j = 1 + 0.02 * rep
            rows.append({"kind": "dot_sdpa", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.01 * T * j,
                         "peak_mem_mb": 0.001 * T * j})
            rows.append({"kind": "dot_reference", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.02 * T * j,
                         "peak_mem_mb": 0.00002 * T * T * j})
            rows.append({"kind": "additive", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.0005 * T * T * (2 - j / 2),
                         "peak_mem_mb": 0.001 * T * T * j})
            rows.append({"kind": "dot_compiled", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.015 * T * j,
                         "peak_mem_mb": 0.00002 * T * T * j})
            rows.append({"kind": "additive_compiled", "T": T, "d_k": 64, "repeat": rep, "time_ms": 0.001 * T * T * j,
                         "peak_mem_mb": 0.002 * T * T * j})
            for r in rows[-5:]:
                r["flops"] = (1.3 if r["kind"].startswith("additive") else 1.0) * 1e3 * T * T
    (root / "q4_attention_cost.json").write_text(json.dumps({"rows": rows}))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    sweeps_dir = write_sweeps(base / "sweeps")
    root = base / "runs" / "smoke"
    dirs = write_all_runs(root)
    write_attention_cost(root)
    # a missing grid point, a diverged run, a failed run, a corrupt record
    removed = dirs[("q2_positional", ("model.arch", "decoder"), ("model.positional", "rope"), ("seed", "1"))]
    shutil.rmtree(removed)
    div = dirs[("q1_scaling", ("model.attention.scaling", "none"), ("model.head_dim", "256"), ("seed", "2"))]
    s = json.loads((div / "summary.json").read_text())
    s.update(status="diverged", diverged_step=137)
    (div / "summary.json").write_text(json.dumps(s))
    failed = dirs[("q5_finetune", ("data.n_train", "64"), ("data.task", "single"), ("objective", "causal"),
                   ("seed", "0"))]
    s = json.loads((failed / "summary.json").read_text())
    s.update(status="failed", error="RuntimeError: out of memory\ntraceback...", metrics={})
    (failed / "summary.json").write_text(json.dumps(s))
    (root / "q6_cls_sep" / "s9-broken").mkdir()
    (root / "q6_cls_sep" / "s9-broken" / "summary.json").write_text("{not json")
    console = Console(file=io.StringIO(), width=200, color_system=None)
    report = build_report(base / "runs", "smoke", base / "reports", CLAIMS, sweeps_dir, console=console)
    return {"base": base, "report": report, "md": report.read_text(), "console": console.file.getvalue(),
            "html": (report.parent / "report.html").read_text(),
            "verdicts": {v["id"]: v for v in json.loads((report.parent / "verdicts.json").read_text())}}


# --- the built report --------------------------------------------------------------------
def test_report_has_every_section_and_figure(built):
    md, report = built["md"], built["report"]
    assert report.name == "report.md" and report.parent.name == "smoke"
    for heading in ("# Transformer ablations", "## Primary claims", "## Secondary claims", "## Checks",
                    "## Negative controls", "## Q1", "## Q2", "## Q3", "## Q4", "## Q5", "## Q6",
                    "## Imprecise wordings", "## Missing and diverged runs", "Divergence", "BERT Table 5 style"):
        assert heading in md, heading
    # the forest plot comes first, before the primary table
    assert md.index("figures/forest.png") < md.index("## Primary claims") < md.index("## Secondary claims") \
        < md.index("## Checks") < md.index("## Negative controls") < md.index("## Q1")
    figs = report.parent / "figures"
    for name in ("forest", "q1_scaling", "q1_curves", "q1_bf16_curves", "q2_order_acc", "q2_length", "q2_lookup_length", "q2_lookup_curves",
                 "q3_length", "q3_curves", "q4_quality", "q4_curves", "q4_cost", "q5_table", "q5_labels",
                 "q6_pooling", "q6_sep"):
        png = figs / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000, name
        assert f"figures/{name}.png" in md


def test_tier_tables_list_every_claim_with_a_verdict(built):
    md = built["md"]
    claims = load_claims(CLAIMS, built["base"] / "sweeps")
    for c in claims:
        title = {"primary": "## Primary claims", "secondary": "## Secondary claims", "check": "## Checks",
                 "control": "## Negative controls"}[c.tier]
        table = md.split(title)[1].split("\n## ")[0]
        assert f"[{c.id}](#{c.id})" in table, c.id
    assert "effect [adjusted CI]" in md and "p adjusted" in md and "literature" in md
    assert set(built["verdicts"]) == {c.id for c in claims}
    assert "per-example outcomes" in md  # the hand-made runs have none: seed-only intervals, and the report says so


def test_verdicts_json_has_the_fields(built):
    fields = {"id", "question", "tier", "verdict", "effect", "ci_low", "ci_high", "p", "p_adjusted", "n",
              "deterministic"}
    for v in built["verdicts"].values():
        assert fields <= set(v), v["id"]
        assert v["verdict"] in VERDICTS and v["tier"] in TIERS and isinstance(v["deterministic"], bool)
        if v["deterministic"]:
            assert v["ci_low"] is None and v["p"] is None
            assert v["verdict"] in ("deterministic", "not resolved — cannot discriminate")
        if v["p"] is not None and v["tier"] in ("primary", "secondary"):
            assert v["p_adjusted"] >= v["p"] - 1e-12
        if v["metric"].endswith("acc") and v["ci_low"] is not None:
            assert -1.0 <= v["ci_low"] <= v["ci_high"] <= 1.0


def test_verdicts_follow_the_hand_made_effects(built):
    v = built["verdicts"]
    by = lambda tier, verdict: sorted(k for k, x in v.items() if x["tier"] == tier and x["verdict"] == verdict)
    assert by("primary", "supported") == sorted(
        ["q1_gap_grows_with_dk", "q2_encoder_learned_beats_none", "q3_full_cross_equiv_prefix_decoder_reverse",
         "q4_dot_reference_faster", "q5_mlm_beats_causal_tagging", "q6_probe_mean_beats_cls_mlm"])
    # zero variance over seeds: measured values, never counted (the hand-made per-length noise cancels; the
    # timing rows follow an exact power law; encoder without positions is exactly at chance; no bf16 run
    # overflowed: 0 non-finite steps in every run of both arms)
    assert by("secondary", "deterministic") == ["q1_bf16_unscaled_more_nonfinite_dk256",
                                                "q3_pooled_gap_grows_with_length_reverse",
                                                "q4_dot_speed_gap_grows_with_T"]
    assert by("check", "deterministic") == ["q2_encoder_none_at_chance", "q4_additive_more_flops"]
    assert v["q2_encoder_none_at_chance"]["holds"] and v["q4_additive_more_flops"]["holds"]
    assert not by("primary", "contradicted") and not by("secondary", "contradicted")
    assert len(by("secondary", "supported")) == 37  # Q1-Q4 (issue 15): 22; Q5-Q6 (issue 16): 15
    assert v["q1_bf16_costs_unscaled_more_dk256"]["verdict"] == "supported"  # 10 points more in bf16
    # every control is a null: none is called supported
    controls = [x for x in v.values() if x["tier"] == "control"]
    assert len(controls) >= 6 and not [x for x in controls if x["verdict"] == "supported"]
    # the diverged run (unscaled, d_k=256, seed 2) still counts with its last metrics: paired over 3 seeds
    assert v["q1_unscaled_worse_dk256"]["n"] == 3 and v["q1_unscaled_worse_dk256"]["method"] == "paired"
    assert v["q1_gap_grows_with_dk"]["p_adjusted"] > v["q1_gap_grows_with_dk"]["p"]  # Holm over six
    # rope/decoder seed 1 was deleted: not part of any claim, but q2 learned-vs-none remains paired
    assert v["q2_encoder_learned_beats_none"]["method"] == "paired"
    # log-scale claims read as ratios, also in the reason
    assert v["q4_dot_sdpa_faster"]["effect_text"].startswith("18.7×") and "×" in v["q4_dot_sdpa_faster"]["reason"]
    assert v["q4_dot_sdpa_faster"]["n"] == 5  # distinct lengths T, the repeats averaged


def test_console_prints_the_verdict_table(built):
    out = built["console"]
    assert "Verdicts (smoke)" in out and "q1_unscaled_worse_dk256" in out
    assert "primary: 6 supported" in out and "False-support rate: 0/" in out


def test_missing_diverged_failed_and_corrupt_runs_are_listed(built):
    section = built["md"].split("## Missing and diverged runs")[1]
    assert "expected grid unknown" not in section  # every sweep and experiment file is valid
    assert "model.positional=rope, model.arch=decoder, seed=1" in section
    assert "objective=causal, data.task=single, data.n_train=64, seed=0" in section  # failed: missing
    assert "diverged" in section and "137" in section
    assert "RuntimeError: out of memory" in section and "traceback" not in section
    assert "s9-broken" in section and "not valid JSON" in section
    # decoder × pooled is normalised to decoder × full: never listed as missing
    assert "model.arch=decoder, model.cross_attention=pooled" not in section
    # the q1 divergence table counts the diverged run
    q1 = built["md"].split("## Q1")[1].split("\n## ")[0]
    assert "| none | 256 | 3 | 1 | 33% | 137 |" in q1


def test_html_is_self_contained(built):
    html = built["html"]
    assert html.count("data:image/png;base64,") == 17  # 8 + forest + 6 learning-curve/lookup (issue 15) + 2 (issue 16)
    assert "src='figures/" not in html and "http://" not in html and "https://" not in html
    assert "<table>" in html and "v-supported" in html and "Missing and diverged runs" in html


def test_imprecision_notes_show_the_data(built):
    section = built["md"].split("## Imprecise wordings")[1].split("\n## ")[0]
    assert "permutation-EQUIVARIANT" in section and "causal mask" in section and "differentiable" in section
    assert "*Data:*" in section and ("supported" in section or "deterministic" in section)


def test_q5_table_in_markdown(built):
    q5 = built["md"].split("## Q5")[1].split("\n## ")[0]
    assert "| objective | single acc | single MCC | pair-tag acc | pair-tag F1 | NSP acc (pretraining) |" in q5
    assert "| mlm_nsp | 0.8" in q5 and "fine-tuned with 64 labels" in q5 and "97-98%" in q5


def test_q6_sep_segments_table_in_markdown(built):
    q6 = built["md"].split("## Q6")[1].split("\n## ")[0]
    assert "| pair_format | segment_embeddings=true | segment_embeddings=false |" in q6
    sep = next(line for line in q6.splitlines() if line.startswith("| sep |"))
    concat = next(line for line in q6.splitlines() if line.startswith("| concat |"))
    means = lambda line: [float(cell.split()[0]) for cell in line.strip("|").split("|")[1:]]
    assert [round(m, 1) for m in means(sep)] == [0.9, 0.9] and [round(m, 1) for m in means(concat)] == [0.7, 0.7]
    assert sep.count("(n=3)") == 2
    assert "matched budgets" in q6


# --- errors ------------------------------------------------------------------------------
def test_no_runs_is_a_config_error(tmp_path):
    sweeps_dir = write_sweeps(tmp_path / "sweeps")
    with pytest.raises(ConfigError, match=r"no run records under .*runs/quick: run `make sweep .*` or `make quick`"):
        build_report(tmp_path / "runs", "quick", tmp_path / "reports", CLAIMS, sweeps_dir, console=False)


def test_runs_of_another_sweep_only_names_what_was_found(tmp_path):
    sweeps_dir = write_sweeps(tmp_path / "sweeps")
    write_run(tmp_path / "runs" / "quick", "my_other_sweep", {"seed": 0}, {"val/acc": 0.5})
    with pytest.raises(ConfigError, match="only for sweep.*my_other_sweep"):
        build_report(tmp_path / "runs", "quick", tmp_path / "reports", CLAIMS, sweeps_dir, console=False)


def test_partial_runs_still_build_and_note_missing_data(tmp_path):
    sweeps_dir = write_sweeps(tmp_path / "sweeps")
    root = tmp_path / "runs" / "quick"
    for seed in SEEDS:
        for scaling in ("sqrt_dk", "none"):
            c = {"model.attention.scaling": scaling, "model.head_dim": 256, "seed": seed}
            write_run(root, "q1_scaling", c, _metrics("q1_scaling", c))
    report = build_report(tmp_path / "runs", "quick", tmp_path / "reports", CLAIMS, sweeps_dir, console=False)
    md = report.read_text()
    assert "no run records for sweep q3_attention" in md
    assert "no attention-cost benchmark" in md
    assert "#### q3_pooled_cross_worse_reverse — not run" in md and "Not run (no runs yet): " in md
    assert "model.attention.scaling=qk_norm, model.head_dim=16, seed=0" in md  # listed as missing
    for png in (report.parent / "figures").glob("*.png"):
        assert png.stat().st_size > 0
    assert len(list((report.parent / "figures").glob("*.png"))) == 17


# --- claims validation -------------------------------------------------------------------
GOOD = {"id": "ok", "question": "q1", "tier": "primary", "claim": "x", "sweep": "q1_scaling", "metric": "val/acc",
        "higher_is_better": True,
        "compare": {"a": {"model.attention.scaling": "sqrt_dk"}, "b": {"model.attention.scaling": "none"}},
        "condition": {"model.head_dim": 256}, "expect": "a_better",
        "literature": {"direction": "d", "anchor": "Vaswani 2017"}}


def _claims_file(tmp_path, **changes) -> Path:
    entry = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        entry[k] = v
    p = tmp_path / "claims.yaml"
    p.write_text(yaml.safe_dump({"claims": [entry]}))
    return p


def test_valid_claims_file_loads(tmp_path):
    sweeps_dir = write_sweeps(tmp_path / "sweeps")
    (c,) = load_claims(_claims_file(tmp_path), sweeps_dir)
    assert c.id == "ok" and c.condition == {"model.head_dim": 256} and c.orient == 1.0


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"compare": {"a": {"model.attention.scaler": "sqrt_dk"}, "b": {"model.attention.scaling": "none"}}},
         "unknown key 'model.attention.scaler'"),
        ({"compare": {"a": {"model.attention.scaling": "sqrt"}, "b": {"model.attention.scaling": "none"}}},
         r"model.attention.scaling=sqrt is not a valid value \(valid: sqrt_dk, none, dk, learned, qk_norm\)"),
        ({"sweep": "q9_nothing"}, "sweep 'q9_nothing' does not exist"),
        ({"condition": {"model.head_dim": 512}}, r"model.head_dim=512 is not in sweep q1_scaling's grid \(16, 64, 256\)"),
        ({"expect": "a_much_better"}, "expect='a_much_better' must be one of"),
        ({"expect": "equivalent"}, "needs 'margin'"),
        ({"metric": "accuracy"}, "is not a metric key"),
        ({"literature": {"direction": "d"}}, "literature needs 'direction' and 'anchor'"),
        ({"tier": None}, "tier=None must be one of primary, secondary, check, control"),
        ({"tier": "control"}, "tier: control needs 'control'"),
        ({"tier": "control", "control": "shuffle"}, "control='shuffle' must be one of relabel, split_seeds"),
        ({"tier": "control", "control": "split_seeds"}, "split_seeds compares a's seeds with each other"),
    ],
)
def test_invalid_claims_raise_one_line_config_error(tmp_path, changes, message):
    sweeps_dir = write_sweeps(tmp_path / "sweeps")
    with pytest.raises(ConfigError, match=message) as exc:
        load_claims(_claims_file(tmp_path, **changes), sweeps_dir)
    assert "\n" not in str(exc.value) and "claim 'ok'" in str(exc.value)


def test_two_primaries_for_one_question_are_refused(tmp_path):
    sweeps_dir = write_sweeps(tmp_path / "sweeps")
    second = {**GOOD, "id": "ok2", "condition": {"model.head_dim": 16}}
    p = tmp_path / "claims.yaml"
    p.write_text(yaml.safe_dump({"claims": [GOOD, second]}))
    with pytest.raises(ConfigError, match="question q1 has 2 primary claims"):
        load_claims(p, sweeps_dir)


def test_repo_claims_cover_every_question_and_validate_against_the_documented_sweeps(tmp_path):
    claims = load_claims(CLAIMS, write_sweeps(tmp_path / "sweeps"))
    questions = ("q1", "q2", "q3", "q4", "q5", "q6")
    assert {c.question for c in claims} == set(questions)
    assert all(sum(c.question == q for c in claims) >= 3 for q in questions)
    assert {c.expect for c in claims} >= {"a_better", "equivalent", "a_at_chance", "gap_grows"}
    for q in questions:  # exactly one primary, and at least one negative control, per question
        assert sum(c.question == q and c.tier == "primary" for c in claims) == 1, q
        assert sum(c.question == q and c.tier == "control" for c in claims) >= 1, q
    assert {c.control for c in claims if c.tier == "control"} == {"relabel", "split_seeds"}
    # construction and manipulation checks are not findings
    tier = {c.id: c.tier for c in claims}
    for cid in ("q1_unscaled_larger_logits_dk256", "q1_unscaled_lower_entropy_dk256", "q2_encoder_none_at_chance",
                "q5_pretrained_beats_none_single", "q5_causal_at_chance_tagging", "q5_nsp_learned"):
        assert tier[cid] == "check", cid


@pytest.mark.skipif(not any((REPO / "sweeps").glob("*.yaml")), reason="sweeps/*.yaml not written yet")
def test_repo_claims_validate_against_the_real_sweep_files():
    claims = load_claims(CLAIMS, REPO / "sweeps")
    assert len(claims) >= 30


# --- collection helpers ------------------------------------------------------------------
def test_group_runs_ignores_seed_and_per_run_paths(tmp_path):
    root = tmp_path / "runs" / "s"
    for seed in SEEDS:
        write_run(root, "q1_scaling", {"model.attention.scaling": "none", "seed": seed}, {"val/acc": 0.5})
    groups = group_runs(collect_runs(tmp_path / "runs", "s").runs)
    assert len(groups) == 1 and len(next(iter(groups.values()))) == 3


def test_expected_points_of_the_repo_q3_sweep_normalise_decoder_pooled():
    spec = load_sweep(REPO / "sweeps" / "q3_attention.yaml")
    pts = expected_points(spec, grid_dimensions(spec))
    # decoder x pooled runs as decoder x full (the `when:` rule of experiments/q3_attention.yaml)
    assert len(pts) == 3 * len(SEEDS)
    assert not [p for p in pts if p["model.arch"] == "decoder" and p["model.cross_attention"] == "pooled"]


def test_expected_points_are_the_runs_the_executor_plans(tmp_path):
    # the conditions hold through a config default (model.norm is not in the file) and the scale
    rules = [{"if": {"model.arch": "decoder", "model.norm": "pre"}, "set": {"model.positional": "none"}},
             {"if": {"scale": "smoke"}, "set": {"model.positional": "none"}}]
    toy = {"objective": "none", "data": {"task": "order"}, "train": ACC, "when": rules}
    grid = {"model.positional": ["learned", "none"], "model.arch": ["encoder", "decoder"]}
    path = write_sweeps(tmp_path / "sweeps", {"toy": grid}, {"toy": toy}) / "toy.yaml"
    spec = load_sweep(path)
    dims = grid_dimensions(spec)
    assert list(dims) == ["model.positional", "model.arch", "seed"]  # the scale is not a dimension
    for scale, n in (("quick", 3), ("smoke", 2)):
        pts = expected_points(spec, dims, scale)
        assert len(pts) == n * len(SEEDS)
        plan = Executor(ExecutorOptions(scale=scale, runs_dir=tmp_path / "runs")).plan(path)
        planned = [{k: flatten(to_dict(r.cfg))[k] for k in dims} for r in plan.runs]
        assert sorted(map(str, pts)) == sorted(map(str, planned))
    first_seed = [p for p in expected_points(spec, dims) if p["seed"] == 0]
    in_file_order = [(p["model.positional"], p["model.arch"]) for p in first_seed]
    assert in_file_order == [("learned", "encoder"), ("none", "decoder"), ("none", "encoder")]


def test_wandb_paths_fail_cleanly_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(ConfigError, match="needs online wandb"):
        collect_wandb("me/proj/abc123")
    assert log_report_to_wandb(tmp_path / "report.md") is None
    assert "not logging" in capsys.readouterr().out


def test_directions_that_did_not_reproduce_are_listed_plainly(built):
    md, v = built["md"], built["verdicts"]
    section = md.split("## Directions that did not reproduce at this scale")[1].split("\n## ")[0]
    counted = {k: x for k, x in v.items() if x["tier"] in ("primary", "secondary")}
    missed = {k for k, x in counted.items() if x["verdict"] not in ("supported", "not run")}
    assert missed, "the hand-made suite has claims that do not reproduce"
    for cid in counted:
        assert (f"**{cid}**" in section) == (cid in missed), cid
    for cid in missed:
        line = next(line for line in section.splitlines() if f"**{cid}**" in line)
        verdict = counted[cid]["verdict"]
        expected = {"contradicted": "reversed", "not resolved — cannot discriminate": "cannot be read"}.get(
            verdict, "not reproduced at this scale")
        assert expected in line, (cid, verdict, line)
