"""Output heads over the backbone's hidden states [B, T, D] (the pooling and the GPT-2 initialisation
they share with the backbone are in ``model.pooling``; the fused loss in ``model.kernels``).

Token-level heads (MLM, LM) are tied to the token embedding: they take its weight [V, D] as an
argument instead of holding it, so no tensor is stored twice in a state dict (Press & Wolf 2017,
https://arxiv.org/abs/1608.05859). They are applied only at predicted positions
(:func:`predicted_positions`), the sparse prediction of Cramming (Geiping & Goldstein 2023,
https://arxiv.org/abs/2212.14034): the [N, V] logits cover the N labelled tokens, not all B*T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import cpu_linear
from .kernels.fused_ce import linear_cross_entropy
from .pooling import POOLINGS, init_weights

IGNORE_INDEX = -100  # label of a position that is not predicted


def predicted_positions(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Hidden states and labels of the positions that are predicted: [B, T, D], [B, T] -> [N, D], [N]."""
    keep = labels != IGNORE_INDEX
    return hidden[keep], labels[keep]


# --- heads --------------------------------------------------------------------------------------
class LMHead(nn.Module):
    """Next-token logits with the output matrix tied to the token embedding (GPT-2; Press & Wolf 2017)."""

    def forward(self, hidden: Tensor, embedding_weight: Tensor) -> Tensor:
        return cpu_linear.linear(hidden, embedding_weight)  # [..., D] -> [..., V]

    def loss(self, hidden: Tensor, embedding_weight: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of ``forward(hidden)`` against targets, without [N, V] logits in training."""
        return linear_cross_entropy(hidden, embedding_weight, None, targets)


class MLMHead(nn.Module):
    """BERT's MLM head: dense + GELU + LayerNorm, then the tied embedding and an output bias
    (Devlin et al. 2019, https://arxiv.org/abs/1810.04805). Apply it to the gathered positions only."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.dense = cpu_linear.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(init_weights)

    def transform(self, hidden: Tensor) -> Tensor:
        """dense + GELU + LayerNorm, the part before the vocabulary projection: [..., D] -> [..., D]."""
        return self.norm(F.gelu(self.dense(hidden)))

    def forward(self, hidden: Tensor, embedding_weight: Tensor) -> Tensor:
        return cpu_linear.linear(self.transform(hidden), embedding_weight, self.bias)  # [..., D] -> [..., V]

    def loss(self, hidden: Tensor, embedding_weight: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy of ``forward(hidden)`` against targets, without [N, V] logits in training."""
        return linear_cross_entropy(self.transform(hidden), embedding_weight, self.bias, targets)


class NSPHead(nn.Module):
    """BERT's next-sentence head: the first token through BERT's pooler (dense + tanh), then 2 classes."""

    def __init__(self, d_model: int):
        super().__init__()
        self.dense = cpu_linear.Linear(d_model, d_model)
        self.classifier = cpu_linear.Linear(d_model, 2)
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
        self.classifier = cpu_linear.Linear(d_model, num_classes)
        self.apply(init_weights)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pool(hidden, mask)))  # [B, T, D] -> [B, D] -> [B, C]
