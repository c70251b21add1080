"""Issue 15 (Q1-Q4 experiments that can come out either way): the offset-lookup task's solvability,
Q3's length buckets and matched parameters, the head-zeroing hook, the compiled additive path,
Bahdanau's initialisation, per-arm lr selection, the slope claim and the new sweep files."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch

from transformer_ablations.config import AttentionConfig, ConfigError, RunConfig, flatten, to_dict
from transformer_ablations.data import synthetic
from transformer_ablations.model.attention import (
    AdditiveAttention,
    AttentionContext,
    SelfAttention,
    additive_attention,
    additive_attention_dense,
)
from transformer_ablations.model.head_ablation import attention_layers, head_names, zero_heads
from transformer_ablations.model.transformer import Transformer
from transformer_ablations.tasks import length_buckets, max_source_len

ROOT = Path(__file__).resolve().parents[1]


# --- Q2: offset lookup ------------------------------------------------------------------------------
def _lookup_parts(example: dict) -> tuple[list[str], int]:
    words = example["text"].split()
    return words[:-1], int(words[-1][1:])


def test_lookup_is_solved_by_positions():
    """The positional rule (the symbol k places before the query) answers every example."""
    rows = synthetic.lookup(600, seed=3, min_len=3, max_len=40)
    for r in rows:
        symbols, k = _lookup_parts(r)
        assert f"s{r['label']}" == symbols[len(symbols) - k]
    assert len({len(_lookup_parts(r)[0]) for r in rows}) > 20  # lengths spread over the range


def test_lookup_is_at_most_one_in_group_for_a_bag_of_tokens_oracle():
    """Any function of (bag of symbols, query) -- the best one is the majority label per bag -- is right
    on at most 1/LOOKUP_GROUP of the examples: positions are the only way above it."""
    n = 3 * 400
    rows = synthetic.lookup(n, seed=5)
    by_bag: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows:
        symbols, k = _lookup_parts(r)
        by_bag[(tuple(sorted(symbols)), k)][r["label"]] += 1
    oracle = sum(c.most_common(1)[0][1] for c in by_bag.values()) / n
    assert oracle <= 1 / synthetic.LOOKUP_GROUP + 1e-9, oracle
    assert 1 / synthetic.LOOKUP_GROUP > 1 / synthetic.LOOKUP_SYMBOLS  # the ceiling is above plain chance


def test_lookup_without_positions_an_encoder_gives_one_answer_per_group(make_model_cfg):
    """A bidirectional encoder with no positional encoding and mean pooling predicts the same class for
    every rotation of a group (permutation invariance), so it cannot pass the bag ceiling."""
    from transformer_ablations.model.task_models import SequenceClassifier

    vocab = {w: i for i, w in enumerate(synthetic.lookup_vocabulary())}
    cfg = make_model_cfg(arch="encoder", positional="none", vocab_size=len(vocab), segment_embeddings=False)
    torch.manual_seed(0)
    model = SequenceClassifier(cfg, synthetic.LOOKUP_SYMBOLS, pooling="mean").eval()
    rows = synthetic.lookup(3 * 20, seed=1)
    for g in range(0, len(rows), 3):
        group = rows[g: g + 3]
        ids = torch.tensor([[vocab[w] for w in r["text"].split()] for r in group])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
                 "labels": torch.tensor([r["label"] for r in group])}
        logits = model(batch).logits
        assert torch.allclose(logits[0], logits[1], atol=1e-5) and torch.allclose(logits[0], logits[2], atol=1e-5)
        assert len({r["label"] for r in group}) == 3


def test_lookup_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="lookup: need"):
        synthetic.lookup(10, min_len=2, max_len=8)


# --- Q3: length buckets, matched parameters -----------------------------------------------------------
@pytest.mark.parametrize("seq_len", [17, 49, 65])
def test_length_buckets_cover_the_real_source_range(seq_len):
    from transformer_ablations.data.examples import _sizes, _smax

    lo, hi = _sizes(2, _smax, seq_len, 1)  # the source sizes reverse_rows draws for rows of seq_len
    buckets = length_buckets(seq_len)
    assert buckets[-1] == hi == max_source_len(seq_len) and len(buckets) == 4
    rows = synthetic.reverse(2000, seed=0, min_len=lo, max_len=hi)
    lengths = [len(r["source"].split()) for r in rows]
    lower = 0
    for upper in buckets:  # every bucket holds examples, none is empty or past the longest source
        assert any(lower < n <= upper for n in lengths), (lower, upper)
        lower = upper
    assert max(lengths) == buckets[-1]


def _q3_model(arch: str):
    from transformer_ablations.cli import parse_run_config

    cfg = parse_run_config(["--config", str(ROOT / "experiments/q3_attention.yaml"), "--scale=quick", f"--model.arch={arch}"])
    cfg.model.vocab_size = 40
    return cfg, Transformer(cfg.model)


def test_q3_arms_have_matched_parameters():
    (enc_cfg, enc_dec), (dec_cfg, dec) = _q3_model("encoder_decoder"), _q3_model("decoder")
    assert (enc_cfg.model.n_layers, dec_cfg.model.n_layers) == (2, 5)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert abs(count(enc_dec) - count(dec)) / count(enc_dec) < 0.02, (count(enc_dec), count(dec))


# --- Q3: zeroing heads ----------------------------------------------------------------------------------
def _enc_dec(make_model_cfg):
    torch.manual_seed(0)
    cfg = make_model_cfg(arch="encoder_decoder", n_heads=4, d_model=32, n_layers=2, vocab_size=17)
    model = Transformer(cfg).eval()
    src, tgt = torch.randint(0, 17, (3, 7)), torch.randint(0, 17, (3, 5))
    return model, lambda: model(tgt, encoder_input_ids=src)[0]


def test_zero_heads_changes_the_output_only_through_the_named_heads(make_model_cfg):
    model, run = _enc_dec(make_model_cfg)
    base = run()
    with zero_heads(model, ["dec1_cross:2"]):
        zeroed = run()
    assert not torch.allclose(base, zeroed)
    assert torch.equal(run(), base)  # the hook is gone after the block
    # the same as removing head 2's columns from that layer's output projection, and nothing else
    layer = attention_layers(model)["dec1_cross"]
    d = layer.head_dim
    with torch.no_grad():
        layer.out.weight[:, 2 * d: 3 * d] = 0.0
    assert torch.allclose(run(), zeroed, atol=1e-6)


def test_zero_heads_names_and_kinds(make_model_cfg):
    model, run = _enc_dec(make_model_cfg)
    assert head_names(model, "cross") == [f"dec{i}_cross:{h}" for i in range(2) for h in range(4)]
    assert head_names(model, "self") == [f"dec{i}_self:{h}" for i in range(2) for h in range(4)]
    assert len(head_names(model)) == 24  # + the encoder's 8
    base = run()
    with zero_heads(model, head_names(model, "self")[:1]):
        assert not torch.allclose(run(), base)
    with pytest.raises(ValueError, match="unknown attention head 'dec9_cross:0'"), zero_heads(model, ["dec9_cross:0"]):
        pass
    with pytest.raises(ValueError, match="unknown attention head"), zero_heads(model, ["dec0_cross:4"]):
        pass


# --- Q4: Bahdanau init, compiled additive path ------------------------------------------------------------
def test_additive_init_defaults_to_bahdanau(make_model_cfg):
    assert AttentionConfig().additive_init == "bahdanau"
    torch.manual_seed(0)
    cfg = make_model_cfg(n_heads=2, d_model=32, attention={"kind": "additive"})
    core = AdditiveAttention(cfg)
    assert torch.count_nonzero(core.v_a) == 0
    layer = SelfAttention(cfg)
    x = torch.randn(2, 9, 32)
    _, stats = layer(x, AttentionContext.build(None, None, None, 9, x.device), return_stats=True)
    assert math.isclose(float(stats["entropy"]), 1.0, rel_tol=1e-5)  # uniform attention at step 0
    unit = AdditiveAttention(make_model_cfg(n_heads=2, d_model=32, head_dim=256,
                                            attention={"kind": "additive", "additive_init": "unit"}))
    assert 0.9 < float(unit.v_a.std()) < 1.1


def _additive_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=g, requires_grad=True) for _ in range(3))
    v_a = torch.randn(3, 8, generator=g, requires_grad=True)
    bias = torch.zeros(2, 1, 6, 6).masked_fill(torch.rand(2, 1, 6, 6, generator=g) < 0.2, float("-inf"))
    bias[..., 0] = 0.0
    return q, k, v, v_a, bias


def test_dense_additive_formula_equals_the_chunked_kernel():
    q, k, v, v_a, bias = _additive_inputs()
    outs = []
    for fn in (lambda: additive_attention(q, k, v, v_a, 0.5, bias, 4), lambda: additive_attention_dense(q, k, v, v_a, 0.5, bias)):
        out = fn()
        grads = torch.autograd.grad((out**2).sum(), (q, k, v, v_a))
        outs.append((out, grads))
    (o1, g1), (o2, g2) = outs
    assert torch.allclose(o1, o2, atol=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-4)


def test_compiled_additive_layer_equals_eager(make_model_cfg):
    """torch.compile traces the dense formula (the chunked kernel is eager only); outputs and gradients
    match the eager layer. Backend aot_eager: it traces exactly what Inductor would be given (dynamo +
    AOT autograd) without generating C++, so the test takes seconds; Inductor's own code generation is
    PyTorch's and is timed by bench/attention_cost.py (additive_compiled)."""
    torch.manual_seed(0)
    cfg = make_model_cfg(n_heads=2, d_model=16, attention={"kind": "additive", "additive_init": "unit"})
    layer = SelfAttention(cfg)
    x = torch.randn(2, 7, 16, requires_grad=True)
    ctx = AttentionContext.build(None, None, None, 7, x.device)
    results = []
    for forward in (layer, torch.compile(layer, backend="aot_eager", fullgraph=False)):
        y, _ = forward(x, ctx)
        grads = torch.autograd.grad((y**2).sum(), [x, *layer.parameters()])
        results.append((y.detach(), grads))
    (y1, g1), (y2, g2) = results
    assert torch.allclose(y1, y2, atol=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-4)


