"""Raw examples -> tokenizer -> tokenized splits, cached on disk (no Lightning import here).

:func:`prepare` is what :class:`~transformer_ablations.data.datamodule.AblationDataModule`
calls. The tokenized splits live in ``<cache_dir>/datasets/<task>-<kind>-<key>/`` (a
``DatasetDict.save_to_disk`` folder plus ``meta.json`` and ``tokenizer.model``), keyed by a hash
of (source identity, task, batch kind, seq_len, n_train, n_val, eval lengths, data seed,
tokenizer). A ``filelock.FileLock`` lets one process build it while racing processes wait;
the folder is written under a temporary name and renamed into place, so a reader never sees
a half-written cache. The second run only loads the folder (about a second).

A text corpus streams through the build: documents are tokenized, and examples made, into
Arrow files in a scratch folder (``.<entry>.build-*``, removed afterwards; a builder killed
mid-way leaves it to the next one, which clears it under the lock), so memory does not grow
with the corpus.

Synthetic data is generated from the fixed data seed :data:`DATA_SEED` whatever ``cfg.seed``
is, so seeds measure training variance on one task; ``cfg.seed`` drives shuffling and masking.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from transformer_ablations.atomic import atomic_write_bytes
from transformer_ablations.config import ConfigError, RunConfig
from transformer_ablations.data import corpora, sources, synthetic
from transformer_ablations.data.builders import BUILDERS, DATA_SEED
from transformer_ablations.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CACHE_VERSION = "data-v1"


@dataclass
class Prepared:
    tokenizer: Tokenizer
    splits: dict  # name -> datasets.Dataset; "train", then the val splits
    val_names: list[str]
    num_classes: int | None
    kind: str  # mlm | mlm_nsp | causal | seq2seq | classification
    max_lens: dict[str, int]  # split -> the collator's max_len (val_len2x: 2 * seq_len)
    path: Path
    from_cache: bool
    meta: dict = field(default_factory=dict)


# --- what to build ------------------------------------------------------------------------
def length_multiples(cfg: RunConfig, task, warn: bool = True) -> list[int]:
    """The valid ``data.eval_length_multiples``, sorted (none where ``task``, a ``TaskSpec``, has no length sets)."""
    ms = []
    for m in cfg.data.eval_length_multiples or []:
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ConfigError(f"data.eval_length_multiples={cfg.data.eval_length_multiples}: entries must be integers >= 2")
        if m not in ms:
            ms.append(m)
    ms.sort()
    src = sources.parse_source(cfg.data.source)[0]
    ok = task.length_sets and (src == "synthetic" or task.family.name == "lm")
    if ms and not ok:
        if warn:
            log.warning("data.eval_length_multiples=%s ignored: data.task=%s from data.source=%s has no length "
                        "generalisation sets (synthetic tasks with length sets and text corpora have)",
                        ms, cfg.data.task, cfg.data.source)
        return []
    return ms


# --- the cache ----------------------------------------------------------------------------
def code_version() -> str:
    """Hash of the modules that decide the cached content: editing a generator invalidates the cache."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    here = Path(__file__).parent
    for name in ("synthetic.py", "sources.py", "corpora.py", "prepare.py", "examples.py", "builders.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def prepare(cfg: RunConfig, task, tokenizer: Tokenizer | None = None) -> Prepared:
    """Build (or load from the cache) the tokenized splits of ``cfg.data`` for ``cfg.objective``;
    ``task`` is the ``TaskSpec`` of ``cfg.data.task`` (``tasks.prepare`` looks it up)."""
    d = cfg.data
    if cfg.objective not in task.objectives and task.family.name == "lm":
        raise ConfigError(f"data.task={d.task} is for pretraining: objective must be mlm_nsp, mlm or causal, "
                          f"got {cfg.objective}")
    kind = task.kind(cfg.objective)
    src_kind, _, _ = sources.parse_source(d.source)
    if src_kind != "synthetic" and task.synthetic_only:
        raise ConfigError(f"data.task={d.task} is a synthetic task; it needs data.source=synthetic (got {d.source})")
    if d.seq_len < task.min_seq_len:
        raise ConfigError(f"data.seq_len={d.seq_len} is too short for data.task={d.task}: need >= {task.min_seq_len}")
    if src_kind == "synthetic" and d.n_train <= 0:
        raise ConfigError("data.n_train=0 means 'all of a real corpus'; data.source=synthetic needs a count >= 1")
    ms = length_multiples(cfg, task)
    cache = Path(os.path.expanduser(d.cache_dir))
    parts = {"v": code_version(), "task": d.task, "kind": kind, "seq_len": d.seq_len, "n_train": d.n_train,
             "n_val": d.n_val, "multiples": ms, "data_seed": DATA_SEED, "selection_split": d.selection_split}
    if src_kind == "synthetic":
        parts["source"] = "synthetic"
        if tokenizer is None:
            tokenizer = synthetic_tokenizer(cfg, task)
        parts["tokenizer"] = tokenizer.hash
    else:
        parts["source"] = sources.source_identity(d.source)
        parts["tokenizer"] = tokenizer.hash if tokenizer is not None else f"unigram:{d.vocab_size}"
    key = _key(parts)
    root = cache / "datasets"
    path = root / f"{d.task}-{kind}-{key[:16]}"
    if (path / "meta.json").exists():
        try:
            return _load(path, tokenizer, from_cache=True)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged entry is rebuilt below
            log.warning("data cache %s is unreadable (%s); rebuilding it", path, e)
    # a file:/hf: source is read and checked before anything is written to the cache
    raw = load_source(cfg, task) if src_kind != "synthetic" else None
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if (path / "meta.json").exists():
            try:
                return _load(path, tokenizer, from_cache=True)
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001
                shutil.rmtree(path, ignore_errors=True)
        for stale in root.glob(f".{path.name}.*"):  # scratch of a builder killed mid-way (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        log.info("building tokenized data for %s (%s) into %s", d.task, d.source, path)
        # intermediate Arrow files (tokenized documents, examples), removed once the splits are saved
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.build-", dir=root, ignore_cleanup_errors=True) as work:
            splits, tok, meta = _build(cfg, task, kind, ms, tokenizer, raw, Path(work))
            meta.update({"key": parts, "tokenizer_hash": tok.hash})
            _save(path, splits, tok, meta)
    return _load(path, tokenizer, from_cache=False)


def _save(path: Path, splits: dict, tok: Tokenizer, meta: dict) -> None:
    import datasets

    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        datasets.DatasetDict(splits).save_to_disk(str(tmp))
        atomic_write_bytes(tmp / "tokenizer.model", tok.to_bytes())
        atomic_write_bytes(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())
        if path.exists():  # a leftover without meta.json (crash before the rename cannot leave one; be safe)
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(path: Path, tokenizer: Tokenizer | None, from_cache: bool) -> Prepared:
    import datasets

    meta = json.loads((path / "meta.json").read_text())
    if tokenizer is None:
        tokenizer = Tokenizer.from_file(path / "tokenizer.model")
        tokenizer.from_cache = from_cache
    elif tokenizer.hash != meta["tokenizer_hash"]:
        raise ConfigError(f"data cache {path} was built with another tokenizer; delete it and rerun")
    dd = datasets.DatasetDict.load_from_disk(str(path))
    splits = {name: dd[name] for name in ["train"] + meta["val_names"]}
    return Prepared(tokenizer=tokenizer, splits=splits, val_names=list(meta["val_names"]),
                    num_classes=meta["num_classes"], kind=meta["kind"],
                    max_lens={k: int(v) for k, v in meta["max_lens"].items()}, path=path,
                    from_cache=from_cache, meta=meta)


def synthetic_tokenizer(cfg: RunConfig, task) -> Tokenizer:
    """The word-level tokenizer of a synthetic task: every symbol of the task is one piece.
    ``corpus``, ``single`` and ``pair`` share one (so fine-tuning reuses the pretraining ids)."""
    words = task.words(cfg) if task.words else synthetic.vocabulary(cfg.data.task)
    return Tokenizer.train_or_load(words, len(words) + 7, cfg.data.cache_dir, model_type="word")


# --- building -----------------------------------------------------------------------------
def load_source(cfg: RunConfig, task):
    """The raw examples of a ``file:``/``hf:`` source for ``cfg.data.task`` (TextCorpus,
    ParallelData or LabeledData), read and checked (one-line :class:`ConfigError`). Writes nothing."""
    d = cfg.data
    if task.family.name == "lm":
        return corpora.load_text_corpus(d.source, 3 * d.n_train * d.seq_len if d.n_train > 0 else None)
    if task.family.name == "seq2seq":
        return corpora.load_parallel(d.source)
    ld = corpora.load_labeled(d.source)
    if ld.is_pair != task.pairs:
        what = "sentence pairs" if ld.is_pair else "single sentences"
        want = "pair" if ld.is_pair else "single"
        raise ConfigError(f"data.source={d.source} holds {what}; use data.task={want} (got data.task={d.task})")
    return ld


def _warn_unk(ds, tok: Tokenizer, task: str) -> None:
    cols = [c for c in ("a_ids", "b_ids", "input_ids", "src_ids", "tgt_ids") if c in ds.column_names]
    total = unk = 0
    for c in cols:
        for row in ds.select(range(min(len(ds), 500)))[c]:
            total += len(row)
            unk += sum(1 for t in row if t == tok.unk_id)
    if total and unk / total > 0.01:
        log.warning("data.task=%s: %.1f%% of tokens are <unk> with this tokenizer (a tokenizer from another task?)",
                    task, 100 * unk / total)


def _build(cfg: RunConfig, task, kind: str, ms: list[int], tokenizer: Tokenizer | None, source, work: Path):
    """The splits of ``task``'s family builder, checked for unknown tokens, and their meta data."""
    splits, tok, num_classes, store_tokenizer = BUILDERS[task.family.name](cfg, task, kind, ms, tokenizer, source, work)
    _warn_unk(splits["train"], tok, cfg.data.task)
    store_tokenizer()
    val_names = [n for n in splits if n != "train"]
    lengths = {"train": cfg.data.seq_len, "val": cfg.data.seq_len, **{f"val_len{m}x": m * cfg.data.seq_len for m in ms}}
    meta = {"val_names": val_names, "num_classes": num_classes, "kind": kind,
            "max_lens": {n: lengths.get(n, cfg.data.seq_len) for n in splits},
            "counts": {n: len(s) for n, s in splits.items()}}
    return splits, tok, meta
