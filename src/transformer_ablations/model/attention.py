"""Multi-head attention: two score kinds (dot, additive) x five logit scalings.

Every layer computes ``softmax(score(q, k) * scale + bias) v`` per head, where

- ``score`` is the *kind*: dot product ``q . k`` or Bahdanau's additive ``v_a . tanh(W_q q + W_k k)``;
- ``scale`` is the *scaling*: a fixed ``d_k**-x``, or a learned per-head temperature;
- ``bias`` is one additive tensor built once per forward (:class:`AttentionContext`): ``-inf``
  where a key may not be attended (padding, causal, prefix-LM) plus ALiBi's distance penalty.
  The SDPA fast path gets the cheapest equivalent instead (``AttentionContext.sdpa_mask`` /
  ``is_causal``): no mask, ``is_causal=True``, or a boolean mask, and the float bias only with
  ALiBi, so fused (flash) kernels stay eligible.

Shapes: ``B`` batch, ``H`` heads, ``Tq``/``Tk`` query/key lengths, ``D`` d_model, ``d`` head_dim (d_k).
``head_dim`` is independent of ``D / H``: projections go ``D -> H*d`` and the output ``H*d -> D``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from .kernels.additive import additive_attention, additive_attention_dense, additive_score
from .kernels.cpu_linear import Linear

Scale = float | Tensor  # a python float, or a per-head tensor [H, 1, 1]


# --- what every layer of one forward shares ----------------------------------------------
@dataclass
class AttentionContext:
    """Masks, bias and rotary tables of one forward pass, shared by every layer that attends
    the same (queries, keys) pair. Build it with :meth:`build`."""

    # shapes are [B, ...] or broadcastable to it
    allowed: Tensor  # [B, 1, Tq, Tk] bool: True = the query may attend the key
    query_valid: Tensor  # [B, Tq] bool: real queries, the rows attention stats average over
    bias: Tensor  # [B, 1|H, Tq, Tk] float added to the scaled scores: -inf where not allowed, + ALiBi
    rope: tuple[Tensor, Tensor] | None = None  # (cos, sin) [Tq, d/2] when rotary positions are used
    # what the SDPA fast path is given instead of ``bias`` (same maths, cheapest form):
    sdpa_mask: Tensor | None = None  # None (every key), ``allowed`` (bool), or ``bias`` (ALiBi, float)
    is_causal: bool = False  # SDPA's is_causal: a plain causal mask with no padding and no ALiBi

    @classmethod
    def build(
        cls,
        key_mask: Tensor | None,  # [B, Tk] bool, True = real key (None: all real)
        query_mask: Tensor | None,  # [B, Tq] bool, True = real query (None: all real)
        structure: Tensor | None,  # [1|B, 1, Tq, Tk] bool: causal / prefix-LM pattern (None: all pairs)
        tk: int,
        device: torch.device,
        position_bias: Tensor | None = None,  # [1, H, Tq, Tk] ALiBi
        rope: tuple[Tensor, Tensor] | None = None,
        causal: bool = False,  # self-attention with the causal pattern (``structure`` is built here)
    ) -> AttentionContext:
        """Tensors keep their smallest broadcastable shape (an unmasked encoder's mask is [1, 1, 1, Tk])."""
        if causal:
            structure = causal_structure(tk, device)
        if key_mask is not None and _all_true(key_mask):
            key_mask = None  # nothing is padded: no [B, ...] mask at all (SDPA may then run mask-free)
        allowed = torch.ones(1, 1, 1, tk, dtype=torch.bool, device=device)
        if structure is not None:
            allowed = allowed & structure  # -> [1|B, 1, Tq, Tk]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]  # [B, Tk] -> [B, 1, 1, Tk]
            # A query with no key to attend (a padding query under causal + left padding, or a sample
            # that is all padding) would softmax over only -inf and give NaN. Let such rows attend every
            # key instead: their output is finite and ignored (they are padding), real rows are untouched.
            # (Without a key mask every row of a causal or prefix-LM pattern sees at least itself.)
            allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
        bias = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))
        if position_bias is not None:
            bias = bias + position_bias  # [., 1, ., Tk] + [1, H, Tq, Tk] -> [1|B, H, Tq, Tk]
        if query_mask is None:
            query_mask = torch.ones(1, 1, dtype=torch.bool, device=device)  # broadcasts as all-real
        if position_bias is not None:
            sdpa_mask, is_causal = bias, False
        elif key_mask is None and structure is None:
            sdpa_mask, is_causal = None, False
        elif key_mask is None and causal:
            sdpa_mask, is_causal = None, True
        else:
            sdpa_mask, is_causal = allowed, False
        return cls(
            allowed=allowed,
            query_valid=query_mask,
            bias=bias,
            rope=rope,
            sdpa_mask=sdpa_mask,
            is_causal=is_causal,
        )


