"""One typed config for every run.

The dotted names a user types (``--model.attention.scaling=none``) are the field paths of
:class:`RunConfig`; the ``Literal`` types below are the public toggle vocabulary of
DESIGN.md. jsonargparse turns command lines and YAML files into a ``RunConfig`` and
rejects values outside a ``Literal`` before any work starts; :func:`validate` adds the
cross-field checks (incompatible toggle pairs name both fields).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

# --- the toggle vocabulary (public contract, DESIGN.md) ---------------------------------
Arch = Literal["encoder", "decoder", "encoder_decoder"]
AttentionKind = Literal["dot", "additive"]
Scaling = Literal["sqrt_dk", "none", "dk", "learned", "qk_norm"]
Positional = Literal["none", "sinusoidal", "learned", "rope", "alibi"]
Norm = Literal["pre", "post"]
Objective = Literal["mlm_nsp", "mlm", "causal", "seq2seq", "none"]
Pooling = Literal["cls", "mean", "max", "last"]
FinetuneMode = Literal["full", "probe"]
PairFormat = Literal["sep", "concat"]
# --- extensions used by the experiments ------------------------------------------------
CrossAttention = Literal["full", "pooled"]  # Q3: decoder sees every encoder state, or one pooled state
AttentionImpl = Literal["sdpa", "reference"]  # fast path vs readable reference path (same maths)
AdditiveInit = Literal["bahdanau", "unit"]  # Q4: v_a starts at zero (Bahdanau) or N(0, 1) (grows like q.k)
Task = Literal[
    "corpus",  # multi-sentence documents: mlm / mlm_nsp / causal pretraining
    "retrieval",  # associative recall (Q1, Q4)
    "order",  # order-only classification (Q2)
    "reverse",  # seq2seq (Q3)
    "sort",  # seq2seq (Q3)
    "translate",  # seq2seq with reordering between two vocabularies (Q3)
    "lookup",  # offset lookup: the token k places before the query (Q1, Q2, Q4; needs positions)
    "single",  # single-sentence classification (Q5/Q6)
    "pair",  # sentence-pair classification (Q5/Q6)
    "pair_tag",  # sentence-pair token tagging: each word of A tagged with the mood of B's first clause (Q5/Q6; no boundary word)
]
Scale = Literal["smoke", "quick", "real", "full"]
WandbMode = Literal["auto", "online", "offline", "disabled"]


class ConfigError(ValueError):
    """A config that cannot run. The message is one line: what is wrong and what is valid."""


@dataclass
class AttentionConfig:
    """Attention (Q1, Q4): how queries meet keys."""

    kind: AttentionKind = "dot"
    """dot: q.k (Vaswani); additive: v.tanh(Wq + Uk) (Bahdanau)"""
    scaling: Scaling = "sqrt_dk"
    """scale the logits by 1/sqrt(d_k), none, 1/d_k, a learned scalar, or qk_norm (LayerNorm on q and k)"""
    impl: AttentionImpl = "sdpa"
    """sdpa: PyTorch's fused kernel; reference: the readable path (same maths)"""
    chunk_size: int = 64
    """additive attention: queries per chunk (bounds peak memory)"""
    additive_init: AdditiveInit = "bahdanau"
    """additive attention: v_a starts at zero (bahdanau) or N(0, 1) (unit: the score's std grows as sqrt(d_k))"""