def test_attention_cost_flops_and_compiled_kinds():
    from transformer_ablations.bench.attention_cost import KINDS, step_flops

    assert {"dot_compiled", "additive_compiled"} <= set(KINDS)
    for t, d in ((64, 16), (256, 64)):
        ratio = step_flops("additive", t, d, 4, 2) / step_flops("dot_reference", t, d, 4, 2)
        assert 1.0 < ratio < 2.0, ratio  # more work, but not the 5-10x the eager times show
        assert step_flops("additive_compiled", t, d, 4, 2) == step_flops("additive", t, d, 4, 2)


def test_attention_cost_compile_only_compiles_each_compiled_layer_and_writes_nothing(tmp_path, monkeypatch):
    from transformer_ablations.bench import attention_cost

    compiled = []
    real_compile = torch.compile

    def recording_compile(module, backend=None, **kw):
        compiled.append(backend)
        return real_compile(module, backend="eager", **kw)  # the call, not inductor's code generation

    monkeypatch.setattr(attention_cost.torch, "compile", recording_compile)
    out = tmp_path / "cost.json"
    rows = attention_cost.main(["--compile-only", "--quiet", "--lengths", "8,16", "--d-k", "4,8", "--n-heads", "2",
                                "--out", str(out)])
    assert rows == [] and not any(tmp_path.iterdir())  # nothing timed, nothing written
    assert compiled == ["inductor"] * (len(attention_cost.COMPILED_KINDS) * 2 * 2)


