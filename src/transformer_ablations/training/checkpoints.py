"""Checkpoints: atomic saving, loading for reuse, Hugging Face-style export, and clear mismatch errors.

A checkpoint carries everything needed to rebuild its model: the resolved run config
(``hyper_parameters.config``), the number of classes, and the sentencepiece model bytes
(``tokenizer``). :func:`load_pretrained` needs nothing else. Checkpoints load with
``torch.load(weights_only=True)``: tensors and plain data only (plus the package's config
dataclasses, allow-listed), so a file holding arbitrary objects is refused, never executed.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..atomic import atomic_write_bytes
from ..config import (
    AttentionConfig,
    ConfigError,
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    flatten,
    from_dict,
    to_dict,
)
from ..data.tokenizer import Tokenizer
from ..runs.records import read_summary
from ..runs.summary import Status
from ..tasks.pretrained import CONFIG as EXPORT_CONFIG
from ..tasks.pretrained import WEIGHTS as EXPORT_WEIGHTS
from ..tasks.pretrained import PretrainedTransformer

# the package's own classes a checkpoint may hold besides tensors and plain data
SAFE_GLOBALS = [RunConfig, ModelConfig, AttentionConfig, DataConfig, FinetuneConfig, TrainConfig]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but temp file in the target's folder + fsync + rename: a kill
    mid-write keeps the old file. (Lightning's own ``_atomic_save`` goes through an fsspec
    transaction whose temp file is made by ``tempfile.mkstemp()`` in the system temp folder and then
    ``shutil.move``-d: across filesystems that is a copy, torn by a kill, and nothing is fsynced; a
    kill also leaves the temp file behind in /tmp. So this stays.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


def checkpoint_file(path: str | Path, what: str = "finetune.pretrained") -> Path:
    """A checkpoint file, or a run directory (its best, else last, checkpoint). ``what`` names the
    input in error messages."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / "best.ckpt", p / "checkpoints" / "last.ckpt", p / EXPORT_WEIGHTS):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"{what}={path}: no checkpoints/best.ckpt, last.ckpt or {EXPORT_WEIGHTS} there; "
                          "give a .ckpt file, a run directory or an export directory")
    if not p.is_file():
        raise ConfigError(f"{what}={path}: no such file or run directory; give a .ckpt file or a run directory")
    return p


