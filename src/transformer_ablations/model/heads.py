"""Output heads over the backbone's hidden states [B, T, D], sequence pooling, and the GPT-2
initialisation shared by the backbone and the heads.

Token-level heads (MLM, LM) are tied to the token embedding: they take its weight [V, D] as an
argument instead of holding it, so no tensor is stored twice in a state dict (Press & Wolf 2017,
https://arxiv.org/abs/1608.05859). They are applied only at predicted positions
(:func:`predicted_positions`), the sparse prediction of Cramming (Geiping & Goldstein 2023,
https://arxiv.org/abs/2212.14034): the [N, V] logits cover the N labelled tokens, not all B*T.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # label of a position that is not predicted
INIT_STD = 0.02


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation (Radford et al. 2019): N(0, 0.02) linear and embedding weights, zero biases.
    Use with ``module.apply``; LayerNorm keeps its ones/zeros and other parameters their own init."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# --- pooling: [B, T, D] + mask [B, T] -> [B, D] -----------------------------------------------
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


def predicted_positions(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Hidden states and labels of the positions that are predicted: [B, T, D], [B, T] -> [N, D], [N]."""
    keep = labels != IGNORE_INDEX
    return hidden[keep], labels[keep]


# --- heads --------------------------------------------------------------------------------------
class LMHead(nn.Module):
    """Next-token logits with the output matrix tied to the token embedding (GPT-2; Press & Wolf 2017)."""

    def forward(self, hidden: Tensor, embedding_weight: Tensor) -> Tensor:
        return F.linear(hidden, embedding_weight)  # [..., D] -> [..., V]


class MLMHead(nn.Module):
    """BERT's MLM head: dense + GELU + LayerNorm, then the tied embedding and an output bias
    (Devlin et al. 2019, https://arxiv.org/abs/1810.04805). Apply it to the gathered positions only."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(init_weights)

    def forward(self, hidden: Tensor, embedding_weight: Tensor) -> Tensor:
        return F.linear(
            self.norm(F.gelu(self.dense(hidden))), embedding_weight, self.bias
        )  # [..., D] -> [..., V]


class NSPHead(nn.Module):
    """BERT's next-sentence head: the first token through BERT's pooler (dense + tanh), then 2 classes."""

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.classifier = nn.Linear(d_model, 2)
        self.apply(init_weights)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.dense(hidden[:, 0])))  # [B, T, D] -> [B, D] -> [B, 2]


class ClassifierHead(nn.Module):
    """Pool the sequence (cls, mean, max, last), dropout, one linear layer: a linear probe when the
    backbone is frozen."""

    def __init__(self, d_model: int, num_classes: int, pooling: str, dropout: float = 0.0):
        super().__init__()
        self.pool = POOLINGS[pooling]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_classes)
        self.apply(init_weights)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pool(hidden, mask)))  # [B, T, D] -> [B, D] -> [B, C]
