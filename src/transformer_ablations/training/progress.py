"""Progress of one run in optimizer steps (``step 120/400``), not Lightning epochs.

A run's "epoch" is ``val_every`` steps and ``max_epochs`` is unbounded, so Lightning's bars read
``Epoch 1/-2`` and restart at every validation. This bar counts steps over ``train.max_steps``
(from the resumed step after a resume) and shows the train loss and the latest validation
metrics. On a terminal it is a Rich progress bar; otherwise (a log file, a sweep child, CI) it
prints one plain line per validation, flushed, so a log shows progress while the run goes.
"""

from __future__ import annotations

import sys
from typing import TextIO

from lightning.pytorch.callbacks import ProgressBar
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

SHOWN = 4  # validation metrics on the bar / in a line


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def validation_line(step: int, max_steps: int, metrics: dict[str, float]) -> str:
    """``step 4/8  val/acc=0.3538  val/loss=5.2287``: the plain line printed after a validation."""
    return f"step {step}/{max_steps}  {format_metrics(metrics)}".rstrip()


class StepProgress(ProgressBar):
    """Steps over ``max_steps``. ``interactive=None``: a bar when ``stream`` is a terminal."""

    def __init__(self, interactive: bool | None = None, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream
        self.interactive = interactive
        self._enabled = True
        self._progress: Progress | None = None
        self._task = None
        self._val = ""

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def _metrics(self, trainer, prefix: str) -> dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and v.numel() == 1}

    def on_train_start(self, trainer, pl_module) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        interactive = self.interactive if self.interactive is not None else self._out().isatty()
        if not interactive:
            return
        self._progress = Progress(
            TextColumn("step"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
            console=Console(file=self._out()), transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=trainer.max_steps, completed=trainer.global_step, metrics="")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._progress is None:
            return
        text = format_metrics(self._metrics(trainer, "train/loss"))
        self._progress.update(self._task, completed=trainer.global_step, metrics="  ".join(filter(None, [text, self._val])))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not (self._enabled and trainer.is_global_zero):
            return
        metrics = dict(sorted(self._metrics(trainer, "val").items())[:SHOWN])
        if self._progress is None:
            print(validation_line(trainer.global_step, trainer.max_steps, metrics), file=self._out(), flush=True)
            return
        self._val = format_metrics(metrics)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
