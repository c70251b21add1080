"""Positions: none, sinusoidal, learned (added to the embeddings), rope, alibi (inside attention).

Each variant answers three questions, the base class answering "nothing" to each:
``forward(x)`` adds absolute positions to the token embeddings [B, T, D]; ``rope(T)`` gives
the rotary (cos, sin) tables applied to q and k; ``attention_bias(T)`` gives an additive
score bias [1, H, T, T]. All of them work with both attention kinds (additive attention
rotates q, k before W_q, W_k and adds the bias to its score). Cross-attention gets neither
rope nor a bias: its queries and keys come from different sequences.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig

ROPE_BASE = 10000.0


class NoPositions(nn.Module):
    """No positions ("NoPE"): Haviv et al. 2022, https://arxiv.org/abs/2203.16634. Self-attention is
    then permutation-equivariant; only a causal mask can reveal order."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x  # [B, T, D]

    def rope(self, t: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        return None

    def attention_bias(self, t: int, device: torch.device) -> Tensor | None:
        return None


class SinusoidalPositions(NoPositions):
    """Fixed sin/cos table added to the embeddings (Vaswani 2017 §3.5, https://arxiv.org/abs/1706.03762):
    PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)). Unit amplitude, unscaled;
    computed for any length."""

    def forward(self, x: Tensor) -> Tensor:
        t, d = x.shape[1], x.shape[2]
        position = torch.arange(t, device=x.device, dtype=torch.float32)[:, None]  # [T, 1]
        inv_freq = torch.exp(torch.arange(0, d, 2, device=x.device) * (-math.log(10000.0) / d))  # [ceil(D/2)]
        angles = position * inv_freq  # [T, ceil(D/2)]
        table = torch.zeros(t, d, device=x.device)
        table[:, 0::2] = angles.sin()
        table[:, 1::2] = angles.cos()[:, : d // 2]
        return x + table.to(x.dtype)  # [B, T, D] + [T, D]


class LearnedPositions(NoPositions):
    """A learned absolute position table of ``max_len`` rows (Gehring et al. 2017,
    https://arxiv.org/abs/1705.03122; BERT, GPT-2). Cannot go past max_len."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.embedding = nn.Embedding(cfg.max_len, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.embedding.num_embeddings:
            raise ValueError(
                f"length {t} exceeds model.max_len={self.embedding.num_embeddings} (learned positions)"
            )
        return x + self.embedding.weight[:t]  # [B, T, D] + [T, D]


class RotaryPositions(NoPositions):
    """RoPE (Su et al. 2021, https://arxiv.org/abs/2104.09864): q and k of every head are rotated
    pairwise by angle t * 10000^(-2i/d), so q_i . k_j depends on i - j only. Needs an even d_k."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        if cfg.d_head % 2:
            raise ConfigError(
                f"model.positional=rope needs an even model.head_dim (d_k), got model.head_dim={cfg.d_head}"
            )
        self.head_dim = cfg.d_head

    def rope(self, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        d = self.head_dim
        inv_freq = ROPE_BASE ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)  # [d/2]
        angles = torch.arange(t, device=device, dtype=torch.float32)[:, None] * inv_freq  # [T, d/2]
        return angles.cos(), angles.sin()


def alibi_slopes(n_heads: int) -> list[float]:
    """Press et al.'s geometric head slopes: 2^(-8/n), 2^(-16/n), ... for n a power of two; otherwise
    those of the nearest lower power of two plus every other slope of the next one (their code)."""
    if math.log2(n_heads).is_integer():
        start = 2 ** (-8 / n_heads)
        return [start ** (i + 1) for i in range(n_heads)]
    lower = 2 ** math.floor(math.log2(n_heads))
    return alibi_slopes(lower) + alibi_slopes(2 * lower)[0::2][: n_heads - lower]


class ALiBiPositions(NoPositions):
    """ALiBi (Press et al. 2022, https://arxiv.org/abs/2108.12409): no embeddings; head h adds
    -slope_h * |i - j| to the score of query i and key j. The paper's causal bias -slope * (i - j)
    is the same on the keys a causal query can see; bidirectional (encoder, prefix) attention uses
    the symmetric |i - j|."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.slopes = alibi_slopes(cfg.n_heads)

    def attention_bias(self, t: int, device: torch.device) -> Tensor:
        i = torch.arange(t, device=device)
        distance = (i[None, :] - i[:, None]).abs().float()  # [T, T]: |i - j|
        slopes = torch.tensor(self.slopes, device=device)  # [H]
        return -(slopes[:, None, None] * distance)[None]  # [H, T, T] -> [1, H, T, T]


POSITIONALS: dict[str, type[NoPositions]] = {
    "none": NoPositions,
    "sinusoidal": SinusoidalPositions,
    "learned": LearnedPositions,
    "rope": RotaryPositions,
    "alibi": ALiBiPositions,
}