@torch.compiler.disable  # under torch.compile: a graph break here, then one graph per answer
def _all_true(mask: Tensor) -> bool:
    """Whether a key mask masks nothing: one reduction (and a sync on GPU) per forward and stack,
    which buys mask-free SDPA (``is_causal`` / no mask: flash kernels, causal block skipping)."""
    return bool(mask.all())


def causal_structure(t: int, device: torch.device) -> Tensor:
    """[1, 1, T, T] bool: query i may attend key j iff j <= i."""
    i = torch.arange(t, device=device)
    return (i[None, :] <= i[:, None])[None, None]  # [T, T] -> [1, 1, T, T]


def prefix_lm_structure(prefix_len: Tensor, t: int) -> Tensor:
    """[B, 1, T, T] bool prefix-LM mask (Raffel et al. 2020 §3.2.1, https://arxiv.org/abs/1910.10683).

    Positions < prefix_len[b] attend bidirectionally within the prefix; a target position sees the
    whole prefix, earlier targets and itself; no position sees a future target."""
    j = torch.arange(t, device=prefix_len.device)
    sees_prefix = j[None, None, :] < prefix_len[:, None, None]  # [B, 1, T]: key j is in the prefix
    return (causal_structure(t, prefix_len.device)[:, 0] | sees_prefix)[:, None]  # [B, T, T] -> [B, 1, T, T]


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate each (x[i], x[i + d/2]) pair of every head by its position's angle (Su et al. 2021,
    https://arxiv.org/abs/2104.09864; GPT-NeoX's half-split pairing). x: [B, H, T, d]."""
    cos, sin = rope  # [T, d/2] each
    x1, x2 = x.chunk(2, dim=-1)  # [B, H, T, d] -> 2 x [B, H, T, d/2]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # -> [B, H, T, d]
    return rotated.type_as(x)


# --- attention statistics (Q1) -------------------------------------------------------------
SATURATED_PROB = 0.99  # a softmax row is saturated when one key takes more than this
def attention_stats(logits: Tensor, probs: Tensor, ctx: AttentionContext) -> dict[str, Tensor]:
    """Means over batch, heads and real queries, with masked keys excluded, of:
    ``entropy`` (normalised by log of the number of attendable keys; rows with one key are left
    out), ``max_prob``, ``saturated`` (the share of rows whose largest probability exceeds
    :data:`SATURATED_PROB`: the softmax Jacobian there is < 1% of its size at uniform attention),
    ``logit_std`` and ``logit_max`` (of the pre-softmax logits incl. bias).
    logits, probs: [B, H, Tq, Tk]."""
    logits, probs = logits.detach().float(), probs.detach().float()
    allowed = ctx.allowed  # [B, 1, Tq, Tk]
    n_keys = allowed.sum(-1)  # [B, 1, Tq]
    rows = ctx.query_valid[:, None, :].expand(probs.shape[:-1]).float()  # [B, Tq] -> [B, H, Tq]
    entropy_rows = rows * (n_keys >= 2)

    def mean(x: Tensor, weight: Tensor) -> Tensor:
        return (x * weight).sum() / weight.sum().clamp_min(1)

    entropy = -torch.special.xlogy(probs, probs).sum(-1) / n_keys.clamp_min(2).log()  # [B, H, Tq]
    shown = logits.masked_fill(~allowed, 0.0)  # masked logits are -inf: zero them before sums
    logit_mean = shown.sum(-1, keepdim=True) / n_keys[..., None]  # [B, H, Tq, 1]
    logit_var = (shown - logit_mean).square().masked_fill(~allowed, 0.0).sum(-1) / n_keys  # [B, H, Tq]
    return {
        "entropy": mean(entropy, entropy_rows),
        "max_prob": mean(probs.amax(-1), rows),
        "saturated": mean((probs.amax(-1) > SATURATED_PROB).float(), entropy_rows),
        "logit_std": mean(logit_var.sqrt(), rows),
        "logit_max": mean(logits.masked_fill(~allowed, float("-inf")).amax(-1), rows),
    }


