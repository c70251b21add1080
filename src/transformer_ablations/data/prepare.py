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
import itertools
import json
import logging
import math
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from transformer_ablations.atomic import atomic_write_bytes
from transformer_ablations.config import CLASSIFICATION_TASKS, SEQ2SEQ_TASKS, ConfigError, RunConfig
from transformer_ablations.data import corpora, synthetic
from transformer_ablations.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DATA_SEED = 1234
CACHE_VERSION = "data-v1"
SYNTHETIC_ONLY = ("order", "retrieval", "reverse", "sort", "lookup")
LENGTH_TASKS = ("corpus", "order", "retrieval", "reverse", "sort", "translate", "lookup")
RETRIEVAL_VALUES = 16
NSP_SAME_TOPIC = 0.5  # synthetic corpus: share of NSP negatives drawn from another document of the same topic
MIN_SEQ_LEN = {"corpus": 8, "order": 6, "retrieval": 8, "reverse": 5, "sort": 5, "translate": 11,
               "single": 4, "pair": 6, "lookup": 8}


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
def task_kind(cfg: RunConfig) -> str:
    task, obj = cfg.data.task, cfg.objective
    if task == "corpus":
        if obj not in ("mlm", "mlm_nsp", "causal"):
            raise ConfigError(f"data.task=corpus is for pretraining: objective must be mlm_nsp, mlm or causal, got {obj}")
        return obj
    if task in SEQ2SEQ_TASKS:
        return "seq2seq"
    if task in CLASSIFICATION_TASKS:
        return "classification"
    raise ConfigError(f"data.task={task} is not one of corpus, {', '.join(CLASSIFICATION_TASKS + SEQ2SEQ_TASKS)}")


def length_multiples(cfg: RunConfig, warn: bool = True) -> list[int]:
    ms = []
    for m in cfg.data.eval_length_multiples or []:
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ConfigError(f"data.eval_length_multiples={cfg.data.eval_length_multiples}: entries must be integers >= 2")
        if m not in ms:
            ms.append(m)
    ms.sort()
    src = corpora.parse_source(cfg.data.source)[0]
    ok = cfg.data.task in LENGTH_TASKS and (src == "synthetic" or cfg.data.task == "corpus")
    if ms and not ok:
        if warn:
            log.warning("data.eval_length_multiples=%s ignored: length generalisation sets exist for synthetic "
                        "%s and for text corpora", ms, "/".join(LENGTH_TASKS))
        return []
    return ms


def _pmax(length: int) -> int:  # retrieval pairs fitting in [CLS] k v ... ? k [SEP]
    return (length - 4) // 2


def _smax(length: int) -> int:  # seq2seq source length whose prefix-LM row (S [SEP] T, |T|=S) fits
    return (length - 1) // 2


def _retrieval_keys(cfg: RunConfig) -> int:
    top = max([1] + length_multiples(cfg, warn=False))
    return max(64, _pmax(cfg.data.seq_len * top))


def _range(task: str, length: int, m: int) -> tuple[int, int]:
    """(min, max) example size (order: symbols, retrieval: pairs, seq2seq: source words) of a
    synthetic task for rows of ``length`` tokens. For an eval multiple m >= 2 only sizes that do
    not fit in rows of half that length: ``val_len2x`` is longer than any training example,
    ``val_len4x`` longer than any of ``val_len2x``."""
    if task == "order":
        lo, hi, f = 4, length - 2, (lambda L: L - 2)
    elif task == "retrieval":
        lo, hi, f = 2, _pmax(length), _pmax
    elif task == "lookup":  # [CLS] symbols @k [SEP]
        lo, hi, f = synthetic.LOOKUP_GROUP, length - 3, (lambda L: L - 3)
    elif task == "translate":
        lo, hi, f = synthetic.TRANSLATE_MIN_LEN, _smax(length), _smax
    else:
        lo, hi, f = 2, _smax(length), _smax
    if m >= 2:
        lo = max(lo, f(math.ceil(length / 2)) + 1)
    return lo, hi


