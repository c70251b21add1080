"""Additive (Bahdanau) attention kernels for the CPU and GPU: queries in chunks, tanh in its sigmoid
form, recomputed in backward instead of stored, so peak memory is bounded whatever T is.

Same maths as the readable path of ``model.attention.AdditiveAttention`` (the tests compare them).
"""

from __future__ import annotations

import torch
from torch import Tensor

Scale = float | Tensor  # a python float, or a per-head tensor [H, 1, 1]

# --- additive attention kernels: chunks of queries, tanh recomputed in backward ----------------------
ADDITIVE_CHUNK_ELEMENTS = 2**20  # cap on the [B, H, c, Tk, d] tanh buffer per CPU thread (4 MiB in fp32)
ADDITIVE_CHUNK_ELEMENTS_GPU = 2**26  # the same cap on a GPU (256 MiB in fp32)


def queries_per_chunk(q: Tensor, k: Tensor, chunk_size: int) -> int:
    """``chunk_size``, fewer if the [B, H, c, Tk, d] buffer would pass ADDITIVE_CHUNK_ELEMENTS per CPU
    thread (cache-sized pieces), or ADDITIVE_CHUNK_ELEMENTS_GPU on an accelerator (fewer launches)."""
    b, h, _, d = q.shape
    if q.device.type == "cpu":
        budget = ADDITIVE_CHUNK_ELEMENTS * torch.get_num_threads()
    else:
        budget = ADDITIVE_CHUNK_ELEMENTS_GPU
    return max(1, min(chunk_size, budget // (b * h * k.shape[2] * d)))


# tanh(x) = 2 sigmoid(2x) - 1, and ATen's fp32 sigmoid is ~10x faster than its tanh on CPU; so the
# chunk buffer holds sigmoid(2 (q_i + k_j)) and the affine part is folded into v_a:
#   score = v_a . tanh = 2 (v_a . sigmoid) - sum(v_a),   d tanh / d x = 4 sigmoid (1 - sigmoid).
def _sigmoid_chunk(q2: Tensor, k2: Tensor, buffer: Tensor) -> Tensor:
    """sigmoid(q2_i + k2_j) into ``buffer``: q2 = 2q [B, H, c, d], k2 = 2k [B, H, Tk, d] -> [B, H, c, Tk, d]."""
    b, h, c, d = q2.shape
    hidden = buffer[: b * h * c * k2.shape[2] * d].view(b, h, c, k2.shape[2], d)
    torch.add(q2[:, :, :, None, :], k2[:, :, None, :, :], out=hidden)
    return hidden.sigmoid_()


def _score_chunk(hidden: Tensor, v_a: Tensor) -> Tensor:
    """v_a . tanh(q_i + k_j) per head from hidden = sigmoid(2 (q_i + k_j)): [B, H, c, Tk, d] -> [B, H, c, Tk]."""
    b, h, c, tk, d = hidden.shape
    score = torch.matmul(hidden.view(b, h, c * tk, d), 2.0 * v_a[:, :, None]).view(b, h, c, tk)
    return score.sub_(v_a.sum(-1)[:, None, None])


def _score_chunk_backward(
    hidden: Tensor, grad: Tensor, v_a: Tensor, grad_q: Tensor, grad_k: Tensor, grad_v_a: Tensor
) -> None:
    """Given hidden = sigmoid(2 (q_i + k_j)) [B, H, c, Tk, d] (overwritten) and grad = dL/dscore
    [B, H, c, Tk]: write dL/dq of the chunk into grad_q [B, H, c, d], add dL/dk into grad_k [B, H, Tk, d]
    and dL/dv_a (per batch row) into grad_v_a [B, H, d]."""
    b, h, c, tk, d = hidden.shape
    flat_grad = grad.reshape(b, h, 1, c * tk)
    # dL/dv_a = sum grad * tanh = 2 sum grad * sigmoid - sum grad
    grad_v_a += torch.matmul(flat_grad, hidden.view(b, h, c * tk, d)).view(b, h, d).mul_(2.0)
    grad_v_a -= flat_grad.sum(-1)
    d_pre = hidden.addcmul_(hidden, hidden, value=-1.0).mul_(grad[..., None])  # grad sigmoid (1 - sigmoid)
    v_a = 4.0 * v_a[None, :, None, :]  # [1, H, 1, d]; d tanh = 4 sigmoid (1 - sigmoid)
    grad_q.copy_(d_pre.sum(3) * v_a)  # sum over keys
    grad_k += d_pre.sum(2) * v_a  # sum over the chunk's queries


def _bias_rows(bias: Tensor, i: int, c: int) -> Tensor:
    return bias[:, :, i : i + c] if bias.shape[2] > 1 else bias  # [., ., Tq|1, Tk]


@torch.compiler.disable  # Python loops over chunks: always eager
def additive_score(q: Tensor, k: Tensor, v_a: Tensor, chunk_size: int) -> Tensor:
    """Scores v_a . tanh(q_i + k_j): q [B, H, Tq, d], k [B, H, Tk, d], v_a [H, d] -> [B, H, Tq, Tk]."""
    return AdditiveScoreFunction.apply(q, k, v_a, queries_per_chunk(q, k, chunk_size))


@torch.compiler.disable
def additive_attention(
    q: Tensor, k: Tensor, v: Tensor, v_a: Tensor, scale: Scale, bias: Tensor, chunk_size: int
) -> Tensor:
    """softmax(score(q, k) * scale + bias) v with score = v_a . tanh(q_i + k_j) -> [B, H, Tq, d_v]."""
    return AdditiveAttentionFunction.apply(q, k, v, v_a, scale, bias, queries_per_chunk(q, k, chunk_size))


class AdditiveScoreFunction(torch.autograd.Function):
    """The [B, H, Tq, Tk] additive scores, chunk by chunk; saves q, k, v_a and recomputes tanh in backward."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v_a: Tensor, chunk: int) -> Tensor:
        b, h, tq, d = q.shape
        buffer = q.new_empty(b * h * min(chunk, tq) * k.shape[2] * d)
        scores = q.new_empty(b, h, tq, k.shape[2])
        q2, k2 = 2.0 * q, 2.0 * k
        for i in range(0, tq, chunk):
            scores[:, :, i : i + chunk] = _score_chunk(
                _sigmoid_chunk(q2[:, :, i : i + chunk], k2, buffer), v_a
            )
        ctx.save_for_backward(q, k, v_a)
        ctx.chunk = chunk
        return scores

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_scores: Tensor):
        q, k, v_a = ctx.saved_tensors
        b, h, tq, d = q.shape
        chunk = ctx.chunk
        buffer = q.new_empty(b * h * min(chunk, tq) * k.shape[2] * d)
        grad_q, grad_k = torch.empty_like(q), torch.zeros_like(k)
        grad_v_a = q.new_zeros(b, h, d)
        q2, k2 = 2.0 * q, 2.0 * k
        for i in range(0, tq, chunk):
            hidden = _sigmoid_chunk(q2[:, :, i : i + chunk], k2, buffer)
            g = grad_scores[:, :, i : i + chunk]
            _score_chunk_backward(hidden, g, v_a, grad_q[:, :, i : i + chunk], grad_k, grad_v_a)
        return grad_q, grad_k, grad_v_a.sum(0), None


class AdditiveAttentionFunction(torch.autograd.Function):
    """Additive attention without the [B, H, Tq, Tk] probabilities: per chunk of queries, scores ->
    softmax (row log-sum-exp kept) -> @ v. Backward recomputes each chunk's tanh and probabilities
    (FlashAttention's backward: dS = P * (dP - rowsum(dO * O))). fp32 inside (autocast off)."""

    @staticmethod
    def forward(ctx, q, k, v, v_a, scale, bias, chunk):
        if bias.requires_grad:
            raise ValueError("additive attention: the attention bias must not require grad")
        dtype = v.dtype
        with torch.autocast(q.device.type, enabled=False):
            q, k, v, v_a, bias = q.float(), k.float(), v.float(), v_a.float(), bias.float()
            scale_t = scale.float() if isinstance(scale, Tensor) else None
            b, h, tq, d = q.shape
            buffer = q.new_empty(b * h * min(chunk, tq) * k.shape[2] * d)
            out = q.new_empty(b, h, tq, v.shape[-1])
            lse = q.new_empty(b, h, tq, 1)
            q2, k2 = 2.0 * q, 2.0 * k
            for i in range(0, tq, chunk):
                s = _score_chunk(_sigmoid_chunk(q2[:, :, i : i + chunk], k2, buffer), v_a)  # [B, H, c, Tk]
                logits = s * (scale if scale_t is None else scale_t) + _bias_rows(bias, i, chunk)
                lse_c = torch.logsumexp(logits, dim=-1, keepdim=True)  # [B, H, c, 1]
                out[:, :, i : i + chunk] = logits.sub_(lse_c).exp_() @ v
                lse[:, :, i : i + chunk] = lse_c
        ctx.save_for_backward(q, k, v, v_a, bias, out, lse, *(() if scale_t is None else (scale_t,)))
        ctx.scale = scale if scale_t is None else None
        ctx.chunk = chunk
        return out.to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, v_a, bias, out, lse, *rest = ctx.saved_tensors
        scale = rest[0] if rest else ctx.scale
        chunk = ctx.chunk
        grad_out = grad_out.float()
        b, h, tq, d = q.shape
        buffer = q.new_empty(b * h * min(chunk, tq) * k.shape[2] * d)
        row_dot = (grad_out * out).sum(-1, keepdim=True)  # rowsum(dO * O): [B, H, Tq, 1]
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        grad_v_a = q.new_zeros(b, h, d)
        grad_scale = torch.zeros_like(scale) if rest and ctx.needs_input_grad[4] else None
        q2, k2 = 2.0 * q, 2.0 * k
        for i in range(0, tq, chunk):
            rows = slice(i, i + chunk)
            hidden = _sigmoid_chunk(q2[:, :, rows], k2, buffer)
            s = _score_chunk(hidden, v_a)  # [B, H, c, Tk]
            p = (s * scale + _bias_rows(bias, i, chunk)).sub_(lse[:, :, rows]).exp_()  # probabilities
            g_out = grad_out[:, :, rows]  # [B, H, c, d_v]
            grad_v += p.transpose(-1, -2) @ g_out
            d_logits = p.mul_((g_out @ v.transpose(-1, -2)).sub_(row_dot[:, :, rows]))  # dS, in place
            if grad_scale is not None:
                grad_scale += (d_logits * s).sum_to_size(grad_scale.shape)
            _score_chunk_backward(hidden, d_logits.mul_(scale), v_a, grad_q[:, :, rows], grad_k, grad_v_a)
        return grad_q, grad_k, grad_v, grad_v_a.sum(0), grad_scale, None, None


def additive_attention_dense(q: Tensor, k: Tensor, v: Tensor, v_a: Tensor, scale, bias: Tensor) -> Tensor:
    """softmax(v_a . tanh(q_i + k_j) * scale + bias) v written as one expression (a [B, H, Tq, Tk, d]
    tanh tensor): the form ``torch.compile`` fuses into a reduction kernel. Eager code uses
    :func:`additive_attention` instead, which never holds that tensor (issue 15: the compiled path)."""
    hidden = torch.tanh(q[:, :, :, None, :] + k[:, :, None, :, :])  # [B, H, Tq, Tk, d]
    score = (hidden * v_a[None, :, None, None, :]).sum(-1)  # [B, H, Tq, Tk]
    return (score * scale + bias).softmax(-1) @ v
