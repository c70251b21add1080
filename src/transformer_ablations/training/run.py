"""``train(cfg)``: one run, start to finish, with its record on disk.

Importable and returns the run's summary (status and metrics). The same config always maps
to the same run directory: a finished run is reported and left alone, an unfinished one
resumes from its last checkpoint, bit-identically on CPU.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..config import ConfigError, RunConfig, to_dict
from ..data.datamodule import build_datamodule
from ..data.tokenizer import Tokenizer
from ..model import Transformer
from ..runs.lock import HELD_LOCK_ENV, RunLock, lock_path
from ..runs.records import (
    existing_record,
    new_summary,
    read_summary,
    run_dir_for,
    write_config,
    write_summary,
)
from ..runs.summary import FINAL, RunSummary, Status, count_nonfinite
from ..tasks import task_spec
from .callbacks import (
    AttentionStats,
    DivergenceGuard,
    InterruptCheck,
    PlateauStop,
    RunCheckpoint,
    RunDiverged,
    RunRecord,
    Throughput,
    logged_metrics,
    peak_rss_mb,
)
from .checkpoints import (
    AtomicCheckpointIO,
    adopt_pretrained_model,
    check_state_fits,
    load_state_strict,
    read_checkpoint,
    resolve_pretrained,
)
from .eval_records import ExampleRecorder
from .head_drops import HeadDrops
from .interrupts import RunInterrupted, interrupt_recorded, interrupts_raise, raise_if_interrupted
from .lr_select import adopt_selection_run, select_lr
from .module import AblationModule
from .progress import StepProgress
from .shared_tokenizer import check_same_tokenizer, shared_tokenizer
from .tracking import ResumableCSVLogger, check_wandb, make_wandb_logger
from .wandb_run import wandb_finished


def _quiet_libraries() -> None:
    """Our own progress (Rich bar, one result line) instead of library chatter."""
    import datasets

    datasets.disable_progress_bars()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.signal_connector"):  # "Received SIGTERM": ours says it
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def _check_writable(key: str, value: str, target: Path) -> None:
    """Refuse a location (``--<key>=<value>``) that cannot hold ``target`` before any work starts,
    and leave no trace: the first existing ancestor must be a directory in which a directory can
    be created (probed with a temporary directory that is removed at once; root ignores permission
    bits, so ``os.access`` alone cannot tell, e.g. for ``/proc/x`` or a read-only mount)."""
    probe = Path(os.path.expanduser(str(target)))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    where = f"{key}={value}"
    if not probe.is_dir():
        raise ConfigError(f"{where}: {probe} is a file, not a directory; choose a writable --{key}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ablate-write-probe-", dir=probe))
    except OSError as err:
        raise ConfigError(
            f"{where}: cannot create directories under {probe} ({err.strerror or type(err).__name__}); "
            f"choose a writable --{key}"
        ) from None


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of atomic writes that a killed process left behind (``.<name>.<random>.tmp``).
    Called with the run's lock held, so no live writer owns them."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


def _claim_run(run_dir: Path):
    """The run's exclusive lock (``<run_dir>.lock``, the executor's claim), or None when another
    process holds it. A process started by the executor (which holds the lock for it) skips it."""
    path = lock_path(run_dir)
    held = os.environ.get(HELD_LOCK_ENV)
    if held and Path(held).resolve() == path.resolve():
        return _NoLock()
    lock = RunLock(path)
    return lock if lock.try_acquire() else None


class _NoLock:
    def release(self, remove: bool = False) -> None:
        pass


def prepare(cfg: RunConfig):
    """Resolve the pretrained checkpoint, the data and the module (no training)."""
    cfg = copy.deepcopy(cfg)
    selection = select_lr(cfg)  # train.lr_from: the lr chosen on the selection sweep's val_select
    if selection is not None:
        cfg.train.lr = selection["lr"]
    pretrained_path = resolve_pretrained(cfg)
    pretrained = read_checkpoint(pretrained_path) if pretrained_path else None
    tokenizer = None
    if pretrained is not None:
        cfg.model = adopt_pretrained_model(cfg, pretrained)
        if not pretrained.get("tokenizer"):
            raise ConfigError(f"finetune.pretrained={pretrained_path}: the checkpoint has no tokenizer")
        tokenizer = Tokenizer.from_bytes(pretrained["tokenizer"])
        # architecture and vocabulary checked before any data is built (a skeleton on the meta device)
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            skeleton = Transformer(dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size))
        check_state_fits(skeleton, _backbone_state(pretrained), source=str(pretrained_path))
    shared = shared_tokenizer(cfg)  # data.tokenizer: one vocabulary for every arm, random init included
    if shared is not None and tokenizer is not None:
        check_same_tokenizer(cfg, shared, tokenizer, str(pretrained_path))
    task = task_spec(cfg.data.task)
    datamodule = build_datamodule(cfg, task, tokenizer=tokenizer or shared)
    datamodule.prepare_data()
    datamodule.setup("fit")
    cfg.model.vocab_size = datamodule.tokenizer.vocab_size
    tok = datamodule.tokenizer
    module = AblationModule(task.model(cfg, datamodule.num_classes), task, to_dict(cfg),
                            num_classes=datamodule.num_classes, val_names=datamodule.val_names,
                            tokenizer_bytes=tok.to_bytes(), special_ids={"bos_id": tok.bos_id, "eos_id": tok.eos_id})
    if pretrained is not None:
        load_state_strict(module.net.backbone, _backbone_state(pretrained), source=str(pretrained_path))
    if cfg.train.compile:  # in place: parameter names (and so checkpoints) stay those of the eager model
        module.net.compile()
    module.lr_selection = selection
    return cfg, datamodule, module


def _backbone_state(pretrained: dict) -> dict:
    return {k.removeprefix("net.backbone."): v for k, v in pretrained["state_dict"].items() if k.startswith("net.backbone.")}


def _exists(previous: RunSummary, run_dir: Path) -> dict:
    if _is_rank_zero():
        print(f"run exists ({previous.status}): {run_dir} — left untouched; change a setting or the seed for a new run")
    return {**previous.to_dict(), "status": "exists", "final_status": str(previous.status), "run_dir": str(run_dir)}


def train(cfg: RunConfig) -> dict:
    """Train one run; returns its summary as a plain dict (``status``, ``metrics``, ``run_dir`` …).

    The dict is the run's :class:`RunSummary` (``.to_dict()``, the keys of its ``summary.json``),
    except for the statuses no record holds: ``exists`` (plus ``final_status``, the record's),
    ``in_progress``. A dict, because callers (the CLI, sweep children, tests) index the result
    and these transient statuses are not run records; inside, every record is a RunSummary.

    Every input (config, trainer options, wandb mode, data, pretrained checkpoint, output
    location) is checked before the run directory is created. ``status`` is ``exists`` for a
    finished or diverged record (left untouched), ``in_progress`` when another process is training
    this run (its lock is held), and ``interrupted`` after SIGINT / SIGTERM (``signal`` names it;
    the record stays resumable)."""
    run_dir = run_dir_for(cfg)
    _quiet_libraries()
    check_trainer_options(cfg)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, wandb=check_wandb(cfg)))
    previous = existing_record(run_dir, cfg)  # a torn record of a finished run is rebuilt, or refused
    if previous and previous.status in FINAL:
        return _exists(previous, run_dir)
    _check_writable("train.out_dir", cfg.train.out_dir, run_dir)
    _check_writable("data.cache_dir", cfg.data.cache_dir, Path(cfg.data.cache_dir))
    _check_metrics_csv(run_dir)
    with interrupts_raise():
        try:
            return _train_claimed(cfg, run_dir)
        except RunInterrupted as err:  # before training or around it (its record, if any, is marked)
            return _record_interrupted(err, run_dir, None).to_dict()


def _train_claimed(cfg: RunConfig, run_dir: Path) -> dict:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resolved, datamodule, module = prepare(cfg)  # raises ConfigError for bad data or checkpoints
    raise_if_interrupted()  # a signal the data libraries swallowed

    lock = _claim_run(run_dir) if _is_rank_zero() else _NoLock()
    if lock is None:
        print(f"run in progress by another process: {run_dir}", file=sys.stderr)
        return {"status": "in_progress", "run_dir": str(run_dir), "metrics": {}}
    try:
        previous = existing_record(run_dir, cfg)  # again, under the lock: another process may have finished it
        if previous and previous.status in FINAL:
            return _exists(previous, run_dir)
        adopted = adopt_selection_run(cfg, run_dir, module.lr_selection)  # the same training, already done
        if adopted is not None:
            return adopted.to_dict()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"train.out_dir={cfg.train.out_dir}: cannot create {run_dir} ({err.strerror})") from None
        if _is_rank_zero():
            _remove_stale_temp_files(run_dir)
        with wandb_finished() as end:  # the wandb run ends here on every path, with the run's exit code
            summary = _train_locked(cfg, resolved, datamodule, module, run_dir, previous).to_dict()
            end.record = summary
        return summary
    finally:
        lock.release(remove=True)


def _train_locked(cfg: RunConfig, resolved: RunConfig, datamodule, module, run_dir: Path,
                  previous: RunSummary | None) -> RunSummary:
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    summary = new_summary(cfg)
    summary.run_dir = str(run_dir)
    if module.lr_selection is not None:  # what trained: the chosen lr, and how it was chosen
        summary.lr_selection = module.lr_selection
        summary.config = {**summary.config, "train.lr": resolved.train.lr}
    if previous:  # an interrupted run: keep its history, resume from the last checkpoint
        summary.wall_time_s_before = previous.wall_time_s or 0.0
        summary.resumed_from_step = previous.step if last_ckpt.is_file() else 0  # RunRecord sets the exact step
        summary.step = summary.resumed_from_step
    if _is_rank_zero():
        write_config(run_dir, resolved)
        write_summary(run_dir, summary)

    started = time.time()
    trainer = _make_trainer(resolved, run_dir, started)
    interrupted = None
    try:
        if last_ckpt.is_file() and not zipfile.is_zipfile(last_ckpt):
            raise RuntimeError(f"{last_ckpt} is not a readable checkpoint (truncated or overwritten); "
                               "restore it, or delete it to train the run from step 0")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last_ckpt) if last_ckpt.is_file() else None)
        raise_if_interrupted()  # a signal swallowed in fit's last stretch (after the last batch)
        summary.status = Status.FINISHED
    except RunDiverged as err:
        summary.status, summary.diverged_step, summary.error = Status.DIVERGED, err.step, str(err)
    except RunInterrupted as err:
        interrupted = err
    except SIGTERMException:  # Lightning's answer to a SIGTERM whose RunInterrupted a library swallowed (exit 0)
        interrupted = RunInterrupted(signal.SIGTERM)
    except Exception as err:  # noqa: BLE001 - any failure ends as a `failed` record with one line
        if os.environ.get("ABLATE_DEBUG") == "1":
            traceback.print_exc()
        summary.status, summary.error = Status.FAILED, failure_message(err)
    if interrupted is not None:
        return _record_interrupted(interrupted, run_dir, trainer)
    recorded = read_summary(run_dir)
    recorded_metrics = recorded.metrics if recorded else {}
    summary.metrics = {**recorded_metrics, **logged_metrics(trainer)}
    count_nonfinite(summary)
    if recorded and recorded.resumed_from_step is not None:  # the step of the checkpoint actually loaded
        summary.resumed_from_step = recorded.resumed_from_step
    if summary.status == Status.DIVERGED:  # the last finite values, not the NaN that ended the run
        summary.metrics = _finite_metrics(summary.metrics, recorded_metrics)
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_score is not None:
        summary.best = {resolved.train.monitor: float(callback.best_model_score)}
    summary.step = trainer.global_step
    stops = [c.plateau_step(trainer) for c in trainer.callbacks if isinstance(c, PlateauStop)]
    summary.plateau_step = stops[0] if stops else None
    summary.wall_time_s = (summary.wall_time_s_before or 0.0) + time.time() - started
    summary.tokens_per_s = summary.metrics.get("train/tokens_per_s")
    summary.peak_rss_mb = peak_rss_mb()
    summary.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    if trainer.is_global_zero:
        write_summary(run_dir, summary)
        _print_result(summary)
    return summary


def _record_interrupted(err: RunInterrupted, run_dir: Path, trainer: L.Trainer | None) -> RunSummary:
    """A `running` record becomes `interrupted`; it keeps the step and metrics of the last checkpoint
    (where a resume starts). Before the record exists there is nothing to mark (the summary returned
    then is not written)."""
    recorded = read_summary(run_dir)
    base = recorded or RunSummary(run_id=run_dir.name, experiment=None, status=Status.RUNNING, config={})
    summary = dataclasses.replace(base, status=Status.INTERRUPTED, signal=err.name, run_dir=str(run_dir))
    if recorded is not None and recorded.status == Status.RUNNING:
        # a trainer stopped before it restored last.ckpt still says step 0: the run stands at least at its checkpoint
        at = trainer.global_step if trainer is not None else 0
        summary.interrupted_at_step = max(at, recorded.step or 0)
        if _is_rank_zero():
            write_summary(run_dir, summary)
    interrupt_recorded()  # answered: the CLI's last check does not raise it again
    return summary


def check_trainer_options(cfg: RunConfig) -> None:
    """``train.accelerator``, ``devices``, ``strategy`` and ``precision`` as Lightning accepts them
    on this machine, checked by building a Trainer with them (nothing is written), so a bad
    string is a usage error before the run exists. A precision Lightning would silently swap
    (16-mixed on CPU trains bf16-mixed) is refused too: the record would name the wrong one."""
    t = cfg.train
    shown = f"train.accelerator={t.accelerator} train.devices={t.devices} train.strategy={t.strategy} " \
            f"train.precision={t.precision}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            L.Trainer(**_hardware(cfg), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
        except Exception as err:  # noqa: BLE001 - Lightning raises ValueError, TypeError, MisconfigurationException, ImportError
            text = " ".join(str(err).split())[:300]
            key = next((k for k in ("precision", "strategy", "devices", "accelerator") if k in text.lower()), None)
            where = f"train.{key}={getattr(t, key)}" if key else shown
            raise ConfigError(f"{where}: {text}") from None
    for w in caught:
        text = " ".join(str(w.message).split())
        if "precision" in text and "instead" in text:
            raise ConfigError(f"train.precision={t.precision}: {text[:300]}")


def _hardware(cfg: RunConfig) -> dict:
    t = cfg.train
    return {"accelerator": t.accelerator, "devices": int(t.devices) if t.devices.isdigit() else t.devices,
            "strategy": t.strategy, "precision": t.precision}


def _check_metrics_csv(run_dir: Path) -> None:
    """A resumed run appends to ``metrics.csv``: it must be a UTF-8 table with a ``step`` column."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
            for _ in csv.reader(fh):
                pass
    except (UnicodeDecodeError, csv.Error) as err:
        header, why = [], f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"
    else:
        why = "no `step` column in its header"
    if "step" not in header:
        raise ConfigError(f"{path} is not a metrics table ({why}); move it away or restore it, then run the same "
                          "command again to resume (rows from the last checkpoint on are logged again)")


def _finite_metrics(metrics: dict, recorded: dict) -> dict:
    """A metric that is NaN/inf now keeps its last finite recorded value (or is dropped)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            old = recorded.get(key)
            if isinstance(old, (int, float)) and math.isfinite(old):
                out[key] = old
            continue
        out[key] = value
    return out


def failure_message(err: BaseException) -> str:
    """One line saying why a run failed (out of memory and DataLoader worker crashes named as such)."""
    text = " ".join(str(err).split())[:300]
    kind = type(err).__name__
    if isinstance(err, MemoryError) or "out of memory" in text.lower():
        return (f"out of memory ({kind}{': ' + text if text else ''}); "
                "reduce data.batch_size, data.seq_len or the model size")
    if "DataLoader worker" in text:
        return f"DataLoader worker crashed ({kind}: {text}); rerun, or set data.num_workers=0 to debug"
    return f"{kind}: {text}" if text else kind


def _make_trainer(cfg: RunConfig, run_dir: Path, started: float) -> L.Trainer:
    t = cfg.train
    record = RunRecord(run_dir, started)
    checkpoint = RunCheckpoint(
        record,
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
        InterruptCheck(),  # a signal that library code swallowed stops the run at the next batch
        DivergenceGuard(),
        AttentionStats(t.attn_stats_every),
        Throughput(t.log_every, t.peak_tflops),
        record,
        checkpoint,
        ExampleRecorder(run_dir),
        HeadDrops(),  # Q3: per-head accuracy drops after the last validation (encoder_decoder only)
        LearningRateMonitor(logging_interval="step"),  # train/lr/<param group>, every log_every steps
    ]
    if t.patience:  # stop at the plateau of the selection split (never on val, the reported split)
        callbacks.append(PlateauStop(monitor="val_select/" + t.monitor.split("/", 1)[-1], mode=t.monitor_mode,
                                     patience=t.patience, min_delta=t.min_delta, check_on_train_epoch_end=False))
    callbacks.append(StepProgress(interactive=False if os.environ.get("CI") else None))  # bar on a TTY, else lines
    loggers = [ResumableCSVLogger(run_dir)]
    wandb_logger = make_wandb_logger(cfg, run_dir)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    return L.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        limit_train_batches=t.val_every,  # an "epoch" is val_every steps: validate + checkpoint at its end
        num_sanity_val_steps=0,
        **_hardware(cfg),
        gradient_clip_val=t.grad_clip or None,
        log_every_n_steps=t.log_every,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=True,
        enable_model_summary=False,
        deterministic=cfg.train.accelerator == "cpu",
        use_distributed_sampler=False,
    )


def _print_result(summary: RunSummary) -> None:
    """One line: status, run dir, the first validation metrics and, for a failed or diverged run, why."""
    keys = [k for k in summary.metrics if k.startswith("val") and "/" in k]
    shown = ", ".join(f"{k}={summary.metrics[k]:.4f}" for k in sorted(keys)[:6])
    why = f"  {summary.error}" if summary.error and summary.status != Status.FINISHED else ""
    print(f"[{summary.status}] {summary.run_dir}  {shown}  ({summary.wall_time_s:.1f}s){why}")