# --- Q1: lr selection ---------------------------------------------------------------------------------------
def _selection_record(root: Path, cfg: RunConfig, lr: float, seed: int, score: float, status="finished") -> Path:
    flat = {**flatten(to_dict(cfg)), "train.lr": lr, "seed": seed, "experiment": "q1_lr_select"}
    run_dir = root / f"s{seed}-{int(lr * 1e4):04d}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(
        {"status": status, "config": flat, "metrics": {"val_select/acc": score, "val/acc": score - 0.1}}))
    (run_dir / "metrics.csv").write_text("step,val/acc\n8,0.1\n")
    return run_dir


def _final_cfg(out: Path, **kw) -> RunConfig:
    cfg = RunConfig(experiment="q1_scaling", seed=kw.pop("seed", 0))
    cfg.train.out_dir, cfg.train.monitor, cfg.train.monitor_mode = str(out), "val/acc", "max"
    cfg.train.lr_from = "auto:q1_lr_select"
    cfg.data.selection_split = True
    for k, v in kw.items():
        setattr(cfg.model, k, v)
    return cfg


def test_select_lr_takes_the_best_mean_on_val_select_of_the_same_setting(tmp_path):
    from transformer_ablations.training.lr_select import adopt_selection_run, select_lr

    cfg = _final_cfg(tmp_path)
    root = tmp_path / "q1_lr_select"
    for seed, scores in ((0, (0.30, 0.50, 0.40)), (1, (0.32, 0.40, 0.46))):  # means .31 .45 .43
        for lr, score in zip((3e-4, 1e-3, 3e-3), scores):
            _selection_record(root, cfg, lr, seed, score)
    other = _final_cfg(tmp_path, head_dim=256)  # another arm: its (better) scores must not count
    _selection_record(root / "..", other, 3e-3, 7, 0.99)  # wrong folder, ignored
    _selection_record(root, other, 3e-3, 5, 0.99)
    _selection_record(root, cfg, 3e-3, 9, 0.99, status="failed")  # not finished: ignored
    chosen = select_lr(cfg)
    assert chosen["lr"] == 1e-3 and chosen["grid"]["0.001"] == {"mean": pytest.approx(0.45), "n": 2}
    assert chosen["metric"] == "val_select/acc"
    # seed 1 at lr 1e-3 is a selection run: its record is copied, not retrained
    run_dir = tmp_path / "q1_scaling" / "s1-abc"
    adopted = adopt_selection_run(_final_cfg(tmp_path, seed=1), run_dir, chosen)
    assert adopted.config["train.lr"] == 1e-3 and adopted.metrics["val/acc"] == pytest.approx(0.3)
    assert json.loads((run_dir / "summary.json").read_text())["lr_selection"]["lr"] == 1e-3
    assert (run_dir / "metrics.csv").is_file()
    assert adopt_selection_run(_final_cfg(tmp_path, seed=4), tmp_path / "x", chosen) is None  # no such seed