@dataclass
class ModelConfig:
    """The model: one configurable Transformer (Q2, Q3 toggles and its size)."""

    arch: Arch = "encoder"
    """encoder (bidirectional), decoder (causal; prefix LM for seq2seq) or encoder_decoder"""
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    positional: Positional = "learned"
    """position information: none, sinusoidal, learned, rope or alibi"""
    segment_embeddings: bool = True
    """add a segment (sentence A/B) embedding"""
    d_model: int = 64
    """width of the residual stream"""
    n_heads: int = 4
    """attention heads per layer"""
    head_dim: int | None = None
    """d_k, the width of each head; null: d_model / n_heads"""
    n_layers: int = 2
    """Transformer blocks (per stack)"""
    d_ff: int = 256
    """hidden width of the feed-forward sublayer"""
    dropout: float = 0.0
    """dropout probability"""
    norm: Norm = "pre"
    """LayerNorm before each sublayer (pre) or after the residual sum (post)"""
    cross_attention: CrossAttention = "full"
    """encoder_decoder: attend to every encoder state (full) or to one pooled state (Q3)"""
    max_len: int = 512
    """learned positions and caches cover this many tokens"""
    vocab_size: int = 0
    """0: filled in from the tokenizer when the run is built"""

    @property
    def d_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    def check(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "d_ff", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be a positive integer")
        if self.head_dim is not None and self.head_dim <= 0:
            raise ConfigError(f"model.head_dim={self.head_dim} must be a positive integer (or null for d_model/n_heads)")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                "set model.head_dim explicitly or pick a divisor"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        if self.attention.chunk_size <= 0:
            raise ConfigError(f"model.attention.chunk_size={self.attention.chunk_size} must be a positive integer")
        if self.cross_attention != "full" and self.arch != "encoder_decoder":
            raise ConfigError(
                f"model.cross_attention={self.cross_attention} needs model.arch=encoder_decoder (got model.arch={self.arch})"
            )


@dataclass
class DataConfig:
    """Data: the task, its source and its batches."""

    source: str = "synthetic"
    """synthetic, file:<path> or hf:<name>[:<config>]"""
    task: Task = "corpus"
    """corpus (pretraining), retrieval, order, reverse, sort, translate, single, pair or pair_tag"""
    seq_len: int = 64
    """tokens per training example"""
    n_train: int = 2000
    """synthetic examples, or a cap on a real corpus (0 = all)"""
    n_val: int = 256
    """validation examples (same rule)"""
    vocab_size: int = 512
    """sentencepiece vocabulary (symbolic tasks use one token per symbol)"""
    pair_format: PairFormat = "sep"
    """sentence pairs as [CLS] a [SEP] b [SEP] (sep) or [CLS] a b [SEP] (concat)"""
    selection_split: bool = False
    """also evaluate on a disjoint held-out split, val_select/* (for tuning, e.g. Q1's per-arm lr)"""
    eval_length_multiples: list[int] = field(default_factory=list)
    """also evaluate at these multiples of seq_len, e.g. [2, 4]"""
    mlm_probability: float = 0.15
    """share of tokens chosen for masked-LM prediction"""
    batch_size: int = 32
    """global batch size (whatever the device count)"""
    num_workers: int = 0
    """DataLoader worker processes"""
    cache_dir: str = ".cache/transformer_ablations"
    """tokenizers and tokenized datasets are cached here"""
    tokenizer: str | None = None
    """null: train one on this run's training text; else reuse one (every arm of a comparison shares it): a
    sentencepiece .model file, a run directory or checkpoint, or auto:<sweep> (that sweep's finished run of this seed)"""

    def check(self, m: ModelConfig) -> None:
        for name in ("seq_len", "vocab_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.{name}={getattr(self, name)} must be a positive integer")
        for name in ("n_train", "n_val"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and self.source == "synthetic"):
                raise ConfigError(f"data.{name}={value} must be > 0 (0 means all examples, for a real corpus only)")
        longest = self.seq_len * max([1, *self.eval_length_multiples])
        if longest > m.max_len and m.positional == "learned":
            raise ConfigError(
                f"data.seq_len={self.seq_len} x data.eval_length_multiples={self.eval_length_multiples} needs {longest} "
                f"positions but model.max_len={m.max_len} with learned positions; raise model.max_len"
            )
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"data.mlm_probability={self.mlm_probability} must be in (0, 1)")


