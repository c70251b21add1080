"""``data.tokenizer``: one tokenizer shared by every arm of a comparison.

A pretrained arm reads its tokenizer from its checkpoint. A random-init arm (``objective=none``)
would otherwise train its own on the downstream task's text, and the arms would then differ in
their vocabulary as well as in their weights. ``data.tokenizer`` names the one to use:

- a sentencepiece ``.model`` file, or an ``ablate export`` folder (its ``tokenizer.model``);
- a checkpoint or a run directory (the tokenizer inside its checkpoint);
- ``auto:<sweep>``: that sweep's finished run with this run's seed (in the same ``train.out_dir``),
  as ``finetune.pretrained: auto:<sweep>`` finds a checkpoint.

When the run also loads a pretrained checkpoint, its tokenizer must be the same one (same model
bytes), else the run stops with a one-line error before any data is built.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, RunConfig
from ..data.tokenizer import Tokenizer
from ..runs.records import read_summary
from ..runs.summary import Status
from .checkpoints import checkpoint_file, read_checkpoint


def shared_tokenizer(cfg: RunConfig) -> Tokenizer | None:
    """The tokenizer ``data.tokenizer`` names (None when it is null)."""
    spec = cfg.data.tokenizer
    if not spec:
        return None
    path = _auto_run(cfg, spec.removeprefix("auto:")) if spec.startswith("auto:") else Path(spec).expanduser()
    if path.is_file() and path.suffix == ".model":
        return Tokenizer.from_file(path)
    if path.is_dir() and (path / "tokenizer.model").is_file():  # an export folder
        return Tokenizer.from_file(path / "tokenizer.model")
    ckpt = read_checkpoint(checkpoint_file(path, what="data.tokenizer"))
    if not ckpt.get("tokenizer"):
        raise ConfigError(f"data.tokenizer={spec}: the checkpoint {path} holds no tokenizer")
    return Tokenizer.from_bytes(ckpt["tokenizer"])


def _auto_run(cfg: RunConfig, sweep: str) -> Path:
    root = Path(cfg.train.out_dir) / sweep
    for run_dir in sorted(root.glob("*/")):
        summary = read_summary(run_dir)
        if summary is not None and summary.status == Status.FINISHED and summary.config.get("seed") == cfg.seed:
            return run_dir
    raise ConfigError(f"data.tokenizer=auto:{sweep}: no finished {sweep} run with seed={cfg.seed} under {root}; "
                      f"run `ablate sweep {sweep}` first")


def check_same_tokenizer(cfg: RunConfig, shared: Tokenizer, pretrained: Tokenizer, source: str) -> None:
    """A pretrained arm's tokenizer is the shared one (same model bytes)."""
    if shared.hash != pretrained.hash:
        raise ConfigError(
            f"data.tokenizer={cfg.data.tokenizer} (sentencepiece {shared.hash[:10]}) is not the tokenizer of "
            f"finetune.pretrained={source} ({pretrained.hash[:10]}): the arms would not share one vocabulary"
        )
