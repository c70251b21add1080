"""Plain-PyTorch models (no Lightning): attention kinds x scalings, positions, the Transformer
backbone (encoder, decoder, encoder_decoder), heads and task models."""

from .attention import (
    ATTENTION_KINDS,
    SCALINGS,
    AdditiveAttention,
    AttentionContext,
    CrossAttention,
    DotProductAttention,
    MultiHeadAttention,
    SDPADotProductAttention,
    SelfAttention,
    apply_rope,
    attention_stats,
    causal_structure,
    prefix_lm_structure,
)
from .heads import (
    IGNORE_INDEX,
    ClassifierHead,
    LMHead,
    MLMHead,
    NSPHead,
    predicted_positions,
)
from .pooling import POOLINGS, init_weights, pool
from .positional import POSITIONALS, alibi_slopes
from .task_models import (
    CausalLM,
    MaskedLM,
    Seq2Seq,
    SequenceClassifier,
    TaskOutput,
)
from .transformer import Transformer

__all__ = [
    "ATTENTION_KINDS",
    "IGNORE_INDEX",
    "POOLINGS",
    "POSITIONALS",
    "SCALINGS",
    "AdditiveAttention",
    "AttentionContext",
    "CausalLM",
    "ClassifierHead",
    "CrossAttention",
    "DotProductAttention",
    "LMHead",
    "MLMHead",
    "MaskedLM",
    "MultiHeadAttention",
    "NSPHead",
    "SDPADotProductAttention",
    "SelfAttention",
    "Seq2Seq",
    "SequenceClassifier",
    "TaskOutput",
    "Transformer",
    "alibi_slopes",
    "apply_rope",
    "attention_stats",
    "causal_structure",
    "init_weights",
    "pool",
    "predicted_positions",
    "prefix_lm_structure",
]