@dataclass
class FinetuneConfig:
    """Fine-tuning (Q5, Q6): what is loaded and how a sequence becomes one vector."""

    pretrained: str | None = None
    """checkpoint file, run directory, export folder, or auto:<sweep>"""
    pooling: Pooling = "cls"
    """pooling of the sequence for the classifier: cls, mean, max or last"""
    mode: FinetuneMode = "full"
    """full: train everything; probe: freeze the encoder, train a linear head"""


@dataclass
class TrainConfig:
    """Training: optimisation, validation, hardware and outputs."""

    max_steps: int = 300
    """optimizer steps"""
    lr: float = 1e-3
    """peak learning rate (AdamW, warmup then cosine)"""
    lr_from: str | None = None
    """auto:<sweep>: train.lr is the lr whose runs of that sweep (same settings) scored best on val_select"""
    warmup_steps: int = 30
    """linear warmup steps"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    grad_clip: float = 1.0
    """gradient norm clip (0: off)"""
    val_every: int = 100
    """steps between validations (and checkpoints)"""
    log_every: int = 10
    """steps between logged training metrics"""
    attn_stats_every: int = 50
    """steps between attention statistics (entropy, max prob, logit std)"""
    monitor: str = "val/loss"
    """metric of best.ckpt, also the sweep's metric"""
    monitor_mode: Literal["min", "max"] = "min"
    """whether lower or higher is better for monitor"""
    patience: int = 0
    """stop at the plateau: validations in a row where monitor on val_select does not improve by min_delta (0: train max_steps)"""
    min_delta: float = 0.0
    """the least change of monitor on val_select that counts as an improvement for patience"""
    accelerator: str = "auto"
    """cpu, gpu or auto"""
    devices: str = "1"
    """device count or list: 1, 2, 0,1 or auto"""
    strategy: str = "auto"
    """Lightning strategy, e.g. ddp"""
    precision: str = "32-true"
    """Lightning precision, e.g. bf16-mixed"""
    compile: bool = False
    """torch.compile the model"""
    peak_tflops: float | None = None
    """peak TFLOP/s for MFU; null: looked up for known GPUs"""
    out_dir: str = "runs"
    """runs go to <out_dir>/<experiment>/s<seed>-<hash>/"""
    wandb: WandbMode = "auto"
    """auto: online with a login, else offline"""

    def check(self) -> None:
        for name in ("max_steps", "val_every", "log_every", "attn_stats_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be a positive integer")
        if self.max_steps % self.val_every:
            raise ConfigError(
                f"train.max_steps={self.max_steps} must be a multiple of train.val_every={self.val_every} "
                "(runs validate and checkpoint every val_every steps)"
            )
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be > 0")
        if self.lr_from is not None and (not self.lr_from.startswith("auto:") or len(self.lr_from) <= 5):
            raise ConfigError(f"train.lr_from={self.lr_from} must be auto:<sweep> (the sweep whose runs choose the lr) or null")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps={self.warmup_steps} must be >= 0")
        for name in ("patience", "min_delta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 0")


@dataclass
class RunConfig:
    """One run: every toggle of the vocabulary, as dotted keys."""

    experiment: str = "default"
    """name of the experiment (the run folder's parent)"""
    scale: Scale = "quick"
    """smoke (seconds), quick (CPU minutes), real (real text on CPU) or full (GPUs): picks the experiment's scale block"""
    objective: Objective = "mlm"
    """pretraining objective: mlm_nsp, mlm, causal, seq2seq, or none (random init)"""
    seed: int = 0
    """seed of initialisation, data order and masking"""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SEED_RANGE = (0, 2**32 - 1)  # what numpy / Lightning's seed_everything accept


