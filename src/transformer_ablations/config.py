"""One typed config for every run.

The dotted names a user types (``--model.attention.scaling=none``) are the field paths of
:class:`RunConfig`; the ``Literal`` types below are the public toggle vocabulary of
DESIGN.md. jsonargparse turns command lines and YAML files into a ``RunConfig`` and
rejects values outside a ``Literal`` before any work starts; :func:`validate` adds the
cross-field checks (incompatible toggle pairs name both fields).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import yaml

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
    "lookup",  # offset lookup: the token k places before the query (Q2, decoder; needs positions)
    "single",  # single-sentence classification (Q5/Q6)
    "pair",  # sentence-pair classification (Q5/Q6)
]
Scale = Literal["smoke", "quick", "full"]
WandbMode = Literal["auto", "online", "offline", "disabled"]


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


@dataclass
class DataConfig:
    """Data: the task, its source and its batches."""

    source: str = "synthetic"
    """synthetic, file:<path> or hf:<name>[:<config>]"""
    task: Task = "corpus"
    """corpus (pretraining), retrieval, order, reverse, sort, translate, single or pair"""
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


@dataclass
class RunConfig:
    """One run: every toggle of the vocabulary, as dotted keys."""

    experiment: str = "default"
    """name of the experiment (the run folder's parent)"""
    scale: Scale = "quick"
    """smoke (seconds), quick (CPU minutes) or full (GPUs): picks the experiment's scale block"""
    objective: Objective = "mlm"
    """pretraining objective: mlm_nsp, mlm, causal, seq2seq, or none (random init)"""
    seed: int = 0
    """seed of initialisation, data order and masking"""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    """A config that cannot run. The message is one line: what is wrong and what is valid."""


CLASSIFICATION_TASKS = ("order", "single", "pair", "retrieval", "lookup")
SEQ2SEQ_TASKS = ("reverse", "sort", "translate")
SEED_RANGE = (0, 2**32 - 1)  # what numpy / Lightning's seed_everything accept

# The metric names each kind of task logs per validation set (``<val set>/<name>``); the
# LightningModule (training/module.py) logs exactly these, and `train.monitor` must be one of them.
TASK_METRICS = {
    "lm": ("loss", "acc", "ppl"),  # data.task=corpus
    "classification": ("loss", "acc", "f1", "mcc"),
    "seq2seq": ("loss", "token_acc", "ppl"),
}


def task_kind(task: str) -> str:
    return "classification" if task in CLASSIFICATION_TASKS else "seq2seq" if task in SEQ2SEQ_TASKS else "lm"


def max_source_len(seq_len: int) -> int:
    """The longest seq2seq source whose prefix-LM row (source [SEP] target, |target| = |source|) fits seq_len."""
    return (seq_len - 1) // 2


def length_buckets(seq_len: int, n: int = 4) -> list[int]:
    """Upper bounds of source-length buckets for exact match vs length (Q3: ``val/exact_match_src<N>``):
    ``n`` equal widths over the real source range [1, :func:`max_source_len`] (sources never fill seq_len)."""
    top = max(1, max_source_len(seq_len))
    return sorted({max(1, math.ceil(top * (i + 1) / n)) for i in range(n)})


def logged_metric_keys(cfg: RunConfig) -> list[str]:
    """Every key a run of ``cfg`` logs that a checkpoint can monitor (validation keys and ``train/loss``)."""
    kind = task_kind(cfg.data.task)
    sets = ["val", *(["val_select"] if cfg.data.selection_split else []),
            *(f"val_len{m}x" for m in cfg.data.eval_length_multiples if isinstance(m, int))]
    keys = [f"{s}/{name}" for s in sets for name in TASK_METRICS[kind]]
    if cfg.objective == "mlm_nsp":
        keys.append("val/nsp_acc")
    if kind == "seq2seq":
        keys += ["val/exact_match", *(f"val/exact_match_src{u}" for u in length_buckets(cfg.data.seq_len))]
    return [*keys, "train/loss"]


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


def _check_monitor(cfg: RunConfig) -> None:
    keys = logged_metric_keys(cfg)
    if cfg.train.monitor not in keys:
        raise ConfigError(
            f"train.monitor={cfg.train.monitor} is not logged by data.task={cfg.data.task} "
            f"(objective={cfg.objective}); valid: {', '.join(keys)}"
        )


def validate(cfg: RunConfig) -> RunConfig:
    """Cross-field checks that a ``Literal`` cannot express. Raises :class:`ConfigError`."""
    check_experiment_name(cfg.experiment)
    _check_numbers(cfg)
    m = cfg.model
    for name in ("d_model", "n_heads", "n_layers", "d_ff", "max_len"):
        if getattr(m, name) <= 0:
            raise ConfigError(f"model.{name}={getattr(m, name)} must be a positive integer")
    if m.head_dim is not None and m.head_dim <= 0:
        raise ConfigError(f"model.head_dim={m.head_dim} must be a positive integer (or null for d_model/n_heads)")
    if m.head_dim is None and m.d_model % m.n_heads:
        raise ConfigError(
            f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}; "
            "set model.head_dim explicitly or pick a divisor"
        )
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout={m.dropout} must be in [0, 1)")
    if m.attention.chunk_size <= 0:
        raise ConfigError(f"model.attention.chunk_size={m.attention.chunk_size} must be a positive integer")
    if m.cross_attention != "full" and m.arch != "encoder_decoder":
        raise ConfigError(
            f"model.cross_attention={m.cross_attention} needs model.arch=encoder_decoder (got model.arch={m.arch})"
        )
    d = cfg.data
    for name in ("seq_len", "vocab_size", "batch_size"):
        if getattr(d, name) <= 0:
            raise ConfigError(f"data.{name}={getattr(d, name)} must be a positive integer")
    for name in ("n_train", "n_val"):
        value = getattr(d, name)
        if value < 0 or (value == 0 and d.source == "synthetic"):
            raise ConfigError(f"data.{name}={value} must be > 0 (0 means all examples, for a real corpus only)")
    longest = d.seq_len * max([1, *d.eval_length_multiples])
    if longest > m.max_len and m.positional == "learned":
        raise ConfigError(
            f"data.seq_len={d.seq_len} x data.eval_length_multiples={d.eval_length_multiples} needs {longest} "
            f"positions but model.max_len={m.max_len} with learned positions; raise model.max_len"
        )
    if not 0.0 < d.mlm_probability < 1.0:
        raise ConfigError(f"data.mlm_probability={d.mlm_probability} must be in (0, 1)")
    t = cfg.train
    for name in ("max_steps", "val_every", "log_every", "attn_stats_every"):
        if getattr(t, name) <= 0:
            raise ConfigError(f"train.{name}={getattr(t, name)} must be a positive integer")
    if t.max_steps % t.val_every:
        raise ConfigError(
            f"train.max_steps={t.max_steps} must be a multiple of train.val_every={t.val_every} "
            "(runs validate and checkpoint every val_every steps)"
        )
    if t.lr <= 0:
        raise ConfigError(f"train.lr={t.lr} must be > 0")
    if t.lr_from is not None and (not t.lr_from.startswith("auto:") or len(t.lr_from) <= 5):
        raise ConfigError(f"train.lr_from={t.lr_from} must be auto:<sweep> (the sweep whose runs choose the lr) or null")
    if t.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps={t.warmup_steps} must be >= 0")
    # objective x task x arch
    obj, task = cfg.objective, d.task
    if task == "corpus" and obj not in ("mlm", "mlm_nsp", "causal"):
        raise ConfigError(f"data.task=corpus is for pretraining: objective must be mlm_nsp, mlm or causal, got {obj}")
    if obj in ("mlm", "mlm_nsp") and task == "corpus" and m.arch != "encoder":
        raise ConfigError(f"objective={obj} needs model.arch=encoder (bidirectional), got model.arch={m.arch}")
    if obj == "causal" and task == "corpus" and m.arch != "decoder":
        raise ConfigError(f"objective=causal needs model.arch=decoder, got model.arch={m.arch}")
    if task in SEQ2SEQ_TASKS:
        if obj != "seq2seq":
            raise ConfigError(f"data.task={task} is a seq2seq task: objective must be seq2seq, got {obj}")
        if m.arch == "encoder":
            raise ConfigError("objective=seq2seq needs model.arch=encoder_decoder or decoder (prefix LM), got encoder")
    if task in CLASSIFICATION_TASKS:
        # objective names how the encoder was pretrained: none = random init, else a checkpoint is loaded
        if obj == "seq2seq":
            raise ConfigError(f"objective=seq2seq needs data.task in {list(SEQ2SEQ_TASKS)}, got data.task={task}")
        if m.arch == "encoder_decoder":
            raise ConfigError(f"model.arch=encoder_decoder is for seq2seq tasks, got data.task={task}")
        if obj != "none" and cfg.finetune.pretrained is None:
            raise ConfigError(
                f"objective={obj} on classification task data.task={task} needs finetune.pretrained "
                "(a checkpoint or run dir); use objective=none to train from random init"
            )
    _check_monitor(cfg)
    return cfg


