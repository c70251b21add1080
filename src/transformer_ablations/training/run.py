"""``train(cfg)``: one run, start to finish, with its record on disk.

Importable and returns the run's summary (status and metrics). The same config always maps
to the same run directory: a finished run is reported and left alone, an unfinished one
resumes from its last checkpoint, bit-identically on CPU.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from ..config import ConfigError, RunConfig, to_dict
from ..data.datamodule import build_datamodule
from ..data.tokenizer import Tokenizer
from .callbacks import AttentionStats, DivergenceGuard, RunDiverged, RunRecord, Throughput, logged_metrics, peak_rss_mb
from .checkpoints import AtomicCheckpointIO, adopt_pretrained_model, load_state_strict, read_checkpoint, resolve_pretrained
from .module import AblationModule
from .records import new_summary, read_summary, run_dir_for, write_config, write_summary
from .tracking import ResumableCSVLogger, make_wandb_logger

FINAL = ("finished", "diverged")


def _quiet_libraries() -> None:
    """Our own progress (Rich bar, one result line) instead of library chatter."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _world_size(cfg: RunConfig) -> int:
    devices = cfg.train.devices
    if devices.isdigit():
        return int(devices)
    if "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return 1


def _check_writable(path: Path) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise ConfigError(f"train.out_dir={path}: {probe} is not writable; choose a writable --train.out_dir")


def prepare(cfg: RunConfig):
    """Resolve the pretrained checkpoint, the data and the module (no training)."""
    cfg = copy.deepcopy(cfg)
    pretrained_path = resolve_pretrained(cfg)
    pretrained = read_checkpoint(pretrained_path) if pretrained_path else None
    tokenizer = None
    if pretrained is not None:
        cfg.model = adopt_pretrained_model(cfg, pretrained)
        tokenizer = Tokenizer.from_bytes(pretrained["tokenizer"])
    datamodule = build_datamodule(cfg, tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    cfg.model.vocab_size = datamodule.tokenizer.vocab_size
    module = AblationModule(to_dict(cfg), num_classes=datamodule.num_classes, val_names=datamodule.val_names)
    module.tokenizer_bytes = datamodule.tokenizer.to_bytes()
    module.special_ids = {"bos_id": datamodule.tokenizer.bos_id, "eos_id": datamodule.tokenizer.eos_id}
    if pretrained is not None:
        state = {
            k.removeprefix("net.backbone."): v for k, v in pretrained["state_dict"].items() if k.startswith("net.backbone.")
        }
        load_state_strict(module.net.backbone, state, source=str(pretrained_path))
    return cfg, datamodule, module


def train(cfg: RunConfig) -> dict:
    """Train one run; returns its summary dict (``status``, ``metrics``, ``run_dir`` …)."""
    run_dir = run_dir_for(cfg)
    previous = read_summary(run_dir)
    if previous and previous.get("status") in FINAL:
        if _is_rank_zero():
            print(f"run exists ({previous['status']}): {run_dir} — left untouched; change a setting or the seed for a new run")
        return {**previous, "status": "exists", "final_status": previous["status"], "run_dir": str(run_dir)}
    _check_writable(Path(cfg.train.out_dir))
    _quiet_libraries()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resolved, datamodule, module = prepare(cfg)

    run_dir.mkdir(parents=True, exist_ok=True)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    summary = new_summary(cfg)
    summary["run_dir"] = str(run_dir)
    if previous:  # an interrupted run: keep its history, resume from the last checkpoint
        summary["wall_time_s_before"] = previous.get("wall_time_s", 0.0)
        summary["resumed_from_step"] = previous.get("step")
    if _is_rank_zero():
        write_config(run_dir, resolved)
        write_summary(run_dir, summary)

    started = time.time()
    trainer = _make_trainer(resolved, run_dir, started)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last_ckpt) if last_ckpt.is_file() else None)
        summary["status"] = "finished"
    except RunDiverged as err:
        summary.update(status="diverged", diverged_step=err.step, error=str(err))
    except (MemoryError, RuntimeError, OSError) as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    summary["metrics"] = {**(read_summary(run_dir) or {}).get("metrics", {}), **logged_metrics(trainer)}
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_score is not None:
        summary["best"] = {resolved.train.monitor: float(callback.best_model_score)}
    summary.update(
        step=trainer.global_step,
        wall_time_s=summary.get("wall_time_s_before", 0.0) + time.time() - started,
        tokens_per_s=summary["metrics"].get("train/tokens_per_s"),
        peak_rss_mb=peak_rss_mb(),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
        _print_result(summary)
    return summary


def _make_trainer(cfg: RunConfig, run_dir: Path, started: float) -> L.Trainer:
    t = cfg.train
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=t.monitor,
        mode=t.monitor_mode,
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks = [
        DivergenceGuard(),
        AttentionStats(t.attn_stats_every),
        Throughput(t.log_every, t.peak_tflops),
        RunRecord(run_dir, started),
        checkpoint,
    ]
    interactive = sys.stderr.isatty() and os.environ.get("CI") is None
    if interactive:
        callbacks.append(RichProgressBar(leave=False))
    loggers = [ResumableCSVLogger(run_dir)]
    wandb_logger = make_wandb_logger(cfg, run_dir)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        limit_train_batches=t.val_every,  # an "epoch" is val_every steps: validate + checkpoint at its end
        num_sanity_val_steps=0,
        accelerator=t.accelerator,
        devices=t.devices if not t.devices.isdigit() else int(t.devices),
        strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip or None,
        log_every_n_steps=t.log_every,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=interactive,
        enable_model_summary=False,
        deterministic=cfg.train.accelerator == "cpu",
        use_distributed_sampler=False,
    )


def _print_result(summary: dict) -> None:
    keys = [k for k in summary["metrics"] if k.startswith("val") and "/" in k]
    shown = ", ".join(f"{k}={summary['metrics'][k]:.4f}" for k in sorted(keys)[:6])
    print(f"[{summary['status']}] {summary['run_dir']}  {shown}  ({summary['wall_time_s']:.1f}s)")
