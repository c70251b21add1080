"""The Transformer backbone: embeddings -> blocks -> final norm, as an encoder, a decoder or both.

- ``encoder``: bidirectional self-attention over the real tokens (padding masked);
- ``decoder``: causal self-attention, or a prefix-LM mask when ``prefix_len`` is given;
- ``encoder_decoder``: an encoder stack, and a decoder stack whose blocks add cross-attention
  (queries from the decoder, keys/values from the encoder output) between self-attention and MLP.

One :class:`AttentionContext` (mask + ALiBi bias + rope tables) is built per stack and forward
and shared by all its layers. Token embeddings are shared by the encoder and decoder streams
and by the tied output heads (Vaswani et al. 2017 §3.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig
from .attention import (
    AttentionContext,
    CrossAttention,
    MultiHeadAttention,
    SelfAttention,
    prefix_lm_structure,
)
from .kernels.cpu_linear import Linear
from .pooling import init_weights, pool_mean
from .positional import POSITIONALS

Stats = list[dict] | None


class MLP(nn.Module):
    """Position-wise feed-forward: D -> d_ff -> D with GELU."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = Linear(cfg.d_model, cfg.d_ff)
        self.proj = Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))  # [B, T, D] -> [B, T, d_ff] -> [B, T, D]


# --- where the LayerNorm goes around each sublayer f: before(x) feeds f, after(x + f) closes it --
class PreNorm(nn.Module):
    """x + f(LN(x)), final LN after the stack (GPT-2; Xiong et al. 2020, https://arxiv.org/abs/2002.04745)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def before(self, x: Tensor) -> Tensor:
        return self.norm(x)

    def after(self, x: Tensor) -> Tensor:
        return x

    @staticmethod
    def final(d_model: int) -> nn.Module:
        return nn.LayerNorm(d_model)


class PostNorm(PreNorm):
    """LN(x + f(x)), no final LN (Vaswani et al. 2017 §3.1, https://arxiv.org/abs/1706.03762; BERT)."""

    def before(self, x: Tensor) -> Tensor:
        return x

    def after(self, x: Tensor) -> Tensor:
        return self.norm(x)

    @staticmethod
    def final(d_model: int) -> nn.Module:
        return nn.Identity()


NORMS: dict[str, type[PreNorm]] = {"pre": PreNorm, "post": PostNorm}


# --- what the decoder's cross-attention sees of the encoder output -------------------------------
class FullMemory(nn.Module):
    """Every encoder state (Bahdanau et al. 2015, https://arxiv.org/abs/1409.0473; Vaswani et al. 2017)."""

    def forward(self, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return memory, mask  # [B, S, D], [B, S]


class PooledMemory(nn.Module):
    """One masked-mean encoder state: the fixed-size bottleneck of attention-free seq2seq
    (Sutskever et al. 2014, https://arxiv.org/abs/1409.3215; Cho et al. 2014). Q3's ablation."""

    def forward(self, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if mask is None:
            mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return pool_mean(memory, mask)[:, None], None  # [B, S, D] -> [B, D] -> [B, 1, D]; nothing to mask


MEMORIES: dict[str, type[nn.Module]] = {"full": FullMemory, "pooled": PooledMemory}


# --- blocks and stacks ---------------------------------------------------------------------------
class Block(nn.Module):
    """Self-attention, optional cross-attention (decoder of encoder_decoder), MLP; each a residual
    sublayer with its norm placed by ``cfg.norm``."""

    def __init__(self, cfg: ModelConfig, cross_attention: bool):
        super().__init__()
        norm = NORMS[cfg.norm]
        self.self_attn, self.self_norm = SelfAttention(cfg), norm(cfg.d_model)
        self.cross_attn = CrossAttention(cfg) if cross_attention else None
        self.cross_norm = norm(cfg.d_model) if cross_attention else None
        self.mlp, self.mlp_norm = MLP(cfg), norm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,  # [B, T, D]
        ctx: AttentionContext,
        memory: Tensor | None = None,  # [B, S, D] encoder output
        memory_ctx: AttentionContext | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, list]:
        h, self_stats = self.self_attn(self.self_norm.before(x), ctx, return_stats=return_stats)
        x = self.self_norm.after(x + self.drop(h))
        stats = [self_stats]
        if self.cross_attn is not None:
            h, cross_stats = self.cross_attn(self.cross_norm.before(x), memory_ctx, memory, return_stats)
            x = self.cross_norm.after(x + self.drop(h))
            stats.append(cross_stats)
        x = self.mlp_norm.after(x + self.drop(self.mlp(self.mlp_norm.before(x))))
        return x, stats


class Stack(nn.Module):
    """n_layers blocks and the final norm; names each attention layer's stats (enc0, dec1_self, ...)."""

    def __init__(self, cfg: ModelConfig, name: str, cross_attention: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg, cross_attention) for _ in range(cfg.n_layers))
        self.final_norm = NORMS[cfg.norm].final(cfg.d_model)
        suffixes = ("_self", "_cross") if cross_attention else ("",)
        self.stat_names = [f"{name}{i}{s}" for i in range(cfg.n_layers) for s in suffixes]

    def forward(
        self,
        x: Tensor,
        ctx: AttentionContext,
        memory: Tensor | None = None,
        memory_ctx: AttentionContext | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, Stats]:
        stats = []
        for block in self.blocks:
            x, block_stats = block(x, ctx, memory, memory_ctx, return_stats)
            stats += block_stats
        named = [dict(s, name=n) for s, n in zip(stats, self.stat_names)] if return_stats else None
        return self.final_norm(x), named


# (has encoder stack, has decoder stack) per architecture
ARCHS: dict[str, tuple[bool, bool]] = {
    "encoder": (True, False),
    "decoder": (False, True),
    "encoder_decoder": (True, True),
}


class Transformer(nn.Module):
    """Backbone returning hidden states [B, T, D] (of the decoder, for decoder and encoder_decoder)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ConfigError(
                f"model.vocab_size={cfg.vocab_size}: set it from the tokenizer before building the model"
            )
        if cfg.cross_attention != "full" and cfg.arch != "encoder_decoder":
            raise ConfigError(
                f"model.cross_attention={cfg.cross_attention} needs model.arch=encoder_decoder "
                f"(got model.arch={cfg.arch})"
            )
        self.cfg = cfg
        has_encoder, has_decoder = ARCHS[cfg.arch]
        self.tok_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.seg_embedding = nn.Embedding(2, cfg.d_model) if cfg.segment_embeddings else None
        self.positional = POSITIONALS[cfg.positional](cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Stack(cfg, "enc", cross_attention=False) if has_encoder else None
        self.decoder = Stack(cfg, "dec", cross_attention=has_encoder) if has_decoder else None
        self.memory = MEMORIES[cfg.cross_attention]()
        self.apply(init_weights)
        for attention in self.modules():
            if isinstance(attention, MultiHeadAttention):
                attention.init_query_key(cfg.d_model)

    def embed(self, input_ids: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        x = self.tok_embedding(input_ids)  # [B, T] -> [B, T, D]
        if self.seg_embedding is not None and segment_ids is not None:
            x = x + self.seg_embedding(segment_ids)
        return self.drop(self.positional(x))  # absolute positions are added here (identity otherwise)

    def self_attention_context(
        self,
        attention_mask: Tensor | None,
        structure: Tensor | None,
        t: int,
        device: torch.device,
        causal: bool = False,
    ) -> AttentionContext:
        return AttentionContext.build(
            key_mask=attention_mask,
            query_mask=attention_mask,
            structure=structure,
            tk=t,
            device=device,
            position_bias=self.positional.attention_bias(t, device),
            rope=self.positional.rope(t, device),
            causal=causal,
        )

    def encode(
        self,
        input_ids: Tensor,  # [B, S]
        attention_mask: Tensor | None = None,  # [B, S] bool, True = real token
        segment_ids: Tensor | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, Stats]:
        """Bidirectional encoder: [B, S] -> [B, S, D]."""
        t = input_ids.shape[1]
        ctx = self.self_attention_context(attention_mask, None, t, input_ids.device)
        return self.encoder(self.embed(input_ids, segment_ids), ctx, return_stats=return_stats)

    def decode(
        self,
        input_ids: Tensor,  # [B, T]
        attention_mask: Tensor | None = None,  # [B, T] bool
        segment_ids: Tensor | None = None,
        prefix_len: Tensor | None = None,  # [B]: prefix-LM mask instead of causal
        memory: Tensor | None = None,  # [B, S, D] encoder output (encoder_decoder)
        memory_mask: Tensor | None = None,  # [B, S] bool
        return_stats: bool = False,
    ) -> tuple[Tensor, Stats]:
        """Causal (or prefix-LM) decoder, cross-attending to ``memory`` if given: [B, T] -> [B, T, D]."""
        t, device = input_ids.shape[1], input_ids.device
        if prefix_len is None:  # causal: built inside the context, so SDPA can use is_causal=True
            ctx = self.self_attention_context(attention_mask, None, t, device, causal=True)
        else:
            ctx = self.self_attention_context(attention_mask, prefix_lm_structure(prefix_len, t), t, device)
        memory_ctx = None
        if memory is not None:
            memory, memory_mask = self.memory(memory, memory_mask)  # full, or one pooled state
            memory_ctx = AttentionContext.build(memory_mask, attention_mask, None, memory.shape[1], device)
        return self.decoder(self.embed(input_ids, segment_ids), ctx, memory, memory_ctx, return_stats)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        prefix_len: Tensor | None = None,
        encoder_input_ids: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, Stats]:
        """-> (hidden [B, T, D], per-layer attention stats or None). For encoder_decoder, ``input_ids``
        is the decoder input and ``encoder_input_ids`` the source."""
        if self.decoder is None:
            return self.encode(input_ids, attention_mask, segment_ids, return_stats)
        if self.encoder is None:
            return self.decode(input_ids, attention_mask, segment_ids, prefix_len, return_stats=return_stats)
        if encoder_input_ids is None:
            raise ValueError("model.arch=encoder_decoder needs encoder_input_ids (the source)")
        memory, enc_stats = self.encode(encoder_input_ids, encoder_attention_mask, return_stats=return_stats)
        hidden, dec_stats = self.decode(
            input_ids, attention_mask, segment_ids, prefix_len, memory, encoder_attention_mask, return_stats
        )
        return hidden, enc_stats + dec_stats if return_stats else None

    def query_key_grads(self) -> list[Tensor]:
        """Gradients of every attention layer's W_q and W_k rows (Q1: grad norm into W_q/W_k)."""
        return [g for m in self.modules() if isinstance(m, MultiHeadAttention) for g in m.query_key_grads()]