# --- scalings: how q.k is turned into a logit ---------------------------------------------
class FixedScale(nn.Module):
    """logit = score * d_k**-exponent. Subclasses fix the exponent."""

    exponent: float

    def __init__(self, n_heads: int, head_dim: int):
        super().__init__()
        self.scale = head_dim**-self.exponent

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Normalise q and k before positions and scores (identity here)."""
        return q, k

    def logit_scale(self) -> Scale:
        return self.scale


class SqrtDkScale(FixedScale):
    """1/sqrt(d_k): Vaswani et al. 2017 §3.2.1, https://arxiv.org/abs/1706.03762 (q.k has variance d_k)."""

    exponent = 0.5


class NoScale(FixedScale):
    """1: Luong et al. 2015's unscaled "dot" score, https://arxiv.org/abs/1508.04025."""

    exponent = 0.0


class DkScale(FixedScale):
    """1/d_k: muP's attention scaling (Yang et al. 2022), https://arxiv.org/abs/2203.03466."""

    exponent = 1.0


class LearnedScale(nn.Module):
    """A learned per-head temperature ``exp(log_scale[h])``, initialised at 1/sqrt(d_k). Kept in log
    space so it stays positive (as CLIP's logit scale, Radford et al. 2021, https://arxiv.org/abs/2103.00020).
    Shape [H] (1-D), so optimisers that skip decay on 1-D parameters leave it alone."""

    def __init__(self, n_heads: int, head_dim: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((n_heads,), -0.5 * math.log(head_dim)))

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return q, k

    def logit_scale(self) -> Scale:
        return self.log_scale.exp()[:, None, None]  # [H] -> [H, 1, 1]


class QKNormScale(LearnedScale):
    """QK-norm: LayerNorm over each head's q and k (Dehghani et al. 2023, ViT-22B,
    https://arxiv.org/abs/2302.05442), then the learned per-head temperature of :class:`LearnedScale`
    initialised at 1/sqrt(d_k). After LayerNorm |q| ~ |k| ~ sqrt(d_k), so the logit starts as
    sqrt(d_k) * cos(q, k): Henry et al. 2020's QKNorm (https://arxiv.org/abs/2010.04245) with its learned
    gain g initialised at sqrt(d_k). The logit is bounded by the temperature whatever q and k do."""

    def __init__(self, n_heads: int, head_dim: int):
        super().__init__(n_heads, head_dim)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.q_norm(q), self.k_norm(k)  # over d, per head: [B, H, T, d]


SCALINGS: dict[str, type[nn.Module]] = {
    "sqrt_dk": SqrtDkScale,
    "none": NoScale,
    "dk": DkScale,
    "learned": LearnedScale,
    "qk_norm": QKNormScale,
}