def test_a_final_run_adopts_the_same_training_from_another_final_sweep_of_its_selection(tmp_path):
    """q1_bf16's fp32 arm at seeds 2-4 is q1_scaling's d_k = 256 training: whichever sweep runs second
    copies the record (same settings, seed, chosen lr and precision) instead of training again."""
    from transformer_ablations.training.lr_select import adopt_selection_run, select_lr

    cfg = _final_cfg(tmp_path, head_dim=256)
    for seed in (0, 1):
        for lr, score in ((1e-3, 0.4), (3e-3, 0.5)):
            _selection_record(tmp_path / "q1_lr_select", cfg, lr, seed, score)
    chosen = select_lr(cfg)
    assert chosen["lr"] == 3e-3

    def sibling(name: str, precision: str, **extra) -> Path:
        run_dir = _selection_record(tmp_path / "q1_bf16", cfg, 3e-3, 3, 0.61)
        run_dir = run_dir.rename(run_dir.with_name(name))
        record = json.loads((run_dir / "summary.json").read_text())
        record["config"].update({"experiment": "q1_bf16", "train.precision": precision})
        record.update(lr_selection=chosen, **extra)
        (run_dir / "summary.json").write_text(json.dumps(record))
        return run_dir

    sibling("s3-bf16", "bf16-mixed")  # another precision: another training
    sibling("s3-copy", "32-true", reused_from="elsewhere")  # itself a copy: never the source
    assert adopt_selection_run(_final_cfg(tmp_path, seed=3, head_dim=256), tmp_path / "q1_scaling" / "a", chosen) is None
    source = sibling("s3-fp32", "32-true")
    adopted = adopt_selection_run(_final_cfg(tmp_path, seed=3, head_dim=256), tmp_path / "q1_scaling" / "s3-x", chosen)
    assert adopted.reused_from == str(source) and adopted.metrics["val_select/acc"] == pytest.approx(0.61)
    assert adopted.experiment == "q1_scaling" and adopted.config["train.lr"] == 3e-3
    # another arm (d_k = 64) never takes the d_k = 256 record
    assert adopt_selection_run(_final_cfg(tmp_path, seed=3, head_dim=64), tmp_path / "q1_scaling" / "b", chosen) is None


