"""What a synthetic task's examples are: one generator per task (the task registry names them),
the size ranges of their examples, and the pretraining examples of a corpus (segment pairs for
MLM/NSP, EOS-joined rows for a causal LM).

A row generator is ``rows(cfg, split, n, seed, length, multiple) -> list[dict]``: ``n`` examples
of the split ``split`` for rows of ``length`` tokens (``multiple`` >= 2: a length-generalisation
set, whose examples do not fit in rows of half that length).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence

from transformer_ablations.config import RunConfig
from transformer_ablations.data import synthetic

RETRIEVAL_VALUES = 16


def _pmax(length: int) -> int:  # retrieval pairs fitting in [CLS] k v ... ? k [SEP]
    return (length - 4) // 2


def _smax(length: int) -> int:  # seq2seq source length whose prefix-LM row (S [SEP] T, |T|=S) fits
    return (length - 1) // 2


def _sizes(lo: int, most, length: int, m: int) -> tuple[int, int]:
    """(min, max) example size for rows of ``length`` tokens, ``most(L)`` the largest that fits in
    ``L`` tokens. For an eval multiple m >= 2 only sizes that do not fit in rows of half that length:
    ``val_len2x`` is longer than any training example, ``val_len4x`` longer than any of ``val_len2x``."""
    if m >= 2:
        lo = max(lo, most(math.ceil(length / 2)) + 1)
    return lo, most(length)


def retrieval_keys(cfg: RunConfig) -> int:
    """Keys of the retrieval vocabulary: enough for the longest evaluated rows (at least 64)."""
    top = max([1, *cfg.data.eval_length_multiples])
    return max(64, _pmax(cfg.data.seq_len * top))


def retrieval_words(cfg: RunConfig) -> list[str]:
    return synthetic.vocabulary("retrieval", n_keys=retrieval_keys(cfg), n_values=RETRIEVAL_VALUES)


# --- classification tasks: rows {text | text_a, text_b, label} ------------------------------
def order_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    lo, hi = _sizes(4, lambda L: L - 2, length, m)  # symbols
    return synthetic.order(n, seed=seed, min_len=lo, max_len=hi)


def retrieval_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    lo, hi = _sizes(2, _pmax, length, m)  # key-value pairs
    return synthetic.retrieval(n, seed=seed, min_pairs=lo, max_pairs=hi, n_keys=retrieval_keys(cfg),
                               n_values=RETRIEVAL_VALUES)


def lookup_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    lo, hi = _sizes(synthetic.LOOKUP_GROUP, lambda L: L - 3, length, m)  # symbols in [CLS] symbols @k [SEP]
    return synthetic.lookup(n, seed=seed, min_len=lo, max_len=hi)


def single_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    return synthetic.single(n, seed=seed, split="train" if split == "train" else "val")


def pair_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    return synthetic.pair(n, seed=seed, split="train" if split == "train" else "val")


def pair_tag_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    """Rows ``{text_a, text_b, tags}``: one tag per word of A (token tagging, Q5/Q6)."""
    return synthetic.pair_tag(n, seed=seed, split="train" if split == "train" else "val")


# --- seq2seq tasks: rows {source, target} (sizes in source words) -----------------------------
def reverse_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    lo, hi = _sizes(2, _smax, length, m)
    return synthetic.reverse(n, seed=seed, min_len=lo, max_len=hi)


def sort_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    lo, hi = _sizes(2, _smax, length, m)
    return synthetic.sort(n, seed=seed, min_len=lo, max_len=hi)


def translate_rows(cfg: RunConfig, split: str, n: int, seed: int, length: int, m: int) -> list[dict]:
    lo, hi = _sizes(synthetic.TRANSLATE_MIN_LEN, _smax, length, m)
    return synthetic.translate(n, seed=seed, min_len=lo, max_len=hi)


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

    One function over 60 lines on purpose: its random draws come in one fixed order (chunk cut,
    negative or not, which document, where in it), which the data of every seed depend on.
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


def _synthetic_stream_docs(tokens: int, seed: int) -> list[list[str]]:
    """Enough synthetic documents for ``tokens`` tokens (documents are prefixes of one stream)."""
    n = max(4, tokens // 40)
    while True:
        docs = synthetic.corpus(n, seed=seed)
        if sum(len(s.split()) for doc in docs for s in doc) + len(docs) >= tokens:
            return docs
        n *= 2