# --- corpus examples ----------------------------------------------------------------------
def pair_examples(docs: Sequence[list[list[int]]], budget: int, rng: random.Random, nsp: bool,
                  groups: list[int] | None = None, same_group_p: float = 0.5) -> Iterator[dict]:
    """BERT-style segment pairs ``{"a_ids", "b_ids", "nsp_label"}``, one at a time, from tokenized
    documents (lists of sentences of ids; empty ones are skipped). ``docs`` is read one document at
    a time: in order, and at random for NSP negatives.

    Sentences of a document are gathered until ``budget`` tokens, then split at a random
    sentence boundary into A and B (the true continuation). With ``nsp``, half of the pairs
    get a B taken from another random document instead (``nsp_label=0``; the unused
    sentences are put back, as in BERT). With ``groups`` (a topic per document), a share
    ``same_group_p`` of those other documents is drawn from the same topic (hard negatives).
    Without ``nsp`` B is always the continuation (empty when the chunk is one sentence). With
    ``nsp`` a chunk of one long sentence is cut inside it.
    """
    keep = [i for i, doc in enumerate(docs) if any(doc)]  # document d below is docs[keep[d]]

    def sentences(d: int) -> list[list[int]]:
        return [s for s in docs[keep[d]] if s]

    by_group: dict[int, list[int]] = {}
    if groups is not None:
        for d, i in enumerate(keep):
            by_group.setdefault(groups[i], []).append(d)
    for d in range(len(keep)):
        doc = sentences(d)
        i = 0
        while i < len(doc):
            chunk, clen = [], 0
            while i < len(doc) and clen < budget:
                chunk.append(doc[i])
                clen += len(doc[i])
                i += 1
            n_sents = len(chunk)
            if nsp and len(chunk) == 1:
                if len(chunk[0]) < 2:
                    continue
                k = rng.randint(1, len(chunk[0]) - 1)  # one long sentence: A and B are its two parts
                chunk = [chunk[0][:k], chunk[0][k:]]
            cut = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = [t for s in chunk[:cut] for t in s]
            random_b = nsp and len(keep) >= 2 and rng.random() < 0.5
            if random_b:
                same = by_group.get(groups[keep[d]], []) if groups is not None else []
                if len(same) > 1 and rng.random() < same_group_p:  # a hard negative: same topic
                    j = same[rng.randrange(len(same) - 1)]
                    j = same[-1] if j == d else j
                else:
                    j = rng.randrange(len(keep) - 1)
                    j += j >= d
                other = sentences(j)
                k = rng.randrange(len(other))
                b: list[int] = []
                while k < len(other) and (not b or len(a) + len(b) < budget):
                    b.extend(other[k])
                    k += 1
                i -= (n_sents - cut) if len(chunk) == n_sents else 0  # put unused sentences back
                label = 0
            else:
                b = [t for s in chunk[cut:] for t in s]
                label = 1
            yield {"a_ids": a, "b_ids": b, "nsp_label": label}


def causal_examples(docs: Iterable[list[list[int]]], length: int, eos_id: int) -> Iterator[dict]:
    """Documents joined by EOS into one stream, cut into rows ``{"input_ids"}`` of exactly ``length`` tokens."""
    buf: list[int] = []
    for doc in docs:
        for s in doc:
            buf.extend(s)
        buf.append(eos_id)
        while len(buf) >= length:
            yield {"input_ids": buf[:length]}
            buf = buf[length:]