# --- kinds: how q and k are scored -------------------------------------------------------
class DotProductAttention(nn.Module):
    """Reference path: ``softmax(q k^T * scale + bias) v``, the probabilities made explicit
    (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762). Subclasses change :meth:`score`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dropout = cfg.dropout

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1)  # [B, H, Tq, d] @ [B, H, d, Tk] -> [B, H, Tq, Tk]

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, scale: Scale, ctx: AttentionContext, return_stats: bool = False
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        logits = self.score(q, k) * scale + ctx.bias  # [B, H, Tq, Tk]
        probs = logits.softmax(dim=-1)
        stats = attention_stats(logits, probs, ctx) if return_stats else None
        probs = F.dropout(probs, self.dropout, self.training)
        return probs @ v, stats  # [B, H, Tq, Tk] @ [B, H, Tk, d] -> [B, H, Tq, d]


class SDPADotProductAttention(DotProductAttention):
    """Fast path: the same maths through ``F.scaled_dot_product_attention`` (fused kernels,
    FlashAttention-style memory). Statistics need the probabilities, so ``return_stats=True``
    takes the reference path for that forward."""

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, scale: Scale, ctx: AttentionContext, return_stats: bool = False
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        if return_stats:
            return super().forward(q, k, v, scale, ctx, return_stats=True)
        if isinstance(scale, Tensor):  # SDPA takes a float scale: fold a learned one into q
            q, scale = q * scale, 1.0
        # autocast can leave q/k in float32 after norm, rope or temperature; SDPA wants one dtype
        q, k = q.to(v.dtype), k.to(v.dtype)
        mask = ctx.sdpa_mask  # None, bool (True = attend) or float (ALiBi): see AttentionContext
        if mask is not None and mask.is_floating_point():
            mask = mask.to(v.dtype)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=ctx.is_causal,
            scale=scale,
        )
        return y, None  # [B, H, Tq, d]


ADDITIVE_INITS = {  # model.attention.additive_init -> v_a [H, d]
    "bahdanau": lambda h, d: torch.zeros(h, d),  # uniform attention at step 0 (Bahdanau et al. 2015 App. A.2)
    "unit": lambda h, d: torch.randn(h, d),  # score std grows as sqrt(d), like an unscaled q . k
}


class AdditiveAttention(DotProductAttention):
    """Additive attention (Bahdanau et al. 2015, https://arxiv.org/abs/1409.0473), per head:
    ``score(q_i, k_j) = v_a . tanh(W_q q_i + W_k k_j)`` with W_q, W_k: d -> d and v_a in R^d.

    The scaling multiplies the score as for dot-product. Init: W_q, W_k ~ N(0, 1/d) keep the scale
    of q and k; ``v_a`` by ``model.attention.additive_init`` (:data:`ADDITIVE_INITS`): ``bahdanau``
    (default) starts it at zero, so attention starts uniform, as in Bahdanau et al. 2015 App. A.2
    (biases and the alignment model's output weights start at 0 / small); ``unit`` is N(0, 1), which
    makes the score a sum of d unit-weight terms like q . k (std grows as sqrt(d) unscaled), so the
    scalings play the same role for both kinds.

    Under ``torch.compile`` the score is the dense formula (:func:`additive_attention_dense`), which
    Inductor fuses; eager runs the chunked kernels (same maths, tested equal).

    Memory: the [B, H, Tq, Tk, d] tanh tensor is never whole. Training forwards run
    :class:`AdditiveAttentionFunction`, attention done FlashAttention-style (Dao et al. 2022,
    https://arxiv.org/abs/2205.14135) a chunk of queries at a time in one reused [B, H, c, Tk, d]
    buffer: only q, k, v, the output and the row log-sum-exp are kept for backward, which recomputes
    each chunk's tanh; so training memory grows as O(T d) plus the buffer, less than dot-product's
    reference path with its O(T^2) probabilities. Forwards that need the probabilities (attention
    statistics, dropout) materialise the [B, H, Tq, Tk] scores through :class:`AdditiveScoreFunction`
    (chunked the same way, recomputed in backward): O(T^2), never O(T^2 d). Queries per chunk:
    ``model.attention.chunk_size``, fewer if the buffer would pass a budget (:func:`queries_per_chunk`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        h, d = cfg.n_heads, cfg.d_head
        self.chunk_size = cfg.attention.chunk_size
        self.w_q = nn.Parameter(torch.randn(h, d, d) / math.sqrt(d))
        self.w_k = nn.Parameter(torch.randn(h, d, d) / math.sqrt(d))
        self.v_a = nn.Parameter(ADDITIVE_INITS[cfg.attention.additive_init](h, d))

    def project(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        q = torch.einsum("bhqd,hde->bhqe", q, self.w_q)  # W_q q_i per head: [B, H, Tq, d]
        k = torch.einsum("bhkd,hde->bhke", k, self.w_k)  # W_k k_j per head: [B, H, Tk, d]
        return q, k

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = self.project(q, k)
        return additive_score(q, k, self.v_a, self.chunk_size)  # [B, H, Tq, Tk]

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, scale: Scale, ctx: AttentionContext, return_stats: bool = False
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        if return_stats or (self.training and self.dropout > 0):  # needs the probabilities
            return super().forward(q, k, v, scale, ctx, return_stats)
        q, k = self.project(q, k)
        if torch.compiler.is_compiling():  # traced: the dense formula, fused by the compiler
            return additive_attention_dense(q, k, v, self.v_a, scale, ctx.bias), None
        return additive_attention(q, k, v, self.v_a, scale, ctx.bias, self.chunk_size), None


# (kind, impl) -> class. Additive has one implementation; impl only picks the dot-product kernel.
ATTENTION_KINDS: dict[tuple[str, str], type[DotProductAttention]] = {
    ("dot", "sdpa"): SDPADotProductAttention,
    ("dot", "reference"): DotProductAttention,
    ("additive", "sdpa"): AdditiveAttention,
    ("additive", "reference"): AdditiveAttention,
}


# --- the layer ------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Project to heads, normalise (qk_norm), rotate (rope), score and mix, project back.
    Subclasses define :meth:`project` (self-attention: fused QKV; cross: q and fused kv)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_head
        self.scaling = SCALINGS[cfg.attention.scaling](cfg.n_heads, cfg.d_head)
        self.core = ATTENTION_KINDS[(cfg.attention.kind, cfg.attention.impl)](cfg)
        self.out = Linear(cfg.n_heads * cfg.d_head, cfg.d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, T, H*d] -> [B, H, T, d]

    def project(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def query_key_rows(self) -> list[tuple[nn.Parameter, int]]:
        """(in-projection weight, number of leading rows that are W_q / W_k)."""
        raise NotImplementedError

    def init_query_key(self, d_model: int) -> None:
        """W_q, W_k ~ N(0, 1/d_model): q and k components start with unit variance, the premise of
        Vaswani et al. 2017 §3.2.1 footnote 4 (q.k then has variance d_k), so the scalings of Q1 are
        compared on the footing the paper argues from, not hidden by a tiny GPT-2 init."""
        with torch.no_grad():
            for weight, rows in self.query_key_rows():
                weight[:rows].normal_(0.0, d_model**-0.5)

    def query_key_grads(self) -> list[Tensor]:
        """Gradients of the W_q and W_k rows of the (fused) in-projections (Q1's grad norm into W_q/W_k)."""
        return [w.grad[:rows] for w, rows in self.query_key_rows() if w.grad is not None]

    def forward(
        self, x: Tensor, ctx: AttentionContext, memory: Tensor | None = None, return_stats: bool = False
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """x: [B, Tq, D] queries' stream; memory: [B, Tk, D] keys'/values' stream (cross-attention)."""
        b, t, _ = x.shape
        q, k, v = self.project(x, memory)  # [B, H, T, d] each
        q, k = self.scaling(q, k)  # qk_norm: LayerNorm per head (identity for the other scalings)
        if ctx.rope is not None:  # rotary positions act on q and k only
            q, k = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        y, stats = self.core(q, k, v, self.scaling.logit_scale(), ctx, return_stats)  # [B, H, Tq, d]
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # [B, H, Tq, d] -> [B, Tq, H*d]
        return self.out(y), stats


class SelfAttention(MultiHeadAttention):
    """q, k, v from one sequence through one fused projection D -> 3*H*d."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.qkv = Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_head)

    def project(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, T, 3*H*d] -> 3 x [B, T, H*d]
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def query_key_rows(self) -> list[tuple[nn.Parameter, int]]:
        return [(self.qkv.weight, 2 * self.n_heads * self.head_dim)]  # rows [0, 2*H*d) are W_q, W_k


class CrossAttention(MultiHeadAttention):
    """Queries from this stream (the decoder), keys and values from ``memory`` (the encoder output)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.q = Linear(cfg.d_model, cfg.n_heads * cfg.d_head)
        self.kv = Linear(cfg.d_model, 2 * cfg.n_heads * cfg.d_head)

    def project(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)  # [B, Tk, 2*H*d] -> 2 x [B, Tk, H*d]
        return self.split_heads(self.q(x)), self.split_heads(k), self.split_heads(v)

    def query_key_rows(self) -> list[tuple[nn.Parameter, int]]:
        hd = self.n_heads * self.head_dim
        return [(self.q.weight, hd), (self.kv.weight, hd)]  # all of W_q; rows [0, H*d) of kv are W_k