def test_select_lr_without_selection_runs_is_one_clear_error(tmp_path):
    from transformer_ablations.training.lr_select import select_lr

    with pytest.raises(ConfigError, match=r"train.lr_from=auto:q1_lr_select: no finished q1_lr_select run"):
        select_lr(_final_cfg(tmp_path))
    cfg = RunConfig()
    cfg.train.lr_from = "q1_lr_select"
    from transformer_ablations.config import validate

    with pytest.raises(ConfigError, match="must be auto:<sweep>"):
        validate(cfg)


def test_q1_final_sweep_runs_after_the_selection_sweep(monkeypatch, tmp_path):
    from transformer_ablations.sweeps.executor import Executor, ExecutorOptions

    monkeypatch.chdir(ROOT)
    ex = Executor(ExecutorOptions(scale="smoke", runs_dir=str(tmp_path)))
    plans = ex.plan_all([ROOT / "sweeps/q1_scaling.yaml", ROOT / "sweeps/q1_lr_select.yaml"])
    assert [p.spec.name for p in plans] == ["q1_lr_select", "q1_scaling"]
    assert len(plans[0].runs) == 72 and len(plans[1].runs) == 45
    with pytest.raises(ConfigError, match="q1_lr_select"):
        ex.plan_all([ROOT / "sweeps/q1_scaling.yaml"])  # alone, with no selection runs yet


def test_every_q4_arm_trains_at_its_own_tuned_lr_with_seeds_no_q1_run_has(monkeypatch, tmp_path):
    """Dot arms are Q1's settings exactly, so they take Q1's choice; additive arms have a selection sweep
    of their own over the same grid; the final Q4 runs share no seed with Q1's runs (none is a copy)."""
    from transformer_ablations.sweeps.executor import Executor, ExecutorOptions
    from transformer_ablations.training.lr_select import _identity

    monkeypatch.chdir(ROOT)
    names = ("q1_lr_select", "q1_scaling", "q4_lr_select", "q4_additive")
    plans = {p.spec.name: p for p in Executor(ExecutorOptions(scale="quick", runs_dir=str(tmp_path))).plan_all(
        [ROOT / "sweeps" / f"{n}.yaml" for n in names])}
    assert [n for n in plans] == list(names) and plans["q4_additive"].needs == {"q1_lr_select", "q4_lr_select"}
    selection = {n: [r.cfg for r in plans[n].runs] for n in ("q1_lr_select", "q4_lr_select")}
    grids = {n: sorted({c.train.lr for c in cfgs}) for n, cfgs in selection.items()}
    assert grids["q1_lr_select"] == grids["q4_lr_select"]
    q1_seeds = {r.cfg.seed for n in ("q1_lr_select", "q1_scaling") for r in plans[n].runs}
    finals = [r.cfg for r in plans["q4_additive"].runs]
    assert len(finals) == 30 and not {c.seed for c in finals} & q1_seeds
    for cfg in finals:
        sweep = {"dot": "q1_lr_select", "additive": "q4_lr_select"}[cfg.model.attention.kind]
        assert cfg.train.lr_from == f"auto:{sweep}"
        mine = _identity(flatten(to_dict(cfg)))
        assert sum(_identity(flatten(to_dict(c))) == mine for c in selection[sweep]) == 8  # 4 lrs x 2 seeds
    assert all(c.train.lr_from is None and c.model.attention.kind == "additive" for c in selection["q4_lr_select"])


