"""What the backbone and the heads share: the GPT-2 initialisation and sequence pooling
([B, T, D] + mask [B, T] -> [B, D])."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

INIT_STD = 0.02


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation (Radford et al. 2019): N(0, 0.02) linear and embedding weights, zero biases.
    Use with ``module.apply``; LayerNorm keeps its ones/zeros and other parameters their own init."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def pool_cls(hidden: Tensor, mask: Tensor) -> Tensor:
    """The first token ([CLS]): BERT §3, https://arxiv.org/abs/1810.04805."""
    return hidden[:, 0]


def pool_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens: Sentence-BERT, Reimers & Gurevych 2019, https://arxiv.org/abs/1908.10084."""
    weight = mask[..., None].to(hidden.dtype)  # [B, T] -> [B, T, 1]
    return (hidden * weight).sum(1) / weight.sum(1).clamp_min(1.0)


def pool_max(hidden: Tensor, mask: Tensor) -> Tensor:
    """Element-wise max over real tokens: Sentence-BERT (as above); Conneau et al. 2017 (InferSent)."""
    return hidden.masked_fill(~mask[..., None], torch.finfo(hidden.dtype).min).amax(
        1
    )  # mask [B, T] -> [B, T, 1]


def pool_last(hidden: Tensor, mask: Tensor) -> Tensor:
    """The last real token, the only one a causal decoder has read everything up to (GPT-1, Radford et al.
    2018, https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf)."""
    position = torch.arange(hidden.shape[1], device=hidden.device)
    last = torch.where(mask, position, 0).amax(1)  # [B]: index of the last True (0 if none)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


POOLINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cls": pool_cls,
    "mean": pool_mean,
    "max": pool_max,
    "last": pool_last,
}


def pool(hidden: Tensor, mask: Tensor | None, pooling: str) -> Tensor:
    """[B, T, D] -> [B, D]; ``mask`` [B, T] bool (True = real token, None = all real)."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return POOLINGS[pooling](hidden, mask)
