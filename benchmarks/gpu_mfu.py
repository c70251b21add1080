"""Tokens/s and MFU of a GPT-2-small-sized decoder (124M) training on one CUDA GPU. Goal: MFU >= 45%.

Model: our ``CausalLM`` with d_model 768, 12 layers, 12 heads, d_ff 3072, vocab 50304, learned
positions, pre-norm, tied embeddings, dropout 0, T = 1024. bf16 autocast, TF32 matmuls allowed,
``torch.compile``, fused AdamW, no attention mask (so SDPA runs ``is_causal=True``: flash attention;
the script checks that the flash kernel accepts these shapes). Random token batches.

Two variants of the step:
- ``dense``: backbone -> tied LM head on all positions -> cross-entropy, one compiled graph
  (how GPT-2 trainers such as nanoGPT do it);
- ``task``: ``CausalLM.forward(batch)`` as training runs it (labels gather at the predicted
  positions: a data-dependent shape, so a graph break and a host sync per step).

MFU = tokens/s x FLOPs per token / peak, with FLOPs per token measured: one eager training step
(forward + backward) counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
SDPA, attention counted as full, not causal-halved) divided by the step's tokens. ``mfu_formula``
uses the PaLM / nanoGPT count 6 N + 12 L d_model T (N = parameters without the position table) for
comparison with nanoGPT's figures. Peak: ``lightning.fabric.utilities.throughput.get_available_flops``
(dense bf16), else a table. Peak memory: ``torch.cuda.max_memory_allocated`` over the variant's steps.

On a machine without CUDA it prints "no CUDA device: skipped" and exits 0 (``--dry-run`` runs a tiny
configuration on the CPU instead, to check the script).

    python benchmarks/gpu_mfu.py [--batch 16] [--steps 20] [--warmup 5] [--variants dense task]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common
import torch
import torch.nn.functional as F

PEAK_BF16 = {  # dense bf16 tensor-core FLOP/s, used when Lightning does not know the device
    "h200": 989.4e12,
    "h100 sxm": 989.4e12,
    "h100 nvl": 835.0e12,
    "h100 pcie": 756.0e12,
    "h100": 989.4e12,
    "a100": 312.0e12,
    "l40s": 362.05e12,
    "a10g": 70.0e12,
}


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    why = "unknown device"
    try:
        from lightning.fabric.utilities.throughput import get_available_flops

        value = get_available_flops(device, torch.bfloat16)
        if value:
            return float(value), "lightning get_available_flops"
    except Exception as e:  # noqa: BLE001  (Lightning missing or device unknown to it: use the table)
        why = f"lightning: {type(e).__name__}"
    name = torch.cuda.get_device_name(device).lower() if device.type == "cuda" else ""
    for key, value in PEAK_BF16.items():
        if key in name:
            return value, f"table ({key})"
    return None, why


def flops_per_token(model, cfg, t: int) -> tuple[float, int]:
    n = sum(p.numel() for p in model.parameters())
    pos = model.backbone.positional
    if hasattr(pos, "embedding"):
        n -= pos.embedding.weight.numel()
    return 6 * n + 12 * cfg.n_layers * cfg.d_model * t, n


def measured_flops(loss_fn, model) -> int:
    """FLOPs of one eager forward + backward of ``loss_fn`` (gradients cleared afterwards)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def check_flash(device: torch.device, cfg, t: int) -> str:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, cfg.n_heads, t, cfg.d_head, device=device, dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return "flash attention accepts the shapes"
    except RuntimeError as e:
        return f"flash attention NOT usable: {str(e).splitlines()[0][:120]}"


def make_loss_fn(variant: str, model, ids, labels):
    """``dense``: backbone -> tied head on every position -> cross-entropy; ``task``: ``CausalLM.forward``."""
    if variant == "dense":
        weight = model.backbone.tok_embedding.weight

        def loss_fn():
            hidden, _ = model.backbone(ids)
            logits = F.linear(hidden, weight)
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)

        return loss_fn
    batch = {"input_ids": ids, "labels": labels}
    return lambda: model(batch).loss


