"""A trained model for reuse: Hugging Face-style folders through ``huggingface_hub``'s
:class:`~huggingface_hub.PyTorchModelHubMixin`, and inference from raw text.

``save_pretrained(folder)`` writes ``config.json`` (the model fields plus what the task model
needs: objective, task, number of classes, pooling, pair format, sequence length; not the run
config), ``model.safetensors`` and ``tokenizer.model``; ``from_pretrained(folder)`` (a local
folder or a Hub repository id) rebuilds it, loading every tensor strictly.

``encode(texts)`` gives one vector per text and ``predict(texts)`` the model's answer (class ids
for a classifier, the filled-in ``[MASK]`` tokens for a masked LM, the next token for a causal
LM); neither needs labels. A text is a string, or a ``(first, second)`` pair for pair tasks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from safetensors.torch import load_model
from torch import Tensor, nn

from ..atomic import FILE_MODE, atomic_write_bytes
from ..config import ConfigError, DataConfig, FinetuneConfig, ModelConfig, RunConfig, from_dict, to_dict
from ..data.collate import ClassificationCollator, pad_2d
from ..data.tokenizer import MASK, Tokenizer
from ..model.pooling import pool
from ..model.task_models import CausalLM, MaskedLM, SequenceClassifier
from .registry import task_spec

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.model"
Text = str | tuple[str, str]


class PretrainedTransformer(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="transformer-ablations",
    tags=["transformer-ablations"],
):
    """The task model of a run (``.net``; ``.backbone`` is its Transformer) plus its tokenizer."""

    def __init__(
        self,
        model: dict,
        objective: str,
        task: str,
        num_classes: int | None = None,
        pooling: str = "cls",
        pair_format: str = "sep",
        seq_len: int = 64,
    ):
        super().__init__()
        self.run_config = RunConfig(
            objective=objective,
            model=from_dict(model, ModelConfig),
            data=DataConfig(task=task, pair_format=pair_format, seq_len=seq_len),
            finetune=FinetuneConfig(pooling=pooling),
        )
        self.num_classes = num_classes
        self.net = task_spec(task).model(self.run_config, num_classes)
        self.tokenizer: Tokenizer | None = None

    @classmethod
    def from_run_config(cls, cfg: RunConfig, num_classes: int | None) -> PretrainedTransformer:
        return cls(
            model=to_dict(cfg.model), objective=cfg.objective, task=cfg.data.task, num_classes=num_classes,
            pooling=cfg.finetune.pooling, pair_format=cfg.data.pair_format, seq_len=cfg.data.seq_len,
        )

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    # --- Hub folders ---------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        if self.tokenizer is None:
            raise ConfigError("this model has no tokenizer; set .tokenizer before save_pretrained")
        super()._save_pretrained(save_directory)  # model.safetensors (safetensors writes it 0600)
        os.chmod(save_directory / WEIGHTS, FILE_MODE)
        atomic_write_bytes(save_directory / TOKENIZER, self.tokenizer.to_bytes())

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         map_location: str = "cpu", strict: bool = True, **model_kwargs) -> PretrainedTransformer:
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir, token=token,
                                            force_download=force_download, local_files_only=local_files_only))
        model = cls(**model_kwargs)
        load_model(model, str(folder / WEIGHTS), strict=strict, device=map_location)
        model.tokenizer = Tokenizer.from_file(folder / TOKENIZER)
        return model.eval()

    # --- inference -------------------------------------------------------------------------
    def batch(self, texts: Sequence[Text]) -> dict[str, Tensor]:
        """Raw texts -> the model's input batch, without labels: ``[CLS] a [SEP] (b [SEP])`` as in
        fine-tuning and MLM pretraining; the plain token stream for a causal LM."""
        tok = self.tokenizer
        if tok is None:
            raise ConfigError("this model has no tokenizer; load it with from_pretrained or load_pretrained")
        pairs = [(text, None) if isinstance(text, str) else text for text in texts]
        max_len = self.run_config.data.seq_len
        if isinstance(self.net, CausalLM):
            rows = [(self._ids(a) + (self._ids(b) if b else []))[-max_len:] for a, b in pairs]
            batch = {"input_ids": pad_2d(rows, tok.pad_id), "attention_mask": pad_2d([[1] * len(r) for r in rows], 0, torch.bool)}
        else:
            examples = [{"a_ids": self._ids(a), "b_ids": self._ids(b) if b else None, "label": 0} for a, b in pairs]
            batch = ClassificationCollator(tok, max_len, self.run_config.data.pair_format)(examples)
            batch.pop("labels")
        device = next(self.parameters()).device
        return {k: v.to(device) for k, v in batch.items()}

    def _ids(self, text: str) -> list[int]:
        """Token ids, with each literal ``[MASK]`` as the mask token (sentencepiece would split it)."""
        parts = [self.tokenizer.encode(part) for part in text.split(MASK)]
        return [i for n, part in enumerate(parts) for i in ([self.tokenizer.mask_id] if n else []) + part]

    def hidden_states(self, texts: Sequence[Text]) -> tuple[Tensor, dict[str, Tensor]]:
        batch = self.batch(texts)
        hidden, _ = self.net.backbone(batch["input_ids"], batch["attention_mask"], batch.get("segment_ids"))
        return hidden, batch  # [B, T, D]

    @torch.no_grad()
    def encode(self, texts: Sequence[Text], pooling: str | None = None) -> Tensor:
        """One vector per text, [B, d_model]: pooled by ``pooling`` (default: the fine-tuning pooling
        for a classifier, mean for a pretrained LM)."""
        hidden, batch = self.hidden_states(texts)
        default = self.run_config.finetune.pooling if isinstance(self.net, SequenceClassifier) else "mean"
        return pool(hidden, batch["attention_mask"], pooling or default)

    @torch.no_grad()
    def logits(self, texts: Sequence[Text]) -> Tensor:
        """Classifier: [B, C]; language model: [B, T, V] at every position."""
        hidden, batch = self.hidden_states(texts)
        net, weight = self.net, self.net.backbone.tok_embedding.weight
        if isinstance(net, SequenceClassifier):
            return net.head(hidden, batch["attention_mask"])
        if isinstance(net, MaskedLM):
            return net.mlm_head(hidden, weight)
        if isinstance(net, CausalLM):
            return net.lm_head(hidden, weight)
        raise ConfigError(f"logits/predict are for classifiers and language models, not {type(net).__name__}; "
                          "a seq2seq model decodes with .net.generate(batch, ...)")

    @torch.no_grad()
    def predict(self, texts: Sequence[Text]) -> list:
        """Classifier: the class id of each text. Masked LM: the predicted token at each ``[MASK]``.
        Causal LM: the most likely next token after each text."""
        scores = self.logits(texts)
        if scores.dim() == 2:
            return scores.argmax(-1).tolist()
        best = scores.argmax(-1)  # [B, T]
        ids = self.batch(texts)["input_ids"]
        tok = self.tokenizer
        if isinstance(self.net, MaskedLM):
            return [[tok.id_to_piece(int(i)) for i in best[b][ids[b] == tok.mask_id]] for b in range(len(texts))]
        last = (ids != tok.pad_id).sum(-1) - 1  # the position that predicts the token after the text
        return [tok.decode([int(best[b, last[b]])]) for b in range(len(texts))]
