"""Task models: a backbone plus heads plus the loss, consuming the batch dicts of docs/ARCHITECTURE.md.

Each ``forward(batch, return_stats=False)`` returns a :class:`TaskOutput`; each model exposes
``.backbone`` (the :class:`Transformer`) so fine-tuning can load pretrained weights into it and
probe mode can freeze it. Labels are aligned with the positions that predict them (the data
pipeline shifts them): ``labels[:, t]`` is what position t must output, -100 where nothing is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig
from .heads import ClassifierHead, LMHead, MLMHead, NSPHead, predicted_positions
from .transformer import Transformer


@dataclass
class TaskOutput:
    loss: Tensor  # scalar
    # [N, C]: the predictions the main accuracy is computed on. Token-level models pass a function while
    # training (their loss never materialises the [N, V] logits, see heads.linear_cross_entropy); it is
    # called on first access of ``.logits``, without gradient.
    logits: Tensor | Callable[[], Tensor]
    targets: Tensor  # [N]
    aux: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)  # e.g. {"nsp": ([B, 2], [B])}
    stats: list[dict] | None = None  # one dict per attention layer (return_stats=True)

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if name != "logits" or not callable(value):
            return value
        with torch.no_grad():
            value = value()
        object.__setattr__(self, "logits", value)
        return value


def token_logits(head: nn.Module, hidden: Tensor, weight: Tensor) -> Tensor | Callable[[], Tensor]:
    """The logits of a tied token head: computed now when no gradient is being recorded (evaluation),
    else deferred (training only reads the loss)."""
    if torch.is_grad_enabled():
        return lambda: head(hidden.detach(), weight.detach())
    return head(hidden, weight)


class MaskedLM(nn.Module):
    """BERT pretraining: sparse MLM loss (logits only at the masked positions), plus NSP when ``nsp``."""

    def __init__(self, model_cfg: ModelConfig, nsp: bool = False):
        super().__init__()
        self.backbone = Transformer(model_cfg)
        self.mlm_head = MLMHead(model_cfg.d_model, model_cfg.vocab_size)
        self.nsp_head = NSPHead(model_cfg.d_model) if nsp else None

    def forward(self, batch: dict[str, Tensor], return_stats: bool = False) -> TaskOutput:
        hidden, stats = self.backbone(
            batch["input_ids"],
            batch.get("attention_mask"),
            batch.get("segment_ids"),
            return_stats=return_stats,
        )
        masked, targets = predicted_positions(hidden, batch["labels"])  # [N, D], [N]
        weight = self.backbone.tok_embedding.weight
        loss, aux = self.mlm_head.loss(masked, weight, targets), {}  # sparse: only the N masked tokens
        logits = token_logits(self.mlm_head, masked, weight)  # [N, V]
        if self.nsp_head is not None:
            nsp_logits, nsp_labels = self.nsp_head(hidden), batch["nsp_labels"]  # [B, 2], [B]
            loss = loss + F.cross_entropy(nsp_logits, nsp_labels)
            aux["nsp"] = (nsp_logits, nsp_labels)
        return TaskOutput(loss, logits, targets, aux, stats)


class CausalLM(nn.Module):
    """GPT pretraining: next-token loss with the tied LM head, at labelled positions only."""

    def __init__(self, model_cfg: ModelConfig):
        super().__init__()
        self.backbone = Transformer(model_cfg)
        self.lm_head = LMHead()

    def forward(self, batch: dict[str, Tensor], return_stats: bool = False) -> TaskOutput:
        hidden, stats = self.backbone(
            batch["input_ids"], batch.get("attention_mask"), return_stats=return_stats
        )
        predicting, targets = predicted_positions(hidden, batch["labels"])  # [N, D], [N]
        weight = self.backbone.tok_embedding.weight
        loss = self.lm_head.loss(predicting, weight, targets)
        return TaskOutput(loss, token_logits(self.lm_head, predicting, weight), targets, {}, stats)  # [N, V]


# --- seq2seq: the two batch formats, each with its greedy decoder ------------------------------
class EncoderDecoderFormat:
    """``src_ids``/``src_mask`` go through the encoder; ``tgt_in_ids`` (BOS + target) through the decoder."""

    @staticmethod
    def inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            "input_ids": batch["tgt_in_ids"],
            "attention_mask": batch["tgt_mask"],
            "encoder_input_ids": batch["src_ids"],
            "encoder_attention_mask": batch["src_mask"],
        }

    @staticmethod
    def generate(
        model: Seq2Seq, batch: dict[str, Tensor], max_new_tokens: int, bos_id: int, eos_id: int
    ) -> Tensor:
        backbone = model.backbone
        memory, _ = backbone.encode(batch["src_ids"], batch["src_mask"])  # encoded once: [B, S, D]
        tokens = torch.full((memory.shape[0], 1), bos_id, dtype=torch.long, device=memory.device)  # [B, 1]
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for _ in range(max_new_tokens):
            hidden, _ = backbone.decode(tokens, memory=memory, memory_mask=batch["src_mask"])  # [B, t, D]
            next_token = model.next_token(hidden[:, -1]).masked_fill(done, eos_id)  # [B]
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            done |= next_token == eos_id
            if done.all():
                break
        return tokens[:, 1:]  # drop BOS


class PrefixLMFormat:
    """``input_ids`` = source [SEP] target in one sequence, ``prefix_len`` = len(source [SEP])."""

    @staticmethod
    def inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "prefix_len": batch["prefix_len"],
        }

    @staticmethod
    def generate(
        model: Seq2Seq, batch: dict[str, Tensor], max_new_tokens: int, bos_id: int, eos_id: int
    ) -> Tensor:
        """Each row continues its own prompt (the first prefix_len[b] tokens) at its own positions, so
        positions match training whatever the prompt lengths; the rest of input_ids is never read."""
        prefix_len = batch["prefix_len"]  # [B]
        b, device = prefix_len.shape[0], prefix_len.device
        p_max = int(prefix_len.max())
        position = torch.arange(p_max + max_new_tokens, device=device)  # [P + N]
        prompt = batch["input_ids"][:, :p_max].masked_fill(position[None, :p_max] >= prefix_len[:, None], 0)
        tokens = torch.cat([prompt, prompt.new_zeros(b, max_new_tokens)], dim=1)  # [B, P + N]
        rows = torch.arange(b, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        written = 0
        for step in range(max_new_tokens):
            length = prefix_len + step  # [B] tokens so far in each row
            seen = tokens[:, : p_max + step]  # [B, P + step] covers every row's tokens so far
            mask = position[None, : p_max + step] < length[:, None]  # [B, P + step]
            hidden, _ = model.backbone.decode(seen, mask, prefix_len=prefix_len)
            next_token = model.next_token(hidden[rows, length - 1]).masked_fill(done, eos_id)  # [B]
            tokens[rows, length] = next_token
            written, done = step + 1, done | (next_token == eos_id)
            if done.all():
                break
        answer = prefix_len[:, None] + torch.arange(written, device=device)  # [B, n] positions written
        return tokens.gather(1, answer)


SEQ2SEQ_FORMATS = {"encoder_decoder": EncoderDecoderFormat, "decoder": PrefixLMFormat}


class Seq2Seq(nn.Module):
    """Sequence-to-sequence with teacher forcing: an encoder_decoder, or a decoder used as a prefix LM."""

    def __init__(self, model_cfg: ModelConfig):
        super().__init__()
        if model_cfg.arch not in SEQ2SEQ_FORMATS:
            raise ConfigError(
                "objective=seq2seq needs model.arch=encoder_decoder or decoder (prefix LM), "
                f"got model.arch={model_cfg.arch}"
            )
        self.backbone = Transformer(model_cfg)
        self.lm_head = LMHead()
        self.format = SEQ2SEQ_FORMATS[model_cfg.arch]

    def next_token(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden, self.backbone.tok_embedding.weight).argmax(-1)  # [B, D] -> [B, V] -> [B]

    def forward(self, batch: dict[str, Tensor], return_stats: bool = False) -> TaskOutput:
        hidden, stats = self.backbone(**self.format.inputs(batch), return_stats=return_stats)
        predicting, targets = predicted_positions(hidden, batch["labels"])  # [N, D], [N]
        weight = self.backbone.tok_embedding.weight
        loss = self.lm_head.loss(predicting, weight, targets)
        return TaskOutput(loss, token_logits(self.lm_head, predicting, weight), targets, {}, stats)  # [N, V]

    @torch.no_grad()
    def generate(self, batch: dict[str, Tensor], max_new_tokens: int, bos_id: int, eos_id: int) -> Tensor:
        """Greedy decoding -> [B, n <= max_new_tokens] target tokens (EOS included; after a row's EOS,
        more EOS). Stops early once every row has produced EOS. ``bos_id`` starts the encoder_decoder's
        decoder; the prefix LM continues source [SEP] instead."""
        return self.format.generate(self, batch, max_new_tokens, bos_id, eos_id)


class SequenceClassifier(nn.Module):
    """Backbone + pooled linear classifier (``labels`` [B] are class ids)."""

    def __init__(self, model_cfg: ModelConfig, num_classes: int, pooling: str = "cls"):
        super().__init__()
        self.backbone = Transformer(model_cfg)
        self.head = ClassifierHead(model_cfg.d_model, num_classes, pooling, model_cfg.dropout)

    def forward(self, batch: dict[str, Tensor], return_stats: bool = False) -> TaskOutput:
        mask = batch["attention_mask"]
        hidden, stats = self.backbone(
            batch["input_ids"], mask, batch.get("segment_ids"), return_stats=return_stats
        )
        logits, labels = self.head(hidden, mask), batch["labels"]  # [B, C], [B]
        return TaskOutput(F.cross_entropy(logits, labels), logits, labels, {}, stats)