# --- the cache ----------------------------------------------------------------------------
def code_version() -> str:
    """Hash of the modules that decide the cached content: editing a generator invalidates the cache."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    here = Path(__file__).parent
    for name in ("synthetic.py", "corpora.py", "prepare.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def prepare(cfg: RunConfig, tokenizer: Tokenizer | None = None) -> Prepared:
    """Build (or load from the cache) the tokenized splits of ``cfg.data`` for ``cfg.objective``."""
    d = cfg.data
    kind = task_kind(cfg)
    src_kind, _, _ = corpora.parse_source(d.source)
    if src_kind != "synthetic" and d.task in SYNTHETIC_ONLY:
        raise ConfigError(f"data.task={d.task} is a synthetic task; it needs data.source=synthetic (got {d.source})")
    if d.seq_len < MIN_SEQ_LEN[d.task]:
        raise ConfigError(f"data.seq_len={d.seq_len} is too short for data.task={d.task}: need >= {MIN_SEQ_LEN[d.task]}")
    if src_kind == "synthetic" and d.n_train <= 0:
        raise ConfigError("data.n_train=0 means 'all of a real corpus'; data.source=synthetic needs a count >= 1")
    ms = length_multiples(cfg)
    cache = Path(os.path.expanduser(d.cache_dir))
    parts = {"v": code_version(), "task": d.task, "kind": kind, "seq_len": d.seq_len, "n_train": d.n_train,
             "n_val": d.n_val, "multiples": ms, "data_seed": DATA_SEED, "selection_split": d.selection_split}
    if src_kind == "synthetic":
        parts["source"] = "synthetic"
        if tokenizer is None:
            tokenizer = synthetic_tokenizer(cfg)
        parts["tokenizer"] = tokenizer.hash
    else:
        parts["source"] = corpora.source_identity(d.source)
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
    raw = load_source(cfg) if src_kind != "synthetic" else None
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
            splits, tok, meta = _build(cfg, kind, ms, tokenizer, raw, Path(work))
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


def synthetic_tokenizer(cfg: RunConfig) -> Tokenizer:
    """The word-level tokenizer of a synthetic task: every symbol of the task is one piece.
    ``corpus``, ``single`` and ``pair`` share one (so fine-tuning reuses the pretraining ids)."""
    kw = {"n_keys": _retrieval_keys(cfg), "n_values": RETRIEVAL_VALUES} if cfg.data.task == "retrieval" else {}
    words = synthetic.vocabulary(cfg.data.task, **kw)
    return Tokenizer.train_or_load(words, len(words) + 7, cfg.data.cache_dir, model_type="word")


# --- building -----------------------------------------------------------------------------
def load_source(cfg: RunConfig):
    """The raw examples of a ``file:``/``hf:`` source for ``cfg.data.task`` (TextCorpus,
    ParallelData or LabeledData), read and checked (one-line :class:`ConfigError`). Writes nothing."""
    d = cfg.data
    if d.task == "corpus":
        return corpora.load_text_corpus(d.source, 3 * d.n_train * d.seq_len if d.n_train > 0 else None)
    if d.task in SEQ2SEQ_TASKS:
        return corpora.load_parallel(d.source)
    ld = corpora.load_labeled(d.source)
    if ld.is_pair != (d.task == "pair"):
        what = "sentence pairs" if ld.is_pair else "single sentences"
        want = "pair" if ld.is_pair else "single"
        raise ConfigError(f"data.source={d.source} holds {what}; use data.task={want} (got data.task={d.task})")
    return ld


def _map(ds, fn: Callable, remove: list[str], tag: str):
    """``Dataset.map`` (batched, with indices) with an explicit fingerprint (no hashing of ``fn``)."""
    fp = hashlib.sha256(f"{ds._fingerprint}:{tag}".encode()).hexdigest()[:16]
    return ds.map(fn, batched=True, batch_size=1000, with_indices=True, remove_columns=remove,
                  new_fingerprint=fp, desc=None)


def _tokenize_rows(rows: list[dict], tok: Tokenizer, fields: dict[str, str], keep: list[str]):
    """Rows of text -> Dataset with ``fields`` (text column -> ids column), ``keep`` columns and ``idx``."""
    import datasets

    ds = datasets.Dataset.from_list(rows)

    def fn(batch, indices):
        out = {dst: tok.encode_batch([t or "" for t in batch[src]]) for src, dst in fields.items()}
        for k in keep:
            out[k] = batch[k]
        out["idx"] = list(indices)
        return out

    return _map(ds, fn, ds.column_names, f"rows:{tok.hash}:{sorted(fields.items())}")


def _write(rows: Iterator[dict], features, work: Path):
    """Rows -> a Dataset in Arrow files under ``work``, written as they come: memory does not grow with the rows."""
    import datasets

    return datasets.Dataset.from_generator(lambda: rows, features=features, cache_dir=str(work),
                                           fingerprint=uuid.uuid4().hex)  # the generator is called once


class TokenizedDocs(Sequence):
    """Tokenized documents (lists of sentences of ids) on disk: ``docs[i]`` reads one, a pass reads
    them 1000 at a time."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> list[list[int]]:
        return self.ds[i]["sent_ids"]

    def __iter__(self) -> Iterator[list[list[int]]]:
        for batch in self.ds.iter(batch_size=1000):
            yield from batch["sent_ids"]


def _tokenize_docs(docs: Iterable[list[str]], tok: Tokenizer, work: Path) -> TokenizedDocs:
    """Documents (lists of sentences) -> their sentences' ids, encoded and written 1000 documents at a time."""
    import datasets

    def rows() -> Iterator[dict]:
        it = iter(docs)
        while batch := list(itertools.islice(it, 1000)):
            ids = iter(tok.encode_batch([s for doc in batch for s in doc]))
            for doc in batch:
                yield {"sent_ids": list(itertools.islice(ids, len(doc)))}

    features = datasets.Features({"sent_ids": datasets.List(datasets.List(datasets.Value("int32")))})
    return TokenizedDocs(_write(rows(), features, work))


