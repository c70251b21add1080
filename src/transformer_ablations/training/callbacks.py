"""Callbacks: the interrupt check, attention statistics, throughput and MFU, the divergence guard, the run record and checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import psutil
import torch
from lightning.fabric.utilities.throughput import Throughput as ThroughputMeter
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from ..runs.records import read_summary, write_summary
from .interrupts import raise_if_interrupted
from .tracking import ResumableCSVLogger, trim_metrics_csv


class InterruptCheck(L.Callback):
    """The safe points inside ``fit``: a signal that library code swallowed stops the run before its
    next batch (see :mod:`.interrupts`)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        raise_if_interrupted()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        raise_if_interrupted()


class RunDiverged(RuntimeError):
    """A non-finite loss or gradient. Raised to end the run; recorded as status ``diverged``."""

    def __init__(self, step: int, what: str):
        super().__init__(f"non-finite {what} at step {step}")
        self.step, self.what = step, what


class DivergenceGuard(L.Callback):
    """Ends the run at the first NaN/inf loss or gradient (before the optimizer applies it). Also logs
    the gradient norm into W_q/W_k, and its step-0 value as ``train/init_grad_norm_qk`` (Q1); that one is
    kept in the checkpoint (callback state) and logged again with every later value, so a resumed run
    records it too."""

    def __init__(self):
        self.init_qk: float | None = None

    def state_dict(self) -> dict:
        return {"init_qk": self.init_qk}

    def load_state_dict(self, state_dict: dict) -> None:
        self.init_qk = state_dict.get("init_qk")

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        # every DDP rank must take the same decision, or the others wait forever in the next all-reduce
        if trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False):
            raise RunDiverged(trainer.global_step, "loss")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if not torch.isfinite(norm):
            raise RunDiverged(trainer.global_step, "gradient")
        if trainer.global_step % pl_module.cfg.train.log_every == 0:
            pl_module.log("train/grad_norm", norm)
            qk = pl_module.net.backbone.query_key_grads()
            if qk:
                qk_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in qk]))
                pl_module.log("train/grad_norm_qk", qk_norm)
                if trainer.global_step == 0:  # Q1: the gradient into W_q/W_k at initialisation, kept apart
                    self.init_qk = float(qk_norm)
                if self.init_qk is not None:
                    pl_module.log("train/init_grad_norm_qk", self.init_qk)


