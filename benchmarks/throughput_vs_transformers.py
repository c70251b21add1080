"""Train-step throughput (tokens/s) of our models against Hugging Face ``transformers`` at equal sizes.

- encoder + MaskedLM(nsp=True) (objective mlm_nsp)  vs  ``BertForPreTraining``
- decoder + CausalLM (objective causal)              vs  ``GPT2LMHeadModel``

Both sides: vocab 8000, d_model 256, 4 layers, 4 heads, d_ff 1024, T=128, batch 32, fp32, exact
GELU, the same dropout (default 0), tied input/output embeddings, learned absolute positions,
AdamW(lr 1e-4, wd 0.01, torch's default implementation: on the CPU the per-parameter loop, as in our
training), SDPA attention, random token batches (all positions real), 15% of positions carry an MLM
label. BERT side: post-norm like BERT (ours has no embedding LayerNorm: BERT normalises the embeddings,
one extra LayerNorm). GPT side: pre-norm + final LayerNorm like GPT-2. Known asymmetry kept on purpose:
BERT's head computes vocab logits at every position; ours only at the 15% masked ones (the "sparse MLM"
lever).

Matrix-product backend, reported rather than hidden: ATen's fp32 CPU ``mm``/``addmm`` (what HF calls)
use MKL, which runs AVX2 kernels on AMD CPUs; our Linear layers and fused loss call oneDNN there instead
(``transformer_ablations.model.kernels.cpu_linear``: ~2x the GFLOPS on the AMD EPYC these numbers come from).
So next to the two default contenders the table has two like-for-like rows: ``ours ATen matmuls``
(our oneDNN path switched off: both sides on MKL) and ``hf ... +oneDNN linears`` (HF's ``F.linear`` and
``torch.addmm`` routed through the same oneDNN linear by a TorchFunctionMode: both sides on oneDNN).
Each like-for-like pair is checked to give the same loss before timing.

All contenders are timed in one process, alternating, median of repeats (see
``transformer_ablations.bench.timing``). ``--compile`` adds torch.compile'd versions of ours
(and of the HF models with ``--compile-hf``), timed after their warm-up compile.

    python benchmarks/throughput_vs_transformers.py [--repeats 5] [--steps 2] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from pathlib import Path

import _common
import torch
import torch.nn.functional as F

from transformer_ablations.bench.timing import alternate, fmt_table
from transformer_ablations.model.kernels import cpu_linear

SIZES = {"vocab": 8000, "d_model": 256, "n_layers": 4, "n_heads": 4, "d_ff": 1024, "T": 128, "batch": 32}


# --- batches ---------------------------------------------------------------------------------
def mlm_batch(b: int, t: int, vocab: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (b, t), generator=gen)
    picked = torch.rand(b, t, generator=gen) < 0.15
    picked[:, 0] = False  # [CLS]
    labels = torch.where(picked, ids, torch.full_like(ids, -100))
    segment = (torch.arange(t) >= t // 2).long().expand(b, t).contiguous()
    return {
        "input_ids": ids.masked_fill(picked, 4),  # 4 = [MASK]
        "attention_mask": torch.ones(b, t, dtype=torch.bool),
        "segment_ids": segment,
        "labels": labels,
        "nsp_labels": torch.randint(0, 2, (b,), generator=gen),
    }


def causal_batch(b: int, t: int, vocab: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (b, t), generator=gen)
    labels = torch.cat([ids[:, 1:], torch.full((b, 1), -100)], dim=1)  # already shifted (our format)
    return {"input_ids": ids, "attention_mask": torch.ones(b, t, dtype=torch.bool), "labels": labels}


# --- models ----------------------------------------------------------------------------------
def ours(kind: str, dropout: float, package: str = "transformer_ablations"):
    config = importlib.import_module(f"{package}.config")
    model = importlib.import_module(f"{package}.model")
    s = SIZES
    common = {
        "d_model": s["d_model"], "n_heads": s["n_heads"], "n_layers": s["n_layers"], "d_ff": s["d_ff"],
        "vocab_size": s["vocab"], "max_len": 512, "dropout": dropout, "positional": "learned",
    }
    if kind == "mlm_nsp":
        cfg = config.ModelConfig(arch="encoder", norm="post", segment_embeddings=True, **common)
        return model.MaskedLM(cfg, nsp=True)
    cfg = config.ModelConfig(arch="decoder", norm="pre", segment_embeddings=False, **common)
    return model.CausalLM(cfg)


def hf(kind: str, dropout: float):
    import transformers

    transformers.logging.set_verbosity_error()

    s = SIZES
    if kind == "mlm_nsp":
        cfg = transformers.BertConfig(
            vocab_size=s["vocab"], hidden_size=s["d_model"], num_hidden_layers=s["n_layers"],
            num_attention_heads=s["n_heads"], intermediate_size=s["d_ff"], hidden_act="gelu",
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            max_position_embeddings=512, type_vocab_size=2, tie_word_embeddings=True,
        )
        return transformers.BertForPreTraining._from_config(cfg, attn_implementation="sdpa")
    cfg = transformers.GPT2Config(
        vocab_size=s["vocab"], n_embd=s["d_model"], n_layer=s["n_layers"], n_head=s["n_heads"],
        n_inner=s["d_ff"], n_positions=512, activation_function="gelu",
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")


def ours_loss(model, batch):
    return model(batch).loss


# --- the matrix-product backend of each side (see the module docstring) ----------------------------------
class OneDNNLinears(torch.overrides.TorchFunctionMode):
    """Inside it, HF's products go through the oneDNN linear our model uses: ``F.linear`` (nn.Linear, the
    LM heads) and ``torch.addmm(bias, x, weight)`` (GPT-2's Conv1D, weight [in, out]). Their backward is
    that of ``cpu_linear.OneDNNLinear``. Everything else runs as usual."""

    routed = 0  # products routed so far (the benchmark checks that there were some)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            OneDNNLinears.routed += 1
            return cpu_linear.linear(*args, **kwargs)
        if func is torch.addmm and not kwargs and len(args) == 3 and args[0].dim() == 1:
            OneDNNLinears.routed += 1
            bias, x, weight = args
            return cpu_linear.linear(x, weight.t(), bias)  # x @ weight + bias
        return func(*args, **kwargs)


def with_backend(loss_fn, onednn: bool, mode: bool = False):
    """``loss_fn`` with our oneDNN linear on or off (``cpu_linear.ENABLED``), and HF's products routed to
    it (``mode``). Backward follows: it runs what forward recorded."""

    def run(model, batch):
        saved = cpu_linear.ENABLED
        cpu_linear.ENABLED = onednn
        try:
            with OneDNNLinears() if mode else contextlib.nullcontext():
                return loss_fn(model, batch)
        finally:
            cpu_linear.ENABLED = saved

    return run


def check_same_loss(model, loss_a, loss_b, batch, what: str) -> None:
    """The two backends compute the same loss (fp32 rounding apart): a like-for-like row is the same maths."""
    with torch.no_grad():
        a, b = float(loss_a(model, batch)), float(loss_b(model, batch))
    if abs(a - b) > 1e-4 * max(1.0, abs(a)):
        raise RuntimeError(f"{what}: loss {a} with one matmul backend, {b} with the other")


def hf_loss(kind: str):
    if kind == "mlm_nsp":
        return lambda m, b: m(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["segment_ids"],
            labels=b["labels"], next_sentence_label=b["nsp_labels"],
        ).loss
    return lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["input_ids"]).loss


def train_step(model, loss_fn, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    model.train()

    def step():
        loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def profile_table(name: str, step, rows: int = 12) -> str:
    """Top ops by self CPU time over one step (after warm-up), and the share of matrix products."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    avgs = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avgs)
    shares = {}
    for e in avgs:
        shares[op_category(e.key)] = shares.get(op_category(e.key), 0) + e.self_cpu_time_total
    top = sorted(avgs, key=lambda e: -e.self_cpu_time_total)[:rows]
    lines = [f"--- profile of one step: {name}: {total / 1e3:.0f} ms self CPU; "
             + ", ".join(f"{k} {v / 1e3:.0f} ms ({v / max(total, 1):.0%})" for k, v in shares.items())]
    lines += [f"  {e.key[:58]:58s} {e.self_cpu_time_total / 1e3:8.1f} ms {e.self_cpu_time_total / max(total, 1):6.1%}"
              f"  x{e.count}" for e in top]
    return "\n".join(lines)


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")


def op_category(key: str) -> str:
    if key in MATMUL_OPS:
        return "matmul"
    if "scaled_dot_product" in key:
        return "attention (SDPA)"
    if key.startswith(("aten::_foreach", "Optimizer", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt")):
        return "optimizer"
    return "other"


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def ours_on(onednn: bool) -> str:
    """The row of ours on a given matmul backend."""
    return "ours" if onednn == cpu_linear.ENABLED else ("ours +oneDNN linears" if onednn else "ours ATen matmuls")


def build(kind: str, args) -> tuple[dict[str, tuple], str]:
    """-> (name -> (step fn, params), the name of the baseline: stock HF)"""
    gen = torch.Generator().manual_seed(0)
    b, t, v = args.batch, SIZES["T"], SIZES["vocab"]
    batch = (mlm_batch if kind == "mlm_nsp" else causal_batch)(b, t, v, gen)
    hf_name = "BertForPreTraining" if kind == "mlm_nsp" else "GPT2LMHeadModel"
    like_for_like = cpu_linear.available() and not args.no_like_for_like
    out = {}
    torch.manual_seed(0)
    m = hf(kind, args.dropout)
    hf_aten = hf_loss(kind)  # stock: HF calls ATen, which calls MKL
    out[f"hf {hf_name}"] = (train_step(m, hf_aten, batch), n_params(m))
    if like_for_like:
        m = hf(kind, args.dropout)
        hf_onednn = with_backend(hf_loss(kind), onednn=True, mode=True)
        routed = OneDNNLinears.routed
        check_same_loss(m, hf_aten, hf_onednn, batch, hf_name)
        if OneDNNLinears.routed - routed < 4 * SIZES["n_layers"]:
            raise RuntimeError(f"{hf_name}: its products were not routed to oneDNN")
        out[f"hf {hf_name} +oneDNN linears"] = (train_step(m, hf_onednn, batch), n_params(m))
    if args.compile_hf:
        mc = hf(kind, args.dropout)
        mc.forward = torch.compile(mc.forward, dynamic=False)
        out[f"hf {hf_name} +compile"] = (train_step(mc, hf_loss(kind), batch), n_params(mc))
    m = ours(kind, args.dropout)
    out["ours"] = (train_step(m, ours_loss, batch), n_params(m))
    if like_for_like:  # ours on the backend it does not use by default on this CPU
        m = ours(kind, args.dropout)
        other = with_backend(ours_loss, onednn=not cpu_linear.ENABLED)
        check_same_loss(m, ours_loss, other, batch, "ours")
        out[ours_on(not cpu_linear.ENABLED)] = (train_step(m, other, batch), n_params(m))
    if args.compile:
        mc = ours(kind, args.dropout)
        mc.compile(dynamic=False)
        out["ours +compile"] = (train_step(mc, lambda mm, bb: mm(bb).loss, batch), n_params(mc))
    for pkg in args.also_package:
        m = ours(kind, args.dropout, pkg)
        out[f"{pkg}"] = (train_step(m, ours_loss, batch), n_params(m))
    return out, f"hf {hf_name}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", nargs="+", default=["mlm_nsp", "causal"], choices=["mlm_nsp", "causal"])
    p.add_argument("--batch", type=int, default=SIZES["batch"])
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="train steps per timed repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd versions of ours")
    p.add_argument("--compile-hf", action="store_true", help="also time torch.compile'd HF models")
    p.add_argument("--budget-s", type=float, default=240.0, help="stop repeating (after 2) per kind past this")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--also-package", nargs="*", default=[], help="(dev) another copy of the package to time")
    p.add_argument("--profile", action="store_true", help="print the top ops of one step of each model")
    p.add_argument("--no-like-for-like", action="store_true",
                   help="leave out the rows with both sides on one matmul backend")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(_common.machine_line())
    print("sizes:", {**SIZES, "batch": args.batch}, "dropout", args.dropout)
    print(f"our Linear layers and fused loss use oneDNN on this CPU: {'yes' if cpu_linear.ENABLED else 'no'} "
          f"(vendor {cpu_linear._cpu_vendor() or '?'}; HF's products: ATen -> MKL)")
    result = {}
    for kind in args.kinds:
        t0 = time.perf_counter()
        built, base = build(kind, args)
        warm_t0 = time.perf_counter()
        times = alternate(
            {n: fn for n, (fn, _) in built.items()}, args.repeats, args.steps, args.warmup,
            budget_s=args.budget_s,
        )
        tokens = args.batch * SIZES["T"]
        rows, result[kind] = [], {}
        for n in built:
            wall, cpu = times.median(n), times.median(n, "cpu")
            ratio, cpu_ratio = times.median(base) / wall, times.median(base, "cpu") / cpu
            ws = times.wall[n]
            rows.append([n, f"{built[n][1] / 1e6:.2f}M", wall * 1e3, tokens / wall, ratio, cpu * 1e3, cpu_ratio,
                         f"{min(ws) * 1e3:.0f}-{max(ws) * 1e3:.0f}", len(ws)])
            result[kind][n] = {"step_ms": wall * 1e3, "tokens_per_s": tokens / wall, "ratio_vs_hf": ratio,
                               "cpu_ms": cpu * 1e3, "cpu_ratio_vs_hf": cpu_ratio,
                               "wall_ms": [x * 1e3 for x in ws], "cpu_ms_all": [x * 1e3 for x in times.cpu[n]]}
        print(f"\n[{kind}] one train step (fwd+bwd+AdamW), median of repeats; x = hf time / this time")
        print(fmt_table(["model", "params", "wall_ms", "tokens/s", "x wall", "cpu_ms", "x cpu", "wall range", "n"],
                        rows))
        print(f"({time.perf_counter() - t0:.0f} s incl. build+compile {warm_t0 - t0:.0f} s; "
              "cpu = process user+sys time, steadier on a shared machine)")
        pairs = [("both on ATen/MKL", base, ours_on(False)), ("both on oneDNN", f"{base} +oneDNN linears", ours_on(True))]
        for label, theirs, mine in pairs:
            if theirs in built and mine in built:
                x = times.median(theirs, "cpu") / times.median(mine, "cpu")
                result[kind][mine]["cpu_ratio_like_for_like"] = {"vs": theirs, "ratio": x}
                print(f"like for like, {label}: ours {x:.2f}x (cpu)")
        if args.profile:
            for n, (fn, _) in built.items():
                if "compile" not in n:
                    print(profile_table(n, fn))
    return _common.write_json(args.json, result)


if __name__ == "__main__":
    main(sys.argv[1:])
