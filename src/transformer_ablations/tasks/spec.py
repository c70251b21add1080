"""The task registry: ``TASKS: dict[str, TaskSpec]``, one entry per ``data.task``.

A :class:`TaskSpec` says, for one task, which objectives and architectures are valid, how its
examples are made (the generator), which collator batches them, which model is built, and which
metric keys a run logs (``train.monitor`` must be one of them). A task belongs to a
:class:`TaskFamily` (language modelling, classification, seq2seq), which holds what the tasks of a
family share: the rules, the collator, the model and the metrics. Adding a task is one
``TaskSpec`` entry plus its generator; adding an objective is one entry of a family's objectives.

Nothing here imports torch: the collators and models are imported when they are built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, RunConfig

FamilyName = Literal["lm", "classification", "seq2seq"]


def max_source_len(seq_len: int) -> int:
    """The longest seq2seq source whose prefix-LM row (source [SEP] target, |target| = |source|) fits seq_len."""
    return (seq_len - 1) // 2


def length_buckets(seq_len: int, n: int = 4) -> list[int]:
    """Upper bounds of source-length buckets for exact match vs length (Q3: ``val/exact_match_src<N>``):
    ``n`` equal widths over the real source range [1, :func:`max_source_len`] (sources never fill seq_len)."""
    top = max(1, max_source_len(seq_len))
    return sorted({max(1, math.ceil(top * (i + 1) / n)) for i in range(n)})


@dataclass(frozen=True)
class TaskFamily:
    """What the tasks of one family share.

    ``metrics``: the names logged per validation set (``<val set>/<name>``);
    ``archs``: objective -> the valid ``model.arch`` values;
    ``collator(cfg, tokenizer, max_len, kind)`` and ``model(cfg, num_classes)`` build the pieces;
    ``extra_keys(cfg)``: metric keys logged once (``val/nsp_acc``, exact match by length)."""

    name: FamilyName
    metrics: tuple[str, ...]
    archs: Mapping[str, tuple[str, ...]]
    check: Callable[[RunConfig, TaskSpec], None]
    collator: Callable[..., Any]
    model: Callable[..., Any]
    extra_keys: Callable[[RunConfig], list[str]]

    def kind(self, objective: str) -> str:
        """The batch kind of the data (mlm, mlm_nsp, causal, seq2seq or classification)."""
        return objective if self.name == "lm" else self.name

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.archs)


@dataclass(frozen=True)
class TaskSpec:
    """One ``data.task``: its family, its example generator and the facts of its data.

    ``examples`` is the generator of a synthetic task (None: the family's own builder);
    ``num_classes`` of a synthetic classification task; ``min_seq_len`` the shortest row it fits in."""

    name: str
    family: TaskFamily
    min_seq_len: int
    examples: Callable[..., Any] | None = None
    num_classes: int | None = None
    synthetic_only: bool = False
    length_sets: bool = True  # val_len<m>x sets (length generalisation) exist for its synthetic data
    pairs: bool = False  # classification of sentence pairs (text_a, text_b)
    words: Callable[[RunConfig], list[str]] | None = None  # its synthetic vocabulary (None: synthetic.vocabulary)
    target: str = "label"  # the row's target column: "label" (one per row) or "tags" (one per word of A)

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.family.objectives

    def collator(self, cfg: RunConfig, tokenizer, max_len: int, kind: str):
        return self.family.collator(cfg, tokenizer, max_len, kind)

    def model(self, cfg: RunConfig, num_classes: int | None = None):
        """The task model (a plain ``nn.Module``) of ``cfg``."""
        return self.family.model(cfg, num_classes)

    def kind(self, objective: str) -> str:
        return self.family.kind(objective)

    def metric_keys(self, cfg: RunConfig) -> list[str]:
        """Every key a run of ``cfg`` logs that a checkpoint can monitor (validation keys and ``train/loss``)."""
        sets = ["val", *(["val_select"] if cfg.data.selection_split else []),
                *(f"val_len{m}x" for m in cfg.data.eval_length_multiples if isinstance(m, int))]
        keys = [f"{s}/{name}" for s in sets for name in self.family.metrics]
        return [*keys, *self.family.extra_keys(cfg), "train/loss"]

    def check(self, cfg: RunConfig) -> None:
        """The rules of objective x task x arch, then the monitored metric. Raises :class:`ConfigError`."""
        self.family.check(cfg, self)
        keys = self.metric_keys(cfg)
        if cfg.train.monitor not in keys:
            raise ConfigError(
                f"train.monitor={cfg.train.monitor} is not logged by data.task={cfg.data.task} "
                f"(objective={cfg.objective}); valid: {', '.join(keys)}"
            )
        self._check_patience(cfg, keys)

    @staticmethod
    def _check_patience(cfg: RunConfig, keys: list[str]) -> None:
        """Early stopping reads the selection split (stopping on ``val`` would select on the reported
        split), and never cuts short an evaluation that runs after the last step (Q3's head drops)."""
        if not cfg.train.patience:
            return
        watched = "val_select/" + cfg.train.monitor.split("/", 1)[-1]
        if watched not in keys:
            raise ConfigError(
                f"train.patience={cfg.train.patience} stops on {watched}, which needs data.selection_split=true "
                f"and a validation train.monitor (got data.selection_split={str(cfg.data.selection_split).lower()}, "
                f"train.monitor={cfg.train.monitor})"
            )
        if cfg.model.arch == "encoder_decoder":
            raise ConfigError(
                f"train.patience={cfg.train.patience} with model.arch=encoder_decoder: the head-drop evaluation runs "
                "after the last step, which early stopping would skip; set train.patience=0"
            )
