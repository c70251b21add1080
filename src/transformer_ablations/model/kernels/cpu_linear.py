"""``F.linear`` on the CPU through oneDNN instead of ATen's BLAS call: the same fp32 maths.

Why: ATen's fp32 ``mm``/``addmm`` on the CPU call MKL's sgemm, and MKL picks its kernels by CPU
*vendor*: on AMD CPUs it runs its AVX2 code even where the CPU has AVX-512. oneDNN (shipped inside
PyTorch, ``torch.ops.mkldnn._linear_pointwise``, what inductor emits for CPU linears) picks kernels by
instruction set. On the AMD EPYC (Zen 5) the benchmarks were run on, one core does ~105 GFLOPS through
MKL and ~230 GFLOPS through oneDNN for the model's matrix shapes (benchmarks/README.md). On Intel CPUs
MKL already runs AVX-512, so there ATen's call is kept.

:func:`linear` is the drop-in ``F.linear(x, weight, bias)``: oneDNN for fp32 CPU tensors outside
autocast and ``torch.compile`` (inductor chooses its own kernels) when :data:`ENABLED`, else
``F.linear``. ``ENABLED`` defaults to True on x86-64 AMD CPUs with oneDNN in the PyTorch build;
``ABLATE_ONEDNN_LINEAR=1`` / ``=0`` in the environment forces it on / off. Full fp32 precision
(oneDNN's default "strict" fp math mode: no bf16/tf32 down-conversion). The results equal ``F.linear``'s
up to fp32 rounding (another summation order) and are deterministic for fixed shapes and threads, so
a run is reproducible on a machine; the two backends differ in the last bits.

Backward, with x [M, K], weight [N, K], g = dL/dy [M, N] and :func:`mm_nt` (a, b) = a @ b.T:
``grad_x = g @ weight = mm_nt(g, weight.T)`` (weight.T is read strided);
``grad_weight = g.T @ x = mm_nt(g.T, x.T)``: the contraction runs over M, the leading dim of both, and
oneDNN wants its first operand row-major, so the smaller of g and x is copied transposed
(:func:`weight_grad`); ``grad_bias = g.sum(0)``, or a row of ones in that copy.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def available() -> bool:
    """Whether this PyTorch build has oneDNN's linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_enabled() -> bool:
    """``ABLATE_ONEDNN_LINEAR`` if set, else: an x86-64 AMD CPU (where MKL runs AVX2 kernels)."""
    forced = os.environ.get("ABLATE_ONEDNN_LINEAR")
    if forced is not None:
        return forced != "0"
    return platform.machine().lower() in ("x86_64", "amd64") and _cpu_vendor() == "AuthenticAMD"


_AVAILABLE = available()
ENABLED = _AVAILABLE and default_enabled()  # read on every call: tests and benchmarks may flip it


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`linear` takes the oneDNN path for these operands."""
    return (
        ENABLED
        and _AVAILABLE
        and x.device.type == "cpu"
        and x.dim() >= 2
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and x.numel() > 0
    )


def mm_nt(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)`` through oneDNN: a [M, K] (made contiguous), b [N, K] (any strides) -> [M, N]."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def weight_grad(g: Tensor, x: Tensor, with_bias: bool = False) -> tuple[Tensor, Tensor | None]:
    """``(g.T @ x, g.sum(0) if with_bias)`` through oneDNN: g [M, N], x [M, K] -> [N, K], [N]. The
    contraction runs over M, the leading dim of both, so one operand is transposed into a contiguous copy:
    the smaller one. When that is x, the copy gets an extra row of ones and the bias gradient
    ``g.T @ 1`` comes out of the same product (an [M, N] pass saved)."""
    m, n, k = g.shape[0], g.shape[1], x.shape[1]
    if n <= k:
        grad_w = mm_nt(g.t(), x.t())  # [N, M] (copied) @ [M, K]
        return grad_w, g.sum(0) if with_bias else None
    xt = x.new_empty(k + with_bias, m)  # [K (+1), M]
    xt[:k].copy_(x.t())
    if with_bias:
        xt[k].fill_(1.0)
    product = mm_nt(xt, g.t())  # [K (+1), M] @ [M, N] -> [K (+1), N]
    return product[:k].t().contiguous(), product[k].clone() if with_bias else None


class OneDNNLinear(torch.autograd.Function):
    """``F.linear`` whose forward and backward products run in oneDNN. Use :func:`linear`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return mm_nt(x, weight, bias)  # [..., K] -> [..., N]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])  # [..., N] -> [M, N]
        want_x, want_w = ctx.needs_input_grad[:2]
        want_b = ctx.has_bias and ctx.needs_input_grad[2]
        grad_x = grad_w = grad_b = None
        if want_x:
            grad_x = mm_nt(g, weight.t()).view(x.shape)  # [M, N] @ [N, K] -> [..., K]
        if want_w:
            grad_w, grad_b = weight_grad(g, x.reshape(-1, x.shape[-1]), want_b)  # [N, K], [N]
        elif want_b:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: x [..., K], weight [N, K], bias [N] -> [..., N]; through oneDNN where
    :func:`uses_onednn` (see the module docstring)."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    return OneDNNLinear.apply(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, init and state dict) whose product goes through :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
