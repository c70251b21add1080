"""The token-level loss of the LM heads: vocabulary projection + cross-entropy, fused for training on
the CPU (the [N, V] logits are never materialised)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_linear

# --- the token-level loss: vocabulary projection + cross-entropy, fused for training --------------
FUSED_CE_CHUNK_ELEMENTS = 2**21  # logits per chunk and thread of the fused loss (8 MiB in fp32: in L3)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``targets`` over the N predicted tokens
    (0, not NaN, when N = 0): hidden [N, D], weight [V, D], bias [V] or None, targets [N] -> scalar.

    When a gradient is needed (training on the CPU in fp32, no autocast) the [N, V] logits are never
    materialised: :class:`LinearCrossEntropy` walks N in chunks of ``FUSED_CE_CHUNK_ELEMENTS * threads // V`` rows, and
    computes each chunk's loss *and* its gradients (``softmax - onehot``) while the chunk's logits are
    in cache (the fused linear cross-entropy of Liger-Kernel, Hsu et al. 2024,
    https://arxiv.org/abs/2410.10989). Otherwise (evaluation, GPU, autocast) it is the plain
    ``F.cross_entropy(F.linear(...))``. Same value and gradients either way."""
    n = targets.numel()
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    fusable = (  # a CPU optimisation: on a GPU the plain path (or torch.compile's fusion) is the better one
        needs_grad
        and n > 0
        and hidden.device.type == "cpu"
        and hidden.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled(hidden.device.type)
    )
    if not fusable:
        return F.cross_entropy(cpu_linear.linear(hidden, weight, bias), targets, reduction="sum") / max(n, 1)
    # per-thread work per op stays constant: more threads, bigger chunks (fewer parallel regions)
    chunk = max(1, FUSED_CE_CHUNK_ELEMENTS * torch.get_num_threads() // weight.shape[0])
    return _fused_linear_cross_entropy(hidden, weight, bias, targets, chunk)


@torch.compiler.disable  # a data-dependent Python loop: always eager (N varies from batch to batch)
def _fused_linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int
):
    return LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk)


class LinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden_i @ weight.T + bias, targets_i) / N``, its gradients computed in forward, chunk
    by chunk: d loss / d logits = (softmax - onehot) / N =: G / N, so per chunk of rows
    ``grad_hidden = G @ weight``, ``grad_weight += G.T @ hidden``, ``grad_bias += G.sum(0)``; backward
    scales them by the incoming gradient / N. Per chunk the logits buffer becomes G in place: one
    softmax (a fused kernel: max, exp-sum and normalise while a row is in L1), then -1 at the targets;
    the loss is -log softmax(target), or logsumexp - target logit recomputed for a row whose target
    probability underflowed. The three products go through oneDNN where :func:`cpu_linear.uses_onednn`
    says so (:class:`_OneDNNProducts`), else through ATen (:class:`_ATenProducts`, the reference).
    Use :func:`linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int):
        n = hidden.shape[0]
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        products = (_OneDNNProducts if cpu_linear.uses_onednn(hidden, weight) else _ATenProducts)(weight)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_b = torch.zeros_like(bias) if want_b else None
        total = hidden.new_zeros(())
        rows = torch.arange(min(chunk, n), device=hidden.device)
        for i in range(0, n, chunk):
            h, t = hidden[i : i + chunk], targets[i : i + chunk]  # [c, D], [c]
            c = h.shape[0]
            logits = products.logits(h, bias)  # [c, V]
            grad = torch.softmax(logits, dim=-1, out=logits)  # in place: [c, V]
            p_target = grad.gather(1, t[:, None])[:, 0]  # [c]
            loss = p_target.log().neg_()  # [c]
            low = p_target < torch.finfo(grad.dtype).tiny  # underflowed: a target logit ~87+ below the top
            if low.any():
                loss[low] = _cross_entropy_rows(products, h[low], bias, t[low])
            total += loss.sum()
            grad[rows[:c], t] -= 1.0  # softmax - onehot
            if grad_h is not None:
                products.grad_hidden(grad, out=grad_h[i : i + c])  # [c, V] @ [V, D]
            if want_w:
                products.add_grad_weight(grad, h)  # += [V, c] @ [c, D]
            if grad_b is not None:
                grad_b += grad.sum(0)
        grad_w = products.grad_weight() if want_w else None  # [V, D]
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.n = n
        return total / n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        saved, scale = iter(ctx.saved_tensors), grad_out / ctx.n
        grads = [next(saved) * scale if present else None for present in ctx.present]
        return grads[0], grads[1], grads[2], None, None


def _cross_entropy_rows(products: _ATenProducts, h: Tensor, bias: Tensor | None, t: Tensor) -> Tensor:
    """Per-row CE from recomputed logits, logsumexp - target logit: [k, D], [k] -> [k]."""
    logits = products.logits(h, bias)  # [k, V]
    return torch.logsumexp(logits, dim=-1) - logits.gather(1, t[:, None])[:, 0]


class _ATenProducts:
    """The chunk products of :class:`LinearCrossEntropy` through ATen (``mm``/``addmm``): the reference."""

    def __init__(self, weight: Tensor):
        self.weight = weight  # [V, D]
        self.grad_w: Tensor | None = None

    def logits(self, h: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(h, self.weight, bias)  # [c, D] -> [c, V]

    def grad_hidden(self, g: Tensor, out: Tensor) -> None:
        torch.mm(g, self.weight, out=out)  # [c, V] @ [V, D] -> [c, D]

    def add_grad_weight(self, g: Tensor, h: Tensor) -> None:
        if self.grad_w is None:
            self.grad_w = torch.zeros_like(self.weight)
        self.grad_w.addmm_(g.t(), h)  # [V, c] @ [c, D]

    def grad_weight(self) -> Tensor:
        return self.grad_w


class _OneDNNProducts(_ATenProducts):
    """The same products through oneDNN (``cpu_linear.mm_nt(a, b) = a @ b.T``), for the CPU. The weight
    gradient is accumulated transposed, [D, V] += h.T @ g, so that oneDNN's row-major first operand is
    the small h.T [D, c] and g is read in place; it is returned as a [V, D] view."""

    def __init__(self, weight: Tensor):
        super().__init__(weight)
        self.weight_t: Tensor | None = None  # [D, V] contiguous, made on first use

    def logits(self, h: Tensor, bias: Tensor | None) -> Tensor:
        return cpu_linear.mm_nt(h, self.weight, bias)  # [c, D] @ [D, V] -> [c, V]

    def grad_hidden(self, g: Tensor, out: Tensor) -> None:
        if self.weight_t is None:
            self.weight_t = self.weight.t().contiguous()  # [V, D] -> [D, V]
        out.copy_(cpu_linear.mm_nt(g, self.weight_t))  # [c, V] @ [V, D] -> [c, D]

    def add_grad_weight(self, g: Tensor, h: Tensor) -> None:
        product = cpu_linear.mm_nt(h.t(), g.t())  # [D, c] @ [c, V] -> [D, V]
        self.grad_w = product if self.grad_w is None else self.grad_w.add_(product)

    def grad_weight(self) -> Tensor:
        return self.grad_w.t()  # [D, V] -> [V, D] (a view)
