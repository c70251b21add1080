"""The tokenized splits of each task family, built from raw examples (the task registry's
generators for synthetic data, ``corpora`` for real text): one builder per family.

The splits are ``train``, ``val`` and ``val_len<m>x`` (length generalisation: rows ``m`` times
longer), each with its own data seed (:data:`DATA_SEED`), so seeds measure training variance on
one task.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from transformer_ablations.config import ConfigError, DataConfig, RunConfig
from transformer_ablations.data import sources, synthetic
from transformer_ablations.data.examples import _synthetic_stream_docs, causal_examples, pair_examples
from transformer_ablations.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DATA_SEED = 1234
NSP_SAME_TOPIC = 0.5  # synthetic corpus: share of NSP negatives drawn from another document of the same topic


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


def split_plan(cfg: RunConfig, ms: list[int]) -> tuple[dict, dict, dict, dict, bool]:
    """Per split: row length, length multiple, example count and data seed; and whether the source is synthetic."""
    d = cfg.data
    L = d.seq_len
    lengths = {"train": L, "val": L, **{f"val_len{m}x": m * L for m in ms}}
    mult = {"train": 1, "val": 1, **{f"val_len{m}x": m for m in ms}}
    sizes = {"train": d.n_train, "val": d.n_val, **{f"val_len{m}x": d.n_val for m in ms}}
    seeds = {"train": DATA_SEED, "val": DATA_SEED + 1, **{f"val_len{m}x": DATA_SEED + 100 + m for m in ms}}
    if d.selection_split:  # a disjoint held-out split for tuning (Q1's lr), generated like val
        lengths, mult, sizes, seeds = ({**x, "val_select": v} for x, v in
                                       ((lengths, L), (mult, 1), (sizes, d.n_val), (seeds, DATA_SEED + 2)))
    return lengths, mult, sizes, seeds, sources.parse_source(d.source)[0] == "synthetic"


def build_corpus(cfg: RunConfig, task, kind: str, ms: list[int], tokenizer: Tokenizer | None, source, work: Path):
    """Corpus documents -> MLM/NSP segment pairs or causal rows. Every builder returns (splits,
    tokenizer, num_classes, store_tokenizer); its body is the one recipe of its family (a pass per
    split), kept in one piece (over 60 lines) so the data stay byte-identical for the cache key."""
    import datasets

    d, (lengths, _mult, sizes, seeds, synthetic_src) = cfg.data, split_plan(cfg, ms)
    num_classes, splits, store_tokenizer = None, {}, lambda: None
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
    return splits, tok, num_classes, store_tokenizer


def build_seq2seq(cfg: RunConfig, task, kind: str, ms: list[int], tokenizer: Tokenizer | None, source, work: Path):
    """Source/target pairs -> tokenized rows (a real corpus: only pairs whose prefix-LM row fits)."""
    d, (lengths, mult, sizes, seeds, synthetic_src) = cfg.data, split_plan(cfg, ms)
    num_classes, splits, store_tokenizer = None, {}, lambda: None
    if synthetic_src:
        raw = {name: task.examples(cfg, name, sizes[name], seeds[name], Ln, mult[name]) for name, Ln in lengths.items()}
    else:
        pd = source
        train, select = _held_out(pd.train, len(pd.val), d)
        raw = {"train": _shuffled(train, "train"), "val": _shuffled(pd.val, "val"),
               **({"val_select": select} if d.selection_split else {})}
        if tokenizer is None:
            tokenizer, store_tokenizer = Tokenizer.train_deferred(
                (t for r in train for t in (r["source"], r["target"])), d.vocab_size, d.cache_dir, "unigram")
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
    return splits, tok, num_classes, store_tokenizer


def build_classification(cfg: RunConfig, task, kind: str, ms: list[int], tokenizer: Tokenizer | None, source, work: Path):
    """Labelled sentences (or sentence pairs) -> tokenized rows."""
    d, (lengths, mult, sizes, seeds, synthetic_src) = cfg.data, split_plan(cfg, ms)
    num_classes, splits, store_tokenizer = None, {}, lambda: None
    pair_task, target = task.pairs, task.target
    if synthetic_src:
        raw = {}
        for name, Ln in lengths.items():
            rows = task.examples(cfg, name, sizes[name], seeds[name], Ln, mult[name])
            raw[name] = [{"text_a": r.get("text", r.get("text_a")), "text_b": r.get("text_b"),
                          target: r[target]} for r in rows]
        num_classes = task.num_classes
    else:
        ld = source
        train, select = _held_out(ld.train, len(ld.val), d)
        raw = {"train": _cap(_shuffled(train, "train"), d.n_train),
               "val": _cap(_shuffled(ld.val, "val"), d.n_val), **({"val_select": select} if d.selection_split else {})}
        num_classes = ld.num_classes
        if tokenizer is None:
            tokenizer, store_tokenizer = Tokenizer.train_deferred(
                (t for r in train for t in (r["text_a"], r["text_b"]) if t), d.vocab_size, d.cache_dir, "unigram")
    tok = tokenizer
    fields = {"text_a": "a_ids", **({"text_b": "b_ids"} if pair_task else {})}
    for name, rows in raw.items():
        splits[name] = _tokenize_rows(rows, tok, fields, [target])
        if target == "tags" and any(len(a) != len(t) for a, t in zip(splits[name]["a_ids"], splits[name]["tags"])):
            raise ConfigError(f"data.task={task.name} needs one token per word of A (a word-level tokenizer)")
    return splits, tok, num_classes, store_tokenizer


def _held_out(train: list, n_val: int, d: DataConfig) -> tuple[list, list]:
    """A real corpus has no third split: with ``data.selection_split`` its ``val_select`` (where lr is
    chosen) is carved out of the training rows (``data.n_val`` of them, else as many as ``val`` has),
    never out of ``val`` (reported, never selected on). Returns (train rows left, val_select rows)."""
    if not d.selection_split:
        return train, []
    rows = _shuffled(train, "val_select")
    k = d.n_val if d.n_val > 0 else n_val
    if k >= len(rows):
        raise ConfigError(f"data.selection_split=true: val_select needs {k} of the {len(rows)} training rows of "
                          f"data.source={d.source}; set a smaller data.n_val")
    return rows[k:], rows[:k]


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




BUILDERS: dict[str, Callable] = {"lm": build_corpus, "seq2seq": build_seq2seq, "classification": build_classification}