def timed(step, warmup: int, steps: int, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """-> (warm-up seconds, seconds per timed step, last loss)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    return warm_s, (time.perf_counter() - t0) / steps, loss


def run_variant(variant: str, cfg, ids, labels, args, peak: float | None, peak_src: str) -> dict:
    from transformer_ablations.model import CausalLM

    device, (b, t) = ids.device, ids.shape
    torch.manual_seed(0)
    model = CausalLM(cfg).to(device)
    fpt, n_params = flops_per_token(model, cfg, t)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    loss_fn = make_loss_fn(variant, model, ids, labels)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        fpt_measured = measured_flops(loss_fn, model) / (b * t)
    if device.type == "cuda":  # the eager counting step is not part of the compiled steps' peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    fn = loss_fn if args.no_compile else torch.compile(loss_fn)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    warm_s, dt, loss = timed(step, args.warmup, args.steps, device)
    tokens_s = b * t / dt
    mfu = tokens_s * fpt_measured / peak if peak else None
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    print(f"[{variant}] {n_params / 1e6:.1f}M params, batch {b} x {t}: {dt * 1e3:.1f} ms/step, "
          f"{tokens_s:,.0f} tokens/s, {fpt_measured * tokens_s / 1e12:.1f} TFLOP/s measured "
          f"({fpt_measured / fpt:.3f}x the 6N + 12LdT count)"
          + (f", MFU {mfu:.1%} of {peak / 1e12:.0f} TFLOP/s ({peak_src})" if mfu else ", MFU: peak unknown")
          + f" (warm-up {warm_s:.0f} s" + (f", max mem {mem:.1f} GiB)" if mem else ")"))
    if mfu is not None:
        print(f"  goal MFU >= {args.goal:.0%}: {'met' if mfu >= args.goal else 'NOT met'}")
    return {"step_ms": dt * 1e3, "tokens_per_s": tokens_s, "flops_per_token": fpt_measured,
            "flops_per_token_formula": fpt, "params": n_params, "mfu": mfu,
            "mfu_formula": tokens_s * fpt / peak if peak else None, "goal": args.goal,
            "goal_met": None if mfu is None else mfu >= args.goal, "warmup_s": warm_s,
            "loss": float(loss.detach()), "max_mem_gb": mem}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation happens here)")
    p.add_argument("--variants", nargs="+", default=["dense", "task"], choices=["dense", "task"])
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="tiny model on the CPU (checks the script)")
    p.add_argument("--goal", type=float, default=0.45, help="MFU goal (the JSON says whether it is met)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        print("no CUDA device: skipped")
        return {"skipped": "no CUDA device"}

    from transformer_ablations.config import ModelConfig

    if args.dry_run:
        device = torch.device("cpu")
        cfg = ModelConfig(arch="decoder", d_model=64, n_heads=4, n_layers=2, d_ff=256, vocab_size=512,
                          max_len=128, positional="learned", norm="pre", dropout=0.0, segment_embeddings=False)
        args.seq_len, args.batch = min(args.seq_len, 128), min(args.batch, 2)
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        cfg = ModelConfig(arch="decoder", d_model=768, n_heads=12, n_layers=12, d_ff=3072, vocab_size=50304,
                          max_len=args.seq_len, positional="learned", norm="pre", dropout=0.0,
                          segment_embeddings=False)
    print(_common.machine_line())
    b, t = args.batch, args.seq_len
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (b, t), device=device)
    labels = torch.cat([ids[:, 1:], torch.full((b, 1), -100, device=device)], dim=1)
    peak, peak_src = peak_flops(device)
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
                    "batch": b, "seq_len": t, "peak_flops": peak, "peak_source": peak_src, "variants": {}}
    if device.type == "cuda":
        print(check_flash(device, cfg, t))
    for variant in args.variants:
        result["variants"][variant] = run_variant(variant, cfg, ids, labels, args, peak, peak_src)
        _common.write_json(args.json, result)  # after each variant: a stopped run keeps what it measured
        if device.type == "cuda":  # the variant's model, optimizer and graphs are gone: a fresh peak
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