def _build(cfg: RunConfig, kind: str, ms: list[int], tokenizer: Tokenizer | None, source, work: Path):
    import datasets

    d = cfg.data
    L = d.seq_len
    lengths = {"train": L, "val": L, **{f"val_len{m}x": m * L for m in ms}}
    mult = {"train": 1, "val": 1, **{f"val_len{m}x": m for m in ms}}
    sizes = {"train": d.n_train, "val": d.n_val, **{f"val_len{m}x": d.n_val for m in ms}}
    seeds = {"train": DATA_SEED, "val": DATA_SEED + 1, **{f"val_len{m}x": DATA_SEED + 100 + m for m in ms}}
    if d.selection_split:  # a disjoint held-out split for tuning (Q1's lr), generated like val
        lengths, mult, sizes, seeds = ({**x, "val_select": v} for x, v in
                                       ((lengths, L), (mult, 1), (sizes, d.n_val), (seeds, DATA_SEED + 2)))
    synthetic_src = corpora.parse_source(d.source)[0] == "synthetic"
    num_classes = None
    splits = {}
    store_tokenizer = lambda: None

    if d.task == "corpus":
        topics: dict[str, list[int]] = {}
        if synthetic_src:
            docs = {}
            for name, Ln in lengths.items():
                n = sizes[name]
                if kind == "causal":
                    docs[name] = _synthetic_stream_docs(n * Ln, seeds[name])
                else:
                    lo = max(2, (Ln - 3) // 10)
                    docs[name], topics[name] = synthetic.corpus(n, seed=seeds[name], min_sents=lo,
                                                                max_sents=max(lo + 1, (Ln - 3) // 5), return_topics=True)
        else:
            tc = source
            docs = {"train": tc.train_docs, **{name: tc.val_docs for name in lengths if name != "train"}}
            if tokenizer is None:
                tokenizer, store_tokenizer = Tokenizer.train_deferred(
                    (s for doc in tc.train_docs for s in doc), d.vocab_size, d.cache_dir, "unigram")
        tok = tokenizer
        num = datasets.Value("int64")
        ids, ids32 = datasets.List(num), datasets.List(datasets.Value("int32"))  # the types these columns always had
        tokenized: dict[int, TokenizedDocs] = {}
        for name, Ln in lengths.items():
            key = id(docs[name])
            if key not in tokenized:
                tokenized[key] = _tokenize_docs(docs[name], tok, work)
            tdocs = tokenized[key]
            n_max = sizes[name] if sizes[name] > 0 else None
            rng = random.Random(f"examples:{DATA_SEED}:{name}")
            if kind == "causal":
                examples, columns = causal_examples(tdocs, Ln, tok.eos_id), {"input_ids": ids32}
            else:
                examples = pair_examples(tdocs, Ln - 3, rng, nsp=(kind == "mlm_nsp"), groups=topics.get(name),
                                         same_group_p=NSP_SAME_TOPIC)
                columns = {"a_ids": ids, "b_ids": ids, "nsp_label": num}
            rows = ({**ex, "idx": i} for i, ex in enumerate(itertools.islice(examples, n_max)))
            splits[name] = _write(rows, datasets.Features({**columns, "idx": num}), work)
            _check_count(cfg, name, len(splits[name]), sizes[name], Ln, strict=(name == "train"))

    elif d.task in SEQ2SEQ_TASKS:
        if synthetic_src:
            gen = {"reverse": synthetic.reverse, "sort": synthetic.sort, "translate": synthetic.translate}[d.task]
            raw = {}
            for name, Ln in lengths.items():
                lo, hi = _range(d.task, Ln, mult[name])
                raw[name] = gen(sizes[name], seed=seeds[name], min_len=lo, max_len=hi)
        else:
            pd = source
            raw = {"train": _shuffled(pd.train, "train"), "val": _shuffled(pd.val, "val")}
            if tokenizer is None:
                tokenizer, store_tokenizer = Tokenizer.train_deferred(
                    (t for r in pd.train for t in (r["source"], r["target"])), d.vocab_size, d.cache_dir, "unigram")
        tok = tokenizer
        for name, rows in raw.items():
            ds = _tokenize_rows(rows, tok, {"source": "src_ids", "target": "tgt_ids"}, [])
            if not synthetic_src:  # drop pairs whose prefix-LM row (src [SEP] tgt) would not fit
                limit = lengths[name]
                ds = ds.filter(lambda s, t, limit=limit: 0 < len(s) and len(s) + len(t) + 1 <= limit,
                               input_columns=["src_ids", "tgt_ids"],
                               new_fingerprint=hashlib.sha256(f"{ds._fingerprint}:fit{limit}".encode()).hexdigest()[:16])
                if sizes[name] > 0:
                    ds = ds.select(range(min(len(ds), sizes[name])))
                _check_count(cfg, name, len(ds), sizes[name], lengths[name], strict=False)
            splits[name] = ds

    else:  # classification
        pair_task = d.task == "pair"
        if synthetic_src:
            raw = {}
            for name, Ln in lengths.items():
                n = sizes[name]
                if d.task == "order":
                    lo, hi = _range("order", Ln, mult[name])
                    rows = synthetic.order(n, seed=seeds[name], min_len=lo, max_len=hi)
                elif d.task == "retrieval":
                    lo, hi = _range("retrieval", Ln, mult[name])
                    rows = synthetic.retrieval(n, seed=seeds[name], min_pairs=lo, max_pairs=hi,
                                               n_keys=_retrieval_keys(cfg), n_values=RETRIEVAL_VALUES)
                elif d.task == "lookup":
                    lo, hi = _range("lookup", Ln, mult[name])
                    rows = synthetic.lookup(n, seed=seeds[name], min_len=lo, max_len=hi)
                elif d.task == "single":
                    rows = synthetic.single(n, seed=seeds[name], split="train" if name == "train" else "val")
                else:
                    rows = synthetic.pair(n, seed=seeds[name], split="train" if name == "train" else "val")
                raw[name] = [{"text_a": r.get("text", r.get("text_a")), "text_b": r.get("text_b"),
                              "label": r["label"]} for r in rows]
            num_classes = {"order": 2, "retrieval": RETRIEVAL_VALUES, "single": 2, "pair": 2,
                           "lookup": synthetic.LOOKUP_SYMBOLS}[d.task]
        else:
            ld = source
            raw = {"train": _cap(_shuffled(ld.train, "train"), d.n_train),
                   "val": _cap(_shuffled(ld.val, "val"), d.n_val)}
            num_classes = ld.num_classes
            if tokenizer is None:
                tokenizer, store_tokenizer = Tokenizer.train_deferred(
                    (t for r in ld.train for t in (r["text_a"], r["text_b"]) if t), d.vocab_size, d.cache_dir, "unigram")
        tok = tokenizer
        fields = {"text_a": "a_ids", **({"text_b": "b_ids"} if pair_task else {})}
        for name, rows in raw.items():
            splits[name] = _tokenize_rows(rows, tok, fields, ["label"])

    _warn_unk(splits["train"], tok, d.task)
    store_tokenizer()
    val_names = [n for n in splits if n != "train"]
    meta = {"val_names": val_names, "num_classes": num_classes, "kind": kind,
            "max_lens": {n: lengths.get(n, L) for n in splits}, "counts": {n: len(s) for n, s in splits.items()}}
    return splits, tok, meta


def _synthetic_stream_docs(tokens: int, seed: int) -> list[list[str]]:
    """Enough synthetic documents for ``tokens`` tokens (documents are prefixes of one stream)."""
    n = max(4, tokens // 40)
    while True:
        docs = synthetic.corpus(n, seed=seed)
        if sum(len(s.split()) for doc in docs for s in doc) + len(docs) >= tokens:
            return docs
        n *= 2


def _shuffled(rows: list, name: str) -> list:
    rows = list(rows)
    random.Random(f"shuffle:{DATA_SEED}:{name}").shuffle(rows)
    return rows


def _cap(rows: list, n: int) -> list:
    return rows[:n] if n and n > 0 else rows


def _check_count(cfg: RunConfig, name: str, got: int, want: int, length: int, strict: bool) -> None:
    src = cfg.data.source
    if got == 0:
        raise ConfigError(f"data.source={src}: corpus too short: no {name} examples of up to {length} tokens")
    if want > 0 and got < want:
        if strict:
            raise ConfigError(
                f"data.source={src}: corpus too short: makes {got} {name} examples of {length} tokens, "
                f"data.n_train={want} requested; use a longer corpus, a smaller data.n_train, or data.n_train=0 (all)"
            )
        log.warning("data.source=%s: only %d %s examples (asked for %d)", src, got, name, want)


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
