"""Q4's speed and memory evidence: one training step (forward + backward) of one self-attention layer
per attention implementation and sequence length.

Implementations (``kind``): ``dot_sdpa`` (the fast path, ``F.scaled_dot_product_attention``),
``dot_reference`` (``softmax(q k^T * scale + bias) v`` with the probabilities materialised) and
``additive`` (Bahdanau ``v_a . tanh(W_q q + W_k k)``, the package's chunked, recomputing kernel). The
layer is the model's own :class:`~transformer_ablations.model.attention.SelfAttention` (fused QKV
projection, attention, output projection), bidirectional, no padding, fp32, ``n_heads`` heads of
``d_k``, input [batch, T, n_heads * d_k] that requires grad (as inside a network).

``--device cuda`` runs it on a GPU (the default when one exists); ``--compile`` wraps each layer in
``torch.compile`` (inductor; ``--compile aot_eager`` for a quick check without code generation), one
graph per kind and T (``dynamic=False``), compiled in an extra untimed warm-up step. ``dot_compiled`` and
``additive_compiled`` are always compiled (inductor): the two mechanisms on the same footing, additive as
its dense formula (the eager chunked kernel is not traced). ``--d-k`` takes several values; every row
carries the step's analytic ``flops`` (:func:`step_flops`) so time ratios read against FLOP ratios.

- ``time_ms``: wall time of one step, a median-free raw figure per ``repeat`` (the report aggregates
  repeats). Implementations alternate within each repeat (who goes first rotates) so load from other
  processes hits all of them alike; fast steps are repeated until a timed block lasts ``min_time_s``
  and divided.
- ``peak_mem_mb``: peak memory the step allocates beyond what exists before it (parameters, input,
  upstream gradient): activations kept for backward, transient buffers, gradients. On CUDA
  ``torch.cuda.max_memory_allocated`` minus the allocation before the step. On CPU, where PyTorch has
  no allocator statistics, the step runs once (untimed) under ``torch.profiler`` with
  ``profile_memory=True``; every allocation and free of PyTorch's CPU allocator is recorded with the
  allocator's running total ("Total Allocated"), and the figure is that total's maximum minus its value
  before the step's first allocation. This counts everything the allocator hands out, transient
  buffers inside kernels included (not memory that MKL/oneDNN allocate on their own, a few MB of GEMM
  packing at most). The same figure is repeated in each repeat's row (it is deterministic).

    python -m transformer_ablations.bench.attention_cost --out runs/quick/q4_attention_cost.json

writes ``{"rows": [{"kind", "T", "d_k", "repeat", "time_ms", "peak_mem_mb"}, ...], "meta": {...}}``
and a PNG next to it (time and memory vs T, log-log).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..config import AttentionConfig, ModelConfig
from ..model.attention import AttentionContext, SelfAttention

KINDS: dict[str, tuple[str, str]] = {  # kind -> (model.attention.kind, model.attention.impl)
    "dot_sdpa": ("dot", "sdpa"),
    "dot_reference": ("dot", "reference"),
    "additive": ("additive", "sdpa"),
    # the two mechanisms under torch.compile (issue 15: both kinds on the same footing, eager and compiled):
    # dot as softmax(q k^T) v, additive as its dense formula (model.attention.additive_attention_dense)
    "dot_compiled": ("dot", "reference"),
    "additive_compiled": ("additive", "sdpa"),
}
COMPILED_KINDS = ("dot_compiled", "additive_compiled")
DEFAULT_KINDS = ("dot_sdpa", "dot_reference", "additive", "dot_compiled", "additive_compiled")
DEFAULT_LENGTHS = (64, 128, 256)  # the quick suite's budget; GPUs and `make bench` pass longer ones
DEFAULT_D_K = (16, 64)
MEMORY_METHOD = {
    "cpu": "torch.profiler(profile_memory=True): max of the CPU allocator's running total minus its value before the step",
    "cuda": "torch.cuda.max_memory_allocated() minus memory_allocated() before the step",
}


def layer_step(
    kind: str,
    t: int,
    d_k: int = 64,
    n_heads: int = 4,
    batch: int = 2,
    device: torch.device | str = "cpu",
    causal: bool = False,
    seed: int = 0,
    compile: str | Callable | None = None,
) -> Callable[[], None]:
    """A zero-argument function running one forward + backward of one self-attention layer
    (``compile``: a ``torch.compile`` backend, e.g. ``inductor``; None: eager)."""
    device = torch.device(device)
    score_kind, impl = KINDS[kind]
    cfg = ModelConfig(
        d_model=n_heads * d_k,
        n_heads=n_heads,
        head_dim=d_k,
        dropout=0.0,
        max_len=max(t, 1),
        vocab_size=1,
        attention=AttentionConfig(kind=score_kind, impl=impl),
    )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = SelfAttention(cfg).to(device).train()
    if compile is None and kind in COMPILED_KINDS:
        compile = "inductor"
    forward = layer if compile is None else torch.compile(layer, backend=compile, dynamic=False)
    x = torch.randn(batch, t, cfg.d_model, generator=gen).to(device).requires_grad_()
    grad_out = torch.randn(batch, t, cfg.d_model, generator=gen).to(device)
    ctx = AttentionContext.build(None, None, None, t, device, causal=causal)

    def step() -> None:
        y, _ = forward(x, ctx)
        y.backward(grad_out)
        x.grad = None
        for p in layer.parameters():
            p.grad = None

    return step


def peak_memory_mb(step: Callable[[], None], device: torch.device | str) -> float:
    """Peak memory (MiB) one call of ``step`` allocates beyond what is live before it (see module doc)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return _cpu_peak_memory_mb(step)


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines on fd 2; keep them out of the table."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_memory_mb(step: Callable[[], None]) -> float:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        events = json.loads(Path(path).read_text())["traceEvents"]
    finally:
        os.unlink(path)
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0),
        key=lambda e: e["ts"],
    )
    if not memory:
        return float("nan")
    first = memory[0]["args"]
    before = first["Total Allocated"] - first["Bytes"]  # live before the step's first allocation
    return (max(e["args"]["Total Allocated"] for e in memory) - before) / 2**20