def read_checkpoint(path: str | Path) -> dict:
    """torch.load with one-line errors for truncated, corrupted or foreign files."""
    p = Path(path)
    if p.suffix == ".safetensors" or p.name == EXPORT_WEIGHTS:
        return _read_export(p.parent)
    if not zipfile.is_zipfile(p):
        raise ConfigError(f"{p}: not a checkpoint (not a torch zip archive; truncated or another file type)")
    try:  # torch.load does not verify the archive's CRC-32s: flipped bytes would load as wrong weights
        with zipfile.ZipFile(p) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ConfigError(f"{p}: corrupted checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if bad is not None:
        raise ConfigError(f"{p}: corrupted checkpoint (CRC mismatch in {bad}); use another checkpoint or retrain")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"{p}: refused: the checkpoint holds objects other than tensors and plain data "
            f"({str(err).splitlines()[-1][:120]}); load only checkpoints written by ablate fit"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch.load raises any type on a corrupted archive or pickle
        raise ConfigError(f"{p}: corrupted checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt.get("hyper_parameters", {}):
        raise ConfigError(f"{p}: not a transformer_ablations checkpoint (no state_dict / hyper_parameters.config)")
    return ckpt


def _read_export(directory: Path) -> dict:
    """An export folder as a checkpoint dict (for fine-tuning from it)."""
    model = _from_export(directory)
    return {
        "state_dict": {f"net.{k}": v for k, v in model.net.state_dict().items()},
        "hyper_parameters": {"config": to_dict(model.run_config), "num_classes": model.num_classes},
        "tokenizer": model.tokenizer.to_bytes(),
    }


def _from_export(directory: Path) -> PretrainedTransformer:
    try:
        return PretrainedTransformer.from_pretrained(directory)
    except Exception as err:  # noqa: BLE001 - OSError, JSONDecodeError, TypeError, safetensors' own errors
        raise ConfigError(f"{directory}: not a complete export ({type(err).__name__}: {err})") from None


def load_pretrained(path: str | Path) -> PretrainedTransformer:
    """A checkpoint, run directory or export folder -> the trained model, in eval mode, with
    ``.net`` (the task model), ``.tokenizer``, ``.run_config``, ``encode(texts)`` and ``predict(texts)``."""
    p = Path(path)
    if (p / EXPORT_CONFIG).is_file():
        return _from_export(p)
    ckpt = read_checkpoint(checkpoint_file(p))
    if not ckpt.get("tokenizer"):
        raise ConfigError(f"{path}: checkpoint has no tokenizer")
    cfg = from_dict(ckpt["hyper_parameters"]["config"])
    model = PretrainedTransformer.from_run_config(cfg, ckpt["hyper_parameters"].get("num_classes"))
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    load_state_strict(model.net, state, source=str(path))
    model.run_config, model.tokenizer = cfg, Tokenizer.from_bytes(ckpt["tokenizer"])
    return model.eval()


def load_state_strict(module: torch.nn.Module, state: dict, source: str) -> None:
    """load_state_dict, but a mismatch becomes one line naming the first differing tensor."""
    check_state_fits(module, state, source)
    module.load_state_dict(state)


def check_state_fits(module: torch.nn.Module, state: dict, source: str) -> None:
    """The keys and shapes of ``state`` are those of ``module`` (which may live on the meta device);
    else a one-line :class:`ConfigError` naming the first difference."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"{source}: checkpoint does not fit this architecture (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise ConfigError(
                f"{source}: tensor {key} has shape {tuple(tensor.shape)} in the checkpoint, "
                f"{tuple(own[key].shape)} in this model (different size or vocabulary)"
            )


def export(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """``save_pretrained``: ``config.json`` (model fields), ``model.safetensors``, ``tokenizer.model``
    and a model card, each file moved into ``out_dir`` whole (written in a sibling temp folder)."""
    model = load_pretrained(checkpoint_file(checkpoint, what="checkpoint"))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise ConfigError(f"out_dir={out_dir}: cannot create it ({err.strerror or type(err).__name__}); "
                          "choose a writable directory") from None
    try:
        model.save_pretrained(staging)
        for f in staging.iterdir():
            os.replace(f, out / f.name)
    finally:
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()
    return out


def pretrained_objective(spec: str | Path) -> str:
    """The objective a checkpoint, run directory or export folder was pretrained with."""
    p = Path(spec)
    if (p / EXPORT_CONFIG).is_file():
        return _from_export(p).run_config.objective
    return from_dict(read_checkpoint(checkpoint_file(p))["hyper_parameters"]["config"]).objective


# --- pretrained checkpoints for fine-tuning -------------------------------------------------
def resolve_pretrained(cfg: RunConfig) -> Path | None:
    """``finetune.pretrained``: a path, or ``auto:<sweep>`` = the finished run of that sweep
    (in the same out_dir) with this run's objective, seed and ``model.segment_embeddings`` (Q6
    fine-tunes encoders pretrained with and without segment embeddings). ``objective=none``: random init."""
    spec = cfg.finetune.pretrained
    if cfg.objective == "none" or not spec:
        return None
    if not spec.startswith("auto:"):
        return checkpoint_file(spec)
    sweep = spec.removeprefix("auto:")
    root = Path(cfg.train.out_dir) / sweep
    for run_dir in sorted(root.glob("*/")):
        summary = read_summary(run_dir)
        if summary is None:
            continue
        conf = summary.config
        segments = conf.get("model.segment_embeddings", True)  # the record's config is flat (dotted keys)
        if (summary.status == Status.FINISHED and conf.get("objective") == cfg.objective
                and conf.get("seed") == cfg.seed and segments == cfg.model.segment_embeddings):
            return checkpoint_file(run_dir)
    raise ConfigError(
        f"finetune.pretrained={spec}: no finished {sweep} run with objective={cfg.objective} seed={cfg.seed} "
        f"model.segment_embeddings={str(cfg.model.segment_embeddings).lower()} under {root}; "
        f"run `ablate sweep {sweep}` first"
    )


def adopt_pretrained_model(cfg: RunConfig, pretrained: dict) -> ModelConfig:
    """The fine-tuning model is the pretrained one. A model key the user set to a non-default
    value that contradicts the checkpoint is an error naming both values."""
    theirs = from_dict(pretrained["hyper_parameters"]["config"])
    if theirs.objective != cfg.objective:
        raise ConfigError(
            f"objective={cfg.objective} but the pretrained checkpoint was trained with objective={theirs.objective}"
        )
    defaults = flatten(to_dict(ModelConfig()))
    ours, ckpt = flatten(to_dict(cfg.model)), flatten(to_dict(theirs.model))
    for key, value in ours.items():
        if key in ("dropout", "attention.impl", "attention.chunk_size") or value == defaults[key]:
            continue
        if ckpt[key] != value:
            raise ConfigError(f"model.{key}={value} but the pretrained checkpoint has model.{key}={ckpt[key]}")
    model = theirs.model
    model.dropout, model.attention.impl = cfg.model.dropout, cfg.model.attention.impl
    model.attention.chunk_size = cfg.model.attention.chunk_size
    return model
