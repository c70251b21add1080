"""Tasks: ``TASKS: dict[str, TaskSpec]``, what each ``data.task`` is made of (rules, examples,
collator, model, metrics). Adding a task is one ``TaskSpec`` entry plus its generator."""

from __future__ import annotations

from ..config import RunConfig
from .registry import (
    CLASSIFICATION,
    FAMILIES,
    LM,
    SEQ2SEQ,
    TASK_METRICS,
    TASKS,
    check_run,
    logged_metric_keys,
    task_spec,
    tasks_of,
)
from .spec import TaskFamily, TaskSpec, length_buckets, max_source_len

__all__ = ["CLASSIFICATION", "FAMILIES", "LM", "SEQ2SEQ", "TASKS", "TASK_METRICS", "TaskFamily", "TaskSpec",
           "build_datamodule", "build_model", "check_run", "length_buckets", "logged_metric_keys", "max_source_len", "prepare",
           "task_spec", "tasks_of"]


def prepare(cfg: RunConfig, tokenizer=None):
    """The tokenized, cached splits of ``cfg`` (``data.prepare.prepare`` with the task's spec)."""
    from ..data.prepare import prepare as prepare_splits

    return prepare_splits(cfg, task_spec(cfg.data.task), tokenizer)


def build_datamodule(cfg: RunConfig, tokenizer=None):
    """The Lightning data module of ``cfg`` (pulls in Lightning)."""
    from ..data.datamodule import build_datamodule as build

    return build(cfg, task_spec(cfg.data.task), tokenizer)


def build_model(cfg: RunConfig, num_classes: int | None = None):
    """The task model (plain ``nn.Module``) of ``cfg``."""
    return task_spec(cfg.data.task).model(cfg, num_classes)