class AttentionStats(L.Callback):
    """Every ``every`` steps the training forward also returns per-layer attention statistics
    (no second pass); they are logged as ``attn/<layer>/<stat>`` and ``attn/<stat>`` (layer mean). The
    layer means of the first step are also kept as ``attn/init/<stat>`` (Q1: at initialisation), in the
    checkpoint too (callback state), and logged again with every later statistic, so a resumed run keeps them."""

    def __init__(self, every: int):
        self.every = every
        self.first = False
        self.init: dict[str, float] = {}

    def state_dict(self) -> dict:
        return {"init": dict(self.init)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.init = dict(state_dict.get("init", {}))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.want_attention_stats = trainer.global_step % self.every == 0
        self.first = trainer.global_step == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stats = pl_module.last_attention_stats
        if not pl_module.want_attention_stats or not stats:
            return
        totals: dict[str, list[float]] = {}
        for layer in stats:
            for key, value in layer.items():
                if key == "name":
                    continue
                value = float(value)
                pl_module.log(f"attn/{layer['name']}/{key}", value, on_step=True, on_epoch=False)
                totals.setdefault(key, []).append(value)
        for key, values in totals.items():
            pl_module.log(f"attn/{key}", sum(values) / len(values), on_step=True, on_epoch=False)
            if self.first:
                self.init[key] = sum(values) / len(values)
        for key, value in self.init.items():
            pl_module.log(f"attn/init/{key}", value, on_step=True, on_epoch=False)
        pl_module.last_attention_stats = None


def batch_tokens(batch: dict) -> int:
    masks = [batch[k] for k in ("attention_mask", "src_mask", "tgt_mask") if k in batch]
    return int(sum(int(m.sum()) for m in masks))


class Throughput(L.Callback):
    """``train/tokens_per_s``, ``train/step_time_ms``, and from measured FLOPs ``train/tflops``
    and ``train/mfu`` (peak: ``train.peak_tflops`` or Lightning's table of known GPUs), over the
    last ``log_every`` steps, computed by Lightning's windowed :class:`~lightning.fabric.utilities.
    throughput.Throughput` from the time spent inside training steps.

    Not Lightning's ``ThroughputMonitor`` callback: it logs straight to the loggers, so its rates never
    reach ``callback_metrics`` and the run record (``summary.json``'s ``tokens_per_s``), and its clock
    runs from the start of training, so data loading, validations' neighbours and checkpoint writes
    count as step time."""

    def __init__(self, log_every: int, peak_tflops: float | None):
        self.log_every = log_every
        self.peak_tflops = peak_tflops
        self.flops_per_step: float | None = None
        self._t0 = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        peak = self.peak_tflops * 1e12 if self.peak_tflops else get_available_flops(pl_module.device, _compute_dtype(trainer))
        self.meter = ThroughputMeter(available_flops=peak, world_size=trainer.world_size, window_size=self.log_every + 1)
        self.totals = {"time": 0.0, "batches": 0, "samples": 0, "lengths": 0}
        self.meter.update(**self.totals, flops=0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.flops_per_step is None:
            self.flops_per_step = _measure_step_flops(pl_module, batch)  # per device
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        t = self.totals
        t["time"] += time.perf_counter() - self._t0
        t["batches"] += 1
        t["samples"] += len(batch["input_ids"] if "input_ids" in batch else next(iter(batch.values())))
        t["lengths"] += batch_tokens(batch)
        self.meter.update(**t, flops=int(self.flops_per_step or 0))
        if (trainer.global_step + 1) % self.log_every:
            return
        rates, world = self.meter.compute(), trainer.world_size
        if "device/items_per_sec" not in rates:  # the window is not full yet (just after a resume)
            return
        pl_module.log("train/tokens_per_s", rates["device/items_per_sec"] * world, on_step=True, on_epoch=False)
        pl_module.log("train/step_time_ms", 1000 / rates["device/batches_per_sec"], on_step=True, on_epoch=False)
        if self.flops_per_step:
            pl_module.log("train/tflops", rates["device/flops_per_sec"] * world / 1e12, on_step=True, on_epoch=False)
            if "device/mfu" in rates:
                pl_module.log("train/mfu", rates["device/mfu"], on_step=True, on_epoch=False)


def _compute_dtype(trainer) -> torch.dtype:
    precision = str(trainer.precision)
    return torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else torch.float32


def _measure_step_flops(pl_module, batch: dict) -> float:
    """Forward + backward FLOPs of one training step, counted by torch's FlopCounterMode. The RNG
    is forked so this extra pass draws no dropout mask from the run's stream (resume stays exact)."""
    was_training = pl_module.net.training
    devices = [pl_module.device] if pl_module.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            flops = measure_flops(pl_module.net, lambda: pl_module.net(batch).loss, lambda loss: loss)
    finally:
        pl_module.net.zero_grad(set_to_none=True)
        pl_module.net.train(was_training)
    return float(flops)


class PlateauStop(EarlyStopping):
    """``train.patience``: Lightning's early stopping on the selection split. A run killed after the
    stop was decided but before its record was written resumes already stopped: the decision is in the
    checkpoint's callback state, and training must not go on past it."""

    def on_train_start(self, trainer, pl_module) -> None:
        if self.stopped_epoch > 0:
            trainer.should_stop = True

    def plateau_step(self, trainer) -> int | None:
        """The step where this callback stopped the run, or None when it ran to ``max_steps``."""
        return trainer.global_step if self.stopped_epoch > 0 and trainer.global_step < trainer.max_steps else None


class RunRecord(L.Callback):
    """Keeps ``summary.json`` current: after every validation (called by :class:`RunCheckpoint` once
    that validation's checkpoint is on disk, so the ``step`` it records can always be resumed), and
    at the start of training (``resumed_from_step``: the step of the checkpoint actually loaded)."""

    def __init__(self, run_dir: Path, started: float):
        self.run_dir = Path(run_dir)
        self.started = started

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        start = trainer.global_step if trainer.ckpt_path is not None else 0
        trim_metrics_csv(self.run_dir / "metrics.csv", start)  # rows a killed attempt logged after `start`
        self._resumed = trainer.ckpt_path is not None
        summary = read_summary(self.run_dir) if trainer.ckpt_path is not None else None
        if summary is not None:  # train() wrote the record before fit
            summary.resumed_from_step = trainer.global_step
            write_summary(self.run_dir, summary)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """After a resume, Lightning's logging step (``_batches_that_stepped``) comes back one ahead
        for a checkpoint saved at an epoch end, as ours are (its restart logic assumes the save
        happened before the increment). Without gradient accumulation it equals the global step in
        an uninterrupted run: set it so, and metrics.csv rows keep their steps after a resume."""
        if not getattr(self, "_resumed", False):
            return
        self._resumed = False
        epoch_loop = trainer.fit_loop.epoch_loop
        if trainer.accumulate_grad_batches == 1 and hasattr(epoch_loop, "_batches_that_stepped"):
            epoch_loop._batches_that_stepped = trainer.global_step

    def on_validation_end(self, trainer, pl_module) -> None:
        """Flush metrics.csv before this validation's checkpoint is written (Lightning buffers 100
        steps of rows): a resumed run then finds every row up to its checkpoint on disk."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.save()

    def write(self, trainer) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        summary = read_summary(self.run_dir)
        if summary is None:  # train() writes the record before fit; without it there is nothing to update
            return
        summary.metrics = logged_metrics(trainer)
        summary.step = trainer.global_step
        summary.wall_time_s = (summary.wall_time_s_before or 0.0) + time.time() - self.started
        summary.peak_rss_mb = peak_rss_mb()
        write_summary(self.run_dir, summary)


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` (by ``train.monitor``) and ``last.ckpt`` after *every* validation, then the run
    record. (Lightning saves ``last`` only at a step where a top-k checkpoint was saved, i.e. when
    the monitored metric improved; a resumed run would then repeat every step since the best one.)"""

    def __init__(self, record: RunRecord, **kwargs):
        super().__init__(**kwargs)
        self.record = record

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._after_validation(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._after_validation(trainer)

    def _after_validation(self, trainer) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or trainer.fast_dev_run:
            return
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self.record.write(trainer)


def logged_metrics(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and of finished children) in MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(own, psutil.Process().memory_info().rss / 2**20)