def _non_finite(obj: Any, prefix: str = "") -> tuple[str, float] | None:
    """The first float field of a config (dataclass tree) that is NaN or infinite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found = _non_finite(value, f"{prefix}{f.name}.")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{f.name}", value
    return None


def _check_numbers(cfg: RunConfig) -> None:
    """Numbers a ``Literal``/type check lets through: NaN/inf, and the ranges libraries enforce late."""
    found = _non_finite(cfg)
    if found:
        raise ConfigError(f"{found[0]}={found[1]} must be a finite number")
    lo, hi = SEED_RANGE
    if not lo <= cfg.seed <= hi:
        raise ConfigError(f"seed={cfg.seed} is outside the seeding range [{lo}, {hi}]")
    t, d = cfg.train, cfg.data
    for key, value in (("train.weight_decay", t.weight_decay), ("train.grad_clip", t.grad_clip),
                       ("data.num_workers", d.num_workers), ("model.vocab_size", cfg.model.vocab_size)):
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    if t.peak_tflops is not None and t.peak_tflops <= 0:
        raise ConfigError(f"train.peak_tflops={t.peak_tflops} must be > 0 (or null to look it up)")


def check_experiment_name(name: str) -> None:
    """A run lives in ``<train.out_dir>/<experiment>/``: the name must stay inside ``out_dir``."""
    bad = (not name.strip() or name.startswith(("/", "~")) or "\\" in name or "\0" in name
           or any(part.strip() in ("", ".", "..") for part in name.split("/")))
    if bad:
        raise ConfigError(
            f"experiment={name!r} must be a relative name under train.out_dir (no empty, absolute, `.` or `..` "
            "parts, no backslash), e.g. experiment=q1_scaling"
        )


def validate(cfg: RunConfig) -> RunConfig:
    """The checks of each section that a ``Literal`` cannot express (the task rules, objective x
    task x arch and the monitored metric, are the task registry's: ``tasks.check_run``).
    Raises :class:`ConfigError`."""
    check_experiment_name(cfg.experiment)
    _check_numbers(cfg)
    cfg.model.check()
    cfg.data.check(cfg.model)
    cfg.train.check()
    return cfg


# --- helpers used by run records, sweeps and the report ---------------------------------
def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'arch': 'encoder'}} -> {'model.arch': 'encoder'}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_hash(cfg: RunConfig) -> str:
    """Stable identity of a run: every field except where outputs go and how they are logged."""
    flat = flatten(to_dict(cfg))
    for k in ("train.out_dir", "train.wandb", "data.num_workers", "data.cache_dir", "train.accelerator"):
        flat.pop(k, None)
    blob = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def toggle_values() -> dict[str, tuple]:
    """The vocabulary as data: dotted key -> allowed values (for sweep and claims validation)."""
    return {
        "model.arch": get_args(Arch),
        "model.attention.kind": get_args(AttentionKind),
        "model.attention.scaling": get_args(Scaling),
        "model.attention.impl": get_args(AttentionImpl),
        "model.attention.additive_init": get_args(AdditiveInit),
        "model.positional": get_args(Positional),
        "model.segment_embeddings": (True, False),
        "model.norm": get_args(Norm),
        "model.cross_attention": get_args(CrossAttention),
        "objective": get_args(Objective),
        "finetune.pooling": get_args(Pooling),
        "finetune.mode": get_args(FinetuneMode),
        "data.pair_format": get_args(PairFormat),
        "data.task": get_args(Task),
        "scale": get_args(Scale),
    }


def all_keys() -> set[str]:
    """Every dotted key a user may set."""
    return set(flatten(to_dict(RunConfig())).keys())


def from_dict(d: dict, cls: type = RunConfig) -> Any:
    """Nested dict (as saved in checkpoints and config.yaml) -> dataclass. Unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise ConfigError(f"unknown key {cls.__name__}.{key}; valid keys: {', '.join(hints)}")
        hint = hints[key]
        kwargs[key] = from_dict(value, hint) if dataclasses.is_dataclass(hint) and isinstance(value, dict) else value
    return cls(**kwargs)