@pytest.mark.parametrize("name", ["q1_lr_select", "q2_lookup", "q4_lr_select"])
def test_new_sweep_files_validate_at_every_scale(name, monkeypatch):
    from transformer_ablations.sweeps.validate import validate_sweep

    monkeypatch.chdir(ROOT)
    for scale in ("smoke", "quick", "full"):
        assert validate_sweep(ROOT / "sweeps" / f"{name}.yaml", scale=scale).name == name


# --- claims: one primary per question, the slope contrast ---------------------------------------------------
def test_claims_have_one_primary_per_question_and_q1_primary_is_a_three_point_slope():
    from transformer_ablations.report.claims import load_claims

    claims = load_claims(ROOT / "experiments/claims.yaml", ROOT / "sweeps")
    for q in ("q1", "q2", "q3", "q4"):
        assert sum(c.tier == "primary" for c in claims if c.question == q) == 1, q
        assert any(c.tier == "control" for c in claims if c.question == q), q
    (q1,) = [c for c in claims if c.question == "q1" and c.tier == "primary"]
    assert q1.expect == "gap_grows" and q1.along["values"] == [16, 64, 256]


def test_slope_weights_are_the_least_squares_slope():
    import numpy as np

    from transformer_ablations.report.evaluate import slope_weights

    assert slope_weights([16, 64, 256], "log2") == pytest.approx([-0.25, 0.0, 0.25])
    w = slope_weights([16, 64, 256], "sqrt")
    y = np.array([0.0, 0.1, 0.5])
    assert float(np.dot(w, y)) == pytest.approx(np.polyfit([4.0, 8.0, 16.0], y, 1)[0])


# --- the new measurements reach the run record ---------------------------------------------------------------
def test_a_q3_run_records_head_drops_buckets_and_init_statistics(tmp_path):
    """Smoke encoder-decoder run: every decoder head's drop, the means, the real-range buckets, and the
    step-0 statistics of Q1 (saturation, gradient into W_q/W_k) are in summary.json."""
    from transformer_ablations.cli import parse_run_config
    from transformer_ablations.training.run import train

    cfg = parse_run_config(["--config", str(ROOT / "experiments/q3_attention.yaml"), "--scale=smoke",
                            "--train.wandb=disabled", f"--train.out_dir={tmp_path / 'runs'}",
                            f"--data.cache_dir={tmp_path / 'cache'}", "--train.accelerator=cpu"])
    summary = train(cfg)
    assert summary["status"] == "finished", summary.get("error")
    m = summary["metrics"]
    heads = [k for k in m if k.startswith("val/head_drop/")]
    assert sorted(heads) == sorted(f"val/head_drop/dec{i}_{kind}_h{h}" for i in range(2) for kind in ("self", "cross")
                                   for h in range(4))
    cross = [m[f"val/head_drop/dec{i}_cross_h{h}"] for i in range(2) for h in range(4)]
    assert m["val/head_drop_cross"] == pytest.approx(sum(cross) / 8)
    assert m["val/head_drop_cross_minus_self"] == pytest.approx(m["val/head_drop_cross"] - m["val/head_drop_self"])
    assert {f"val/exact_match_src{b}" for b in length_buckets(cfg.data.seq_len)} & set(m)
    assert 0.0 <= m["attn/init/saturated"] <= 1.0 and m["train/init_grad_norm_qk"] > 0