def _allow_recompiles(n: int) -> None:
    """One graph per layer (kind x T) of the same ``forward``: more than dynamo's default limit of 8
    per code object, past which it would quietly run the rest eager."""
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), n))


def _warm_up(step: Callable[[], None], sync: Callable[[], None], min_time_s: float, compiled: bool) -> int:
    """Run ``step`` untimed (allocator, kernels, caches; a compiled one first compiles) -> how many calls
    make a timed block of at least ``min_time_s``."""
    if compiled:
        step()  # compiles; the next call sizes the timed blocks
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    return max(1, min(1000, math.ceil(min_time_s / max(time.perf_counter() - t0, 1e-6))))


def measure(
    kinds: Sequence[str] = DEFAULT_KINDS,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    d_k: int | Sequence[int] = 64,
    n_heads: int = 4,
    batch: int = 2,
    repeats: int = 3,
    device: str | torch.device | None = None,
    causal: bool = False,
    min_time_s: float = 0.05,
    progress: Callable[[str], None] | None = None,
    compile: str | Callable | None = None,
) -> list[dict]:
    """-> rows ``{"kind", "T", "d_k", "repeat", "time_ms", "peak_mem_mb", "flops"}``, one per kind x d_k x T x
    repeat (``d_k``: one value or several)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown attention kind {kind!r}; valid: {', '.join(KINDS)}")
    rows: list[dict] = []
    for dk in _d_ks(d_k):
        rows += _measure_dk(kinds, lengths, dk, n_heads, batch, repeats, device, causal, min_time_s, progress, compile)
    return rows


def _d_ks(d_k: int | Sequence[int]) -> list[int]:
    return [d_k] if isinstance(d_k, int) else list(d_k)


def compile_only(
    kinds: Sequence[str] = DEFAULT_KINDS,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    d_k: int | Sequence[int] = 64,
    n_heads: int = 4,
    batch: int = 2,
    device: str | torch.device | None = None,
    causal: bool = False,
    compile: str | Callable | None = None,
) -> int:
    """Compile every compiled kind's layer (every kind's, with ``compile``) at each d_k and T, forward
    and backward, and time nothing -> how many layers were compiled (the arguments are
    :func:`measure`'s). Inductor keeps what it compiled on disk, so a later :func:`measure` in another
    process starts warm: ``make quick`` runs this at the lowest CPU priority beside the sweeps, in the
    cycles their workers leave idle."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    compiled = [k for k in kinds if compile is not None or k in COMPILED_KINDS]
    _allow_recompiles(8 * len(kinds) * len(lengths))
    n = 0
    for dk in _d_ks(d_k):
        for t in lengths:
            for kind in compiled:
                step = layer_step(kind, t, dk, n_heads, batch, device, causal, compile=compile)
                step()
                n += 1
    return n


def _measure_dk(kinds, lengths, d_k, n_heads, batch, repeats, device, causal, min_time_s, progress, compile) -> list[dict]:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if compile is not None or any(k in COMPILED_KINDS for k in kinds):
        _allow_recompiles(8 * len(kinds) * len(lengths))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rows: list[dict] = []
    for t in lengths:
        steps = {k: layer_step(k, t, d_k, n_heads, batch, device, causal, compile=compile) for k in kinds}
        calls, memory = {}, {}
        for kind, step in steps.items():
            calls[kind] = _warm_up(step, sync, min_time_s, compiled=compile is not None or kind in COMPILED_KINDS)
            memory[kind] = peak_memory_mb(step, device)
        per_kind: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(repeats):
            order = list(kinds[r % len(kinds) :]) + list(kinds[: r % len(kinds)])
            for kind in order:
                sync()
                t0 = time.perf_counter()
                for _ in range(calls[kind]):
                    steps[kind]()
                sync()
                per_kind[kind].append((time.perf_counter() - t0) / calls[kind] * 1e3)
        for kind in kinds:
            for r, ms in enumerate(per_kind[kind]):
                rows.append(
                    {
                        "kind": kind,
                        "T": int(t),
                        "d_k": int(d_k),
                        "repeat": r,
                        "time_ms": round(ms, 4),
                        "peak_mem_mb": round(memory[kind], 3),
                        "flops": step_flops(kind, t, d_k, n_heads, batch),
                    }
                )
            if progress:
                progress(
                    f"d_k={d_k:4d} T={t:5d} {kind:17s} {statistics.median(per_kind[kind]):10.2f} ms {memory[kind]:9.1f} MiB"
                )
        del steps
    return rows


def step_flops(kind: str, t: int, d_k: int, n_heads: int, batch: int) -> float:
    """Analytic FLOPs of one forward + backward step of the layer (backward = 2 x forward; one FLOP per
    elementwise op, tanh included; a multiply-add is 2). torch's FlopCounterMode counts only matrix
    products, which would leave out additive attention's add and tanh per (query, key, channel).

    Shared: the QKV and output projections (2 B T D 4Hd), the softmax (~5 B H T^2) and probs @ v
    (2 B H T^2 d). Dot: q k^T, 2 B H T^2 d. Additive: W_q q and W_k k (2 x 2 B H T d^2), then per
    (query, key): q_i + k_j, tanh and v_a . tanh (1 + 1 + 2 per channel: 4 B H T^2 d)."""
    d_model = n_heads * d_k
    shared = 2 * batch * t * d_model * 4 * n_heads * d_k + 5 * batch * n_heads * t * t + 2 * batch * n_heads * t * t * d_k
    if KINDS[kind][0] == "dot":
        score = 2 * batch * n_heads * t * t * d_k
    else:
        score = 4 * batch * n_heads * t * d_k * d_k + 4 * batch * n_heads * t * t * d_k
    return 3.0 * (shared + score)


# --- summaries ---------------------------------------------------------------------------------------
def _label(r: dict, several_dk: bool) -> str:
    return f"{r['kind']}@{r['d_k']}" if several_dk else r["kind"]


def summarize(rows: list[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """(kind, T) -> median time_ms, peak_mem_mb and flops over repeats; with several d_k the kind
    is labelled ``kind@d_k``."""
    several = len({r["d_k"] for r in rows}) > 1
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((_label(r, several), r["T"]), []).append(r)
    return {
        key: {m: statistics.median(x.get(m, math.nan) for x in g) for m in ("time_ms", "peak_mem_mb", "flops")}
        for key, g in groups.items()
    }


RATIOS = (("additive", "dot_sdpa"), ("additive", "dot_reference"), ("additive_compiled", "dot_compiled"))


def table(rows: list[dict]) -> str:
    """Medians per kind and T, with additive / dot ratios of time, memory and FLOPs side by side (a time
    ratio well above the FLOP ratio is the kernel's doing, not the mechanism's)."""
    s = summarize(rows)
    kinds = list(dict.fromkeys(k for k, _ in s))
    lengths = sorted({r["T"] for r in rows})
    suffixes = sorted({k.partition("@")[2] for k in kinds}, key=lambda x: int(x or 0))
    ratio_cols = [(a + (f"@{x}" if x else ""), b + (f"@{x}" if x else "")) for x in suffixes for a, b in RATIOS]
    ratio_cols = [(a, b) for a, b in ratio_cols if a in kinds and b in kinds]
    head = ["T"] + [f"{k} ms" for k in kinds] + [f"{k} MiB" for k in kinds]
    for what in ("time", "mem", "flops"):
        head += [f"{a}/{b} {what}" for a, b in ratio_cols]
    lines = []
    for t in lengths:
        cell = lambda k, m, t=t: s.get((k, t), {}).get(m, math.nan)
        row = [str(t)] + [f"{cell(k, 'time_ms'):.2f}" for k in kinds] + [f"{cell(k, 'peak_mem_mb'):.2f}" for k in kinds]
        for m, fmt in (("time_ms", "{:.1f}x"), ("peak_mem_mb", "{:.2f}x"), ("flops", "{:.2f}x")):
            row += [fmt.format(cell(a, m) / cell(b, m)) for a, b in ratio_cols]
        lines.append(row)
    widths = [max(len(head[i]), *(len(r[i]) for r in lines)) for i in range(len(head))]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in lines]
    return "\n".join(out)


def figure(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Time and peak memory vs T per kind (medians over repeats), log-log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(rows)
    kinds = list(dict.fromkeys(k for k, _ in s))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for metric, ax, label in (
        ("time_ms", axes[0], "forward + backward time (ms)"),
        ("peak_mem_mb", axes[1], "peak training memory (MiB)"),
    ):
        for kind in kinds:
            ts = sorted(t for k, t in s if k == kind)
            ax.plot(ts, [s[(kind, t)][metric] for t in ts], marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_json(rows: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"rows": rows, "meta": meta or {}}, indent=1))
    os.replace(tmp, path)
    return path


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m transformer_ablations.bench.attention_cost",
        description="Time and peak training memory of one attention layer vs T (Q4).",
    )
    p.add_argument("--out", type=Path, default=Path("runs/quick/q4_attention_cost.json"), help="JSON path")
    p.add_argument("--figure", type=Path, default=None, help="PNG path (default: next to --out)")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=list(KINDS))
    p.add_argument("--lengths", type=_ints, default=list(DEFAULT_LENGTHS), help="e.g. '64,128,256'")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--d-k", type=_ints, default=list(DEFAULT_D_K), help="one or several, e.g. '16,64'")
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--causal", action="store_true", help="causal self-attention instead of bidirectional")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile each layer (default backend inductor; aot_eager: no code generation)")
    p.add_argument("--min-time-s", type=float, default=0.05, help="shortest timed block (fast steps repeat)")
    p.add_argument("--compile-only", action="store_true",
                   help="only compile the compiled kinds (inductor's disk cache), time and write nothing")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    say = None if args.quiet else (lambda line: print(line, flush=True))
    if args.compile_only:
        n = compile_only(args.kinds, args.lengths, args.d_k, args.n_heads, args.batch, device, args.causal, args.compile)
        if say:
            say(f"compiled {n} layer(s) in {time.perf_counter() - started:.1f} s; nothing timed or written")
        return []
    rows = measure(
        args.kinds, args.lengths, args.d_k, args.n_heads, args.batch, args.repeats, device,
        args.causal, args.min_time_s, progress=say, compile=args.compile,
    )  # fmt: skip
    meta = {
        "what": "one self-attention layer (QKV projection, attention, output projection), forward + backward, fp32",
        "compile": args.compile,
        "n_heads": args.n_heads,
        "batch": args.batch,
        "causal": args.causal,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "time": "wall clock per step, implementations alternating within each repeat",
        "memory_method": MEMORY_METHOD["cuda" if device.type == "cuda" else "cpu"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(rows, args.out, meta)
    if not args.quiet:
        print(table(rows))
        print(f"wrote {args.out} ({len(rows)} rows, {meta['seconds']} s)")
    if not args.no_figure:
        title = (
            f"one attention layer fwd+bwd, d_k={args.d_k}, {args.n_heads} heads, batch {args.batch}, "
            f"{meta['device']}, torch {torch.__version__}" + (f", compiled ({args.compile})" if args.compile else "")
        )
        png = figure(rows, args.figure or args.out.with_suffix(".png"), title)
        if not args.quiet:
            print(f"wrote {png}")
    return rows


if __name__ == "__main__":
    main()