# --- the shape of config files (before jsonargparse merges them) -----------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently; no maintained YAML library for Python refuses it by default)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}); give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`ConfigError`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def check_config_shape(data: Any, where: str) -> None:
    """An experiment file must be a mapping, and each block (``model:``, ``model.attention:`` …)
    a mapping too: a scalar or null there would reset the whole block to its defaults."""
    if data is None:
        raise ConfigError(f"{where}: the config is empty; it must be a mapping of config keys (e.g. model: {{d_model: 64}})")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the config must be a mapping of config keys, got a {type(data).__name__}")
    _check_blocks(data, RunConfig, "", where)
    scales = data.get("scales")
    if scales is not None:
        if not isinstance(scales, dict) or not all(isinstance(v, dict) or v is None for v in scales.values()):
            raise ConfigError(f"{where}: scales must map a scale ({', '.join(get_args(Scale))}) to a mapping of overrides")
        for name, block in scales.items():
            _check_dotted_blocks(block or {}, f"{where}: scales.{name}")
    when = data.get("when")
    if when is not None and not isinstance(when, list):
        raise ConfigError(f"{where}: when must be a list of {{if: ..., set: ...}} mappings")


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _check_blocks(data: dict, cls: type, prefix: str, where: str) -> None:
    hints = _hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        if hint is None or not dataclasses.is_dataclass(hint):
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: {prefix}{key} is a block of {prefix}{key}.* keys and must be a mapping, got {value!r}; "
                f"e.g. {prefix}{key}: {{{dataclasses.fields(hint)[0].name}: ...}}"
            )
        _check_blocks(value, hint, f"{prefix}{key}.", where)


def _check_dotted_blocks(block: dict, where: str) -> None:
    """Scale overrides may use dotted keys (``model.d_model: 32``) or nested blocks."""
    nested: dict = {}
    for key, value in block.items():
        node = nested
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    _check_blocks(nested, RunConfig, "", where)


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
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        if key not in hints:
            raise ConfigError(f"unknown key {cls.__name__}.{key}; valid keys: {', '.join(hints)}")
        hint = hints[key]
        kwargs[key] = from_dict(value, hint) if dataclasses.is_dataclass(hint) and isinstance(value, dict) else value
    return cls(**kwargs)
