"""Checkpoints: atomic saving, loading for reuse, safetensors export, and clear mismatch errors.

A checkpoint carries everything needed to rebuild its model: the resolved run config
(``hyper_parameters.config``), the number of classes, and the sentencepiece model bytes
(``tokenizer``). :func:`load_pretrained` needs nothing else.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write_bytes, atomic_write_text
from ..config import ConfigError, ModelConfig, RunConfig, flatten, from_dict, to_dict
from ..data.tokenizer import Tokenizer
from ..model import build_task_model
from .records import read_summary

EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_TOKENIZER = "model.safetensors", "config.json", "tokenizer.model"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but temp file + rename: a kill mid-write keeps the old file."""

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
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch.load raises any type on a corrupted archive or pickle
        raise ConfigError(f"{p}: corrupted checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt.get("hyper_parameters", {}):
        raise ConfigError(f"{p}: not a transformer_ablations checkpoint (no state_dict / hyper_parameters.config)")
    return ckpt


def _read_export(directory: Path) -> dict:
    try:
        meta = json.loads((directory / EXPORT_CONFIG).read_text())
        weights = load_file(str(directory / EXPORT_WEIGHTS))
        tokenizer = (directory / EXPORT_TOKENIZER).read_bytes()
    except Exception as err:  # noqa: BLE001 - OSError, JSONDecodeError, safetensors' own errors
        raise ConfigError(f"{directory}: not a complete export ({type(err).__name__}: {err})") from None
    return {
        "state_dict": {f"net.{k}": v for k, v in weights.items()},
        "hyper_parameters": {"config": meta["config"], "num_classes": meta.get("num_classes")},
        "tokenizer": tokenizer,
    }


def load_pretrained(path: str | Path) -> tuple[torch.nn.Module, Tokenizer, RunConfig]:
    """Rebuild (task model, tokenizer, config) from a checkpoint, run dir or export dir."""
    p = Path(path)
    ckpt = read_checkpoint(p / EXPORT_WEIGHTS if (p / EXPORT_CONFIG).is_file() else checkpoint_file(p))
    cfg = from_dict(ckpt["hyper_parameters"]["config"])
    model = build_task_model(cfg, ckpt["hyper_parameters"].get("num_classes"))
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    load_state_strict(model, state, source=str(path))
    if not ckpt.get("tokenizer"):
        raise ConfigError(f"{path}: checkpoint has no tokenizer")
    return model, Tokenizer.from_bytes(ckpt["tokenizer"]), cfg


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
    """Write ``model.safetensors`` + ``config.json`` + ``tokenizer.model`` (re-importable)."""
    ckpt = read_checkpoint(checkpoint_file(checkpoint, what="checkpoint"))
    if not ckpt.get("tokenizer"):
        raise ConfigError(f"checkpoint={checkpoint}: has no tokenizer; export needs a checkpoint written by ablate fit")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out_dir={out_dir}: cannot create it ({err.strerror or type(err).__name__}); "
                          "choose a writable directory") from None
    weights = {k.removeprefix("net."): v.contiguous() for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    tmp = out / f".{EXPORT_WEIGHTS}.tmp"
    save_file(_untie(weights), str(tmp))
    tmp.replace(out / EXPORT_WEIGHTS)
    meta = {"config": ckpt["hyper_parameters"]["config"], "num_classes": ckpt["hyper_parameters"].get("num_classes")}
    atomic_write_text(out / EXPORT_CONFIG, json.dumps(meta, indent=2))
    atomic_write_bytes(out / EXPORT_TOKENIZER, ckpt["tokenizer"])
    return out


def _untie(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings); store each tensor on its own."""
    seen: dict[int, str] = {}
    out = {}
    for key, tensor in weights.items():
        ptr = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.setdefault(ptr, key)
    return out


# --- pretrained checkpoints for fine-tuning -------------------------------------------------
def resolve_pretrained(cfg: RunConfig) -> Path | None:
    """``finetune.pretrained``: a path, or ``auto:<sweep>`` = the finished run of that sweep
    (in the same out_dir) with this run's objective and seed. ``objective=none``: random init."""
    spec = cfg.finetune.pretrained
    if cfg.objective == "none" or not spec:
        return None
    if not spec.startswith("auto:"):
        return checkpoint_file(spec)
    sweep = spec.removeprefix("auto:")
    root = Path(cfg.train.out_dir) / sweep
    for run_dir in sorted(root.glob("*/")):
        summary = read_summary(run_dir) or {}
        conf = summary.get("config", {})
        if summary.get("status") == "finished" and conf.get("objective") == cfg.objective and conf.get("seed") == cfg.seed:
            return checkpoint_file(run_dir)
    raise ConfigError(
        f"finetune.pretrained={spec}: no finished {sweep} run with objective={cfg.objective} seed={cfg.seed} "
        f"under {root}; run `ablate sweep sweeps/{sweep}.yaml` first"
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
