"""The embedded tasks and corpus: deterministic, seeded, sized by arguments.

Every generator takes ``seed`` and builds its own ``random.Random``: the same arguments give the
same data, another seed gives other data. Text is whitespace-separated symbols, so a
sentencepiece ``word`` model gives exactly one token per symbol.

World of the corpus (shared by ``corpus``, ``single``, ``pair`` and the source side of
``translate``): 8 topics x 6 nouns (+2 places each), 16 positive and 16 negative verbs,
8 positive / 8 negative / 8 neutral adjectives.

- ``corpus``: documents about one topic (its nouns and places, drawn afresh in every sentence, so
  a masked noun must be guessed from the topic, not copied) in one mood (every verb and every
  non-neutral adjective has the document's polarity). Words of one topic or one polarity share
  their contexts, so MLM and causal LM learn those classes, and NSP (true next sentence vs one
  from another document) is learnable from topic and mood; subject and object roles are decided
  by word order (SVO).
- ``order`` (Q2): filler symbols plus the two markers ``A`` and ``B``; label 1 iff A comes
  before B. Examples come in twins with the same bag and opposite labels, so any
  permutation-invariant model scores exactly 50%.
- ``retrieval`` (Q1/Q4): ``k3 v7 k12 v2 ... ? k12`` -> label = index of the queried value (v2 -> 2).
- ``reverse`` / ``sort`` / ``translate`` (Q3): seq2seq with source length spread over [min, max].
  ``translate`` maps the corpus words word-for-word into a disjoint pseudo-language and reorders
  each clause SVO -> SOV with adjectives after their noun.
- ``single`` (Q5/Q6): sentence polarity, the polarity of its verb; its adjectives draw their own
  (distractors: counting polar words is right on about 4 in 5 sentences).
- ``pair``: label 1 iff sentence B keeps the mood of sentence A (for fine-tuning by hand; no sweep
  reads it since Q6's [CLS] half moved to ``single``: an XOR of two moods is no task for a linear probe).
- ``pair_tag`` (Q5/Q6): token tagging; a row is three clauses of their own moods, A the first one or two;
  every content word of A is tagged with the mood of B's first clause, so a left-to-right reader of A is
  at chance, and a reader who does not know where B begins reads the right clause half the time at best
  (no "." or other boundary word).
- ``single`` and ``pair`` hold words out: the *train* split uses only the first half of the
  verbs and adjectives of each polarity, the *val* split only the other half. A model must know
  the held-out words' classes from somewhere else: pretraining on ``corpus`` teaches them (distributional semantics),
  random initialisation cannot, which is the gap Q5 measures (BERT/GPT-1's premise: pretraining
  knows more words than the labelled set shows).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# --- the world ----------------------------------------------------------------------------
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "farm": (["cow", "horse", "pig", "goat", "farmer", "sheep"], ["barn", "field"]),
    "city": (["driver", "cop", "baker", "clerk", "mayor", "tourist"], ["street", "market"]),
    "sea": (["sailor", "shark", "whale", "captain", "crab", "dolphin"], ["boat", "harbor"]),
    "forest": (["wolf", "bear", "fox", "deer", "owl", "hunter"], ["woods", "cave"]),
    "school": (["teacher", "student", "pupil", "coach", "tutor", "janitor"], ["classroom", "library"]),
    "kitchen": (["chef", "cook", "waiter", "butcher", "cat", "mouse"], ["kitchen", "pantry"]),
    "space": (["astronaut", "robot", "alien", "pilot", "engineer", "scientist"], ["station", "rocket"]),
    "music": (["singer", "drummer", "pianist", "fan", "guitarist", "violinist"], ["stage", "studio"]),
}
POS_VERBS = ["helps", "likes", "hugs", "feeds", "thanks", "praises", "trusts", "loves",
             "protects", "greets", "admires", "rescues", "teaches", "comforts", "welcomes", "supports"]
NEG_VERBS = ["hates", "bites", "chases", "scolds", "fears", "ignores", "blames", "attacks",
             "robs", "mocks", "annoys", "insults", "pushes", "cheats", "threatens", "avoids"]
POS_ADJ = ["happy", "kind", "brave", "calm", "gentle", "cheerful", "friendly", "clever"]
NEG_ADJ = ["angry", "sad", "rude", "lazy", "grumpy", "nasty", "cruel", "sneaky"]
NEUTRAL_ADJ = ["big", "small", "old", "young", "tall", "short", "red", "brown"]
FUNCTION_WORDS = ["the", "a", "in", "and", "is", "very", "are", "."]

NOUNS = [n for ns, _ in TOPICS.values() for n in ns]
PLACES = [p for _, ps in TOPICS.values() for p in ps]
ADJECTIVES = POS_ADJ + NEG_ADJ + NEUTRAL_ADJ
VERBS = POS_VERBS + NEG_VERBS


def english_vocabulary() -> list[str]:
    """Every symbol of the corpus world (corpus, single, pair, translate source)."""
    return FUNCTION_WORDS + NOUNS + PLACES + VERBS + ADJECTIVES


# --- corpus -------------------------------------------------------------------------------
def _np(det: str, adj: str | None, noun: str) -> list[str]:
    return [det, adj, noun] if adj else [det, noun]


def _clause(rng: random.Random, s: str, o: str, verbs: Sequence[str], adjs: Sequence[str],
            places: Sequence[str]) -> list[str]:
    """``the [ADJ] S VERB the [ADJ] O [in the PLACE] .``; an adjective is one of ``adjs`` or neutral."""
    def adj() -> str | None:
        r = rng.random()
        return rng.choice(adjs) if r < 0.7 else rng.choice(NEUTRAL_ADJ) if r < 0.8 else None

    words = _np("the", adj(), s) + [rng.choice(verbs)] + _np("the", adj(), o)
    if rng.random() < 0.4:
        words += ["in", "the", rng.choice(places)]
    return words + ["."]


def _document(rng: random.Random, n_sents: int) -> tuple[list[str], int]:
    topic = rng.randrange(len(TOPICS))
    nouns, places = list(TOPICS.values())[topic]
    mood = rng.randrange(2)
    verbs, adjs = (POS_VERBS, POS_ADJ) if mood else (NEG_VERBS, NEG_ADJ)
    sents: list[str] = []
    for _ in range(n_sents):
        s, o = rng.sample(nouns, 2)
        kind = rng.random()
        if kind < 0.7:
            words = _clause(rng, s, o, verbs, adjs, places)
        elif kind < 0.85:  # the S is [very] ADJ .
            words = ["the", s, "is"] + (["very"] if rng.random() < 0.5 else []) + [rng.choice(adjs), "."]
        else:  # the S and the O are in the PLACE .
            words = ["the", s, "and", "the", o, "are", "in", "the", rng.choice(places), "."]
        sents.append(" ".join(words))
    return sents, topic


def corpus(n_docs: int, seed: int = 1234, min_sents: int = 4, max_sents: int = 10,
           return_topics: bool = False):
    """``n_docs`` documents, each a list of ``min_sents..max_sents`` sentences (strings).
    With ``return_topics`` also the topic index of each document: ``(docs, topics)``."""
    rng = random.Random(f"corpus:{seed}")
    out = [_document(rng, rng.randint(min_sents, max_sents)) for _ in range(n_docs)]
    docs = [d for d, _ in out]
    return (docs, [t for _, t in out]) if return_topics else docs


# --- order (Q2) ---------------------------------------------------------------------------
ORDER_MARKERS = ("A", "B")


def order_vocabulary(n_fillers: int = 16) -> list[str]:
    return list(ORDER_MARKERS) + [f"w{i}" for i in range(n_fillers)]


def order(n: int, seed: int = 1234, min_len: int = 4, max_len: int = 32, n_fillers: int = 16) -> list[dict]:
    """``n`` examples (rounded up to even) ``{"text", "label"}``; label 1 iff A precedes B.

    Generated as twins: the same bag of symbols in two orders that differ only by swapping A
    and B, with labels 1 and 0. Twins are adjacent (0-1, 2-3, ...).
    """
    if min_len < 2 or max_len < min_len:
        raise ValueError(f"order: need 2 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(f"order:{seed}")
    fillers = [f"w{i}" for i in range(n_fillers)]
    out: list[dict] = []
    while len(out) < n:
        length = rng.randint(min_len, max_len)
        seq = [rng.choice(fillers) for _ in range(length)]
        i, j = sorted(rng.sample(range(length), 2))
        first = rng.randrange(2)  # which twin comes first in the list (so labels don't alternate 1,0,...)
        twins = []
        for label in (1, 0):
            s = list(seq)
            s[i], s[j] = ("A", "B") if label else ("B", "A")
            twins.append({"text": " ".join(s), "label": label})
        out.extend(twins if first else twins[::-1])
    return out


# --- retrieval (Q1/Q4) --------------------------------------------------------------------
def retrieval_vocabulary(n_keys: int = 64, n_values: int = 16) -> list[str]:
    return ["?"] + [f"k{i}" for i in range(n_keys)] + [f"v{i}" for i in range(n_values)]


def retrieval(n: int, seed: int = 1234, min_pairs: int = 2, max_pairs: int = 16,
              n_keys: int = 64, n_values: int = 16) -> list[dict]:
    """``{"text": "k3 v7 k12 v2 ... ? k12", "label": 2}``: label is the index of the queried value."""
    if max_pairs > n_keys:
        raise ValueError(f"retrieval: max_pairs={max_pairs} needs n_keys >= max_pairs (got {n_keys})")
    if min_pairs < 1 or max_pairs < min_pairs:
        raise ValueError(f"retrieval: need 1 <= min_pairs <= max_pairs, got {min_pairs}, {max_pairs}")
    rng = random.Random(f"retrieval:{seed}")
    out = []
    for _ in range(n):
        p = rng.randint(min_pairs, max_pairs)
        keys = rng.sample(range(n_keys), p)
        vals = [rng.randrange(n_values) for _ in range(p)]
        q = rng.randrange(p)
        words = [w for k, v in zip(keys, vals) for w in (f"k{k}", f"v{v}")] + ["?", f"k{keys[q]}"]
        out.append({"text": " ".join(words), "label": vals[q]})
    return out


# --- seq2seq (Q3) -------------------------------------------------------------------------
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def _letters_examples(kind: str, n: int, seed: int, min_len: int, max_len: int) -> list[dict]:
    if min_len < 1 or max_len < min_len:
        raise ValueError(f"{kind}: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(f"{kind}:{seed}")
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        src = [rng.choice(LETTERS) for _ in range(length)]
        tgt = src[::-1] if kind == "reverse" else sorted(src)
        out.append({"source": " ".join(src), "target": " ".join(tgt)})
    return out


def reverse(n: int, seed: int = 1234, min_len: int = 2, max_len: int = 31) -> list[dict]:
    """``{"source": "c a t", "target": "t a c"}`` with source length uniform in [min_len, max_len]."""
    return _letters_examples("reverse", n, seed, min_len, max_len)


def sort(n: int, seed: int = 1234, min_len: int = 2, max_len: int = 31) -> list[dict]:
    """``{"source": "c a t", "target": "a c t"}`` (letters sorted, repeats kept)."""
    return _letters_examples("sort", n, seed, min_len, max_len)


def _pseudowords(n: int) -> list[str]:
    """``n`` distinct pseudo-words that are not English corpus words (fixed, seed-independent)."""
    rng = random.Random("pseudowords:v1")
    cons, vows = "bdfgklmnprstvz", "aeiou"
    taken = set(english_vocabulary()) | set(LETTERS)
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(rng.randint(2, 3)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


_TRANSLATE_SRC = ["the", "a", "and"] + NOUNS + VERBS + ADJECTIVES
TRANSLATE_DICT: dict[str, str] = dict(zip(_TRANSLATE_SRC, _pseudowords(len(_TRANSLATE_SRC))))
TRANSLATE_MIN_LEN = 5  # one clause: det noun verb det noun


def translate_vocabulary() -> list[str]:
    return list(TRANSLATE_DICT) + list(TRANSLATE_DICT.values())


def _split_adjectives(rng: random.Random, extra: int, slots: int, cap: int = 3) -> list[int]:
    counts = [0] * slots
    for _ in range(extra):
        free = [i for i in range(slots) if counts[i] < cap]
        counts[rng.choice(free)] += 1
    return counts


def translate(n: int, seed: int = 1234, min_len: int = TRANSLATE_MIN_LEN, max_len: int = 31) -> list[dict]:
    """Source: clauses ``det adj* noun verb det adj* noun`` joined by ``and`` (English corpus words),
    exactly ``L`` words with L uniform in [min_len, max_len]. Target: word-for-word dictionary into a
    disjoint pseudo-language, each clause reordered S O V with adjectives after their noun."""
    if min_len < TRANSLATE_MIN_LEN or max_len < min_len:
        raise ValueError(f"translate: need {TRANSLATE_MIN_LEN} <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(f"translate:{seed}")
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        # c clauses span [6c-1, 12c-1] words (2..5 words per noun phrase, 1 verb, c-1 "and")
        lo, hi = -(-(length + 1) // 12), (length + 1) // 6
        c = rng.randint(lo, hi)
        adj_counts = _split_adjectives(rng, length - (6 * c - 1), 2 * c)
        src_clauses, tgt_clauses = [], []
        for k in range(c):
            nps = []
            for a in adj_counts[2 * k: 2 * k + 2]:
                det, noun = rng.choice(["the", "a"]), rng.choice(NOUNS)
                adjs = [rng.choice(ADJECTIVES) for _ in range(a)]
                nps.append((det, adjs, noun))
            verb = rng.choice(VERBS)
            (d1, a1, n1), (d2, a2, n2) = nps
            src_clauses.append([d1, *a1, n1, verb, d2, *a2, n2])
            tgt_clauses.append([d1, n1, *a1, d2, n2, *a2, verb])
        src = " and ".join(" ".join(w) for w in src_clauses)
        tgt = " and ".join(" ".join(TRANSLATE_DICT[x] for x in w) for w in tgt_clauses)
        tgt = tgt.replace(" and ", f" {TRANSLATE_DICT['and']} ")
        assert len(src.split()) == length == len(tgt.split())
        out.append({"source": src, "target": tgt})
    return out


# --- single / pair (Q5/Q6) ----------------------------------------------------------------
def _half(words: Sequence[str], split: str) -> list[str]:
    """The first half of ``words`` for the train split, the second half for any other split."""
    k = len(words) // 2
    return list(words[:k] if split == "train" else words[k:])


def single(n: int, seed: int = 1234, split: str = "train") -> list[dict]:
    """``{"text", "label"}``: ``the [ADJ] S VERB the [ADJ] O [in the PLACE] .``, label = polarity of
    the verb; balanced. Each adjective draws its own polarity (a distractor): counting polar words is
    right on about 4 in 5 sentences, only the verb's role tells the rest. Train and val use disjoint
    polarity words (verbs and adjectives)."""
    rng = random.Random(f"single:{split}:{seed}")
    adjs = _half(POS_ADJ, split) + _half(NEG_ADJ, split)
    out = []
    for i in range(n):
        label = i % 2 if n > 1 else rng.randrange(2)
        nouns, places = TOPICS[rng.choice(list(TOPICS))]
        s, o = rng.sample(nouns, 2)
        words = _clause(rng, s, o, _half(POS_VERBS if label else NEG_VERBS, split), adjs, places)
        out.append({"text": " ".join(words), "label": label})
    rng.shuffle(out)
    return out


def pair(n: int, seed: int = 1234, split: str = "train") -> list[dict]:
    """``{"text_a", "text_b", "label"}``: label 1 iff B keeps A's mood (both positive or both
    negative); balanced. Each sentence has its own random topic and mood, so neither segment alone
    tells the label: it is a relation between them, like paraphrase or entailment. Train and val use
    disjoint polarity words, as in :func:`single`.
    """
    rng = random.Random(f"pair:{split}:{seed}")
    out = []
    for i in range(n):
        label = i % 2 if n > 1 else rng.randrange(2)
        mood_a = rng.randrange(2)
        sents = []
        for mood in (mood_a, mood_a if label else 1 - mood_a):
            nouns, places = TOPICS[rng.choice(list(TOPICS))]
            verbs, adjs = (POS_VERBS, POS_ADJ) if mood else (NEG_VERBS, NEG_ADJ)
            s, o = rng.sample(nouns, 2)
            sents.append(" ".join(_clause(rng, s, o, _half(verbs, split), _half(adjs, split), places)))
        out.append({"text_a": sents[0], "text_b": sents[1], "label": label})
    rng.shuffle(out)
    return out


def vocabulary(task: str, **kw) -> list[str]:
    """All symbols a task can emit (the synthetic tokenizer is trained on this list)."""
    if task in ("corpus", "single", "pair", "pair_tag"):
        return english_vocabulary()
    if task == "order":
        return order_vocabulary(kw.get("n_fillers", 16))
    if task == "retrieval":
        return retrieval_vocabulary(kw.get("n_keys", 64), kw.get("n_values", 16))
    if task in ("reverse", "sort"):
        return list(LETTERS)
    if task == "translate":
        return translate_vocabulary()
    if task == "lookup":
        return lookup_vocabulary(kw.get("n_symbols", LOOKUP_SYMBOLS), kw.get("max_offset", LOOKUP_MAX_OFFSET))
    raise ValueError(f"unknown synthetic task {task!r}")


# --- pair_tag (Q5/Q6): token tagging across a pair, the left-to-right gap --------------------
TAG_IGNORE = -100  # tag of a word that is not labelled (the function words)
PAIR_TAG_FUNCTION = ("the", "in")
POLARITY = {**{w: 1 for w in POS_VERBS + POS_ADJ}, **{w: 0 for w in NEG_VERBS + NEG_ADJ}}  # 1 positive


PAIR_TAG_CLAUSES = 3  # clauses per row, split between A and B at a fair coin (one or two for A)
PAIR_TAG_MAX_WORDS = 29  # words per row: [CLS] A [SEP] B [SEP] fits seq_len 32 untruncated


def _tag_clause(rng: random.Random, nouns: Sequence[str], places: Sequence[str], mood: int) -> list[str]:
    """``[in the PLACE] the [ADJ] S VERB the [ADJ] O [in the PLACE]`` (one place at most), without a
    final ".": the verb and every polar adjective have polarity ``mood`` (1 positive, 0 negative)."""
    def adj() -> list[str]:
        r = rng.random()
        return [rng.choice(POS_ADJ if mood else NEG_ADJ)] if r < 0.6 else [rng.choice(NEUTRAL_ADJ)] if r < 0.8 else []

    s, o = rng.sample(list(nouns), 2)
    words = ["the", *adj(), s, rng.choice(POS_VERBS if mood else NEG_VERBS), "the", *adj(), o]
    if rng.random() < 0.4:  # the place opens or closes the clause: no word class only ever ends a sentence
        where = ["in", "the", rng.choice(list(places))]
        words = words + where if rng.random() < 0.5 else where + words
    return words


def pair_tag(n: int, seed: int = 1234, split: str = "train") -> list[dict]:
    """``{"text_a", "text_b", "tags"}``: a token-tagging pair task that only a reader of B can solve,
    and only if it knows where B begins.

    Every row is :data:`PAIR_TAG_CLAUSES` clauses, each of its own topic and of its own mood (a fair
    coin), drawn by one generator whatever segment it lands in; A is the first one or two of them (a
    fair coin), B the rest. ``tags`` has one entry per word of A: the mood of *B's first clause* (1
    positive, 0 negative) for every content word, :data:`TAG_IGNORE` for the function words ("the",
    "in"). Each word of A must report what follows it, as a start/end tag in SQuAD or a token of MRPC's
    first sentence must read the second. A is independent of the tags, so a left-to-right (causal)
    reader of A is at chance by construction, while a reader of B who knows where it begins solves it
    exactly: BERT Table 5's left-to-right gap.

    No "." and no other boundary word, and the clauses of A and B are alike: in ``[CLS] A [SEP] B [SEP]``
    only [SEP] (or the segment ids) marks where A ends. Without them (``pair_format=concat``) the row is
    three clauses and B begins at the second or the third, which nothing in the words tells: on A's first
    clause the best reader is right 0.5 + 0.5 * 0.5 = 3/4 of the time; A's second clause exists only when
    B begins at the third, so its words can be tagged right. Over all the tagged words (a two-clause A
    has twice as many) the bound without a boundary cue is (1 + 1/2 + 1) / 3 = 5/6, against 1.0 with it.
    ``split`` names the stream; no words are held out (the label count of the
    fine-tuning set is what makes pretraining matter).
    """
    rng = random.Random(f"pair_tag:{split}:{seed}")
    topics = list(TOPICS)
    out = []
    for _ in range(n):
        while True:  # redraw the rare row of three longest clauses: the draw does not depend on the split
            moods = [rng.randrange(2) for _ in range(PAIR_TAG_CLAUSES)]
            clauses = [_tag_clause(rng, *TOPICS[rng.choice(topics)], mood=m) for m in moods]
            if sum(map(len, clauses)) <= PAIR_TAG_MAX_WORDS:
                break
        k = rng.randint(1, PAIR_TAG_CLAUSES - 1)  # clauses in A
        a = [w for c in clauses[:k] for w in c]
        b = [w for c in clauses[k:] for w in c]
        tags = [TAG_IGNORE if w in PAIR_TAG_FUNCTION else moods[k] for w in a]
        out.append({"text_a": " ".join(a), "text_b": " ".join(b), "tags": tags})
    return out
# --- offset lookup (Q2, appended for issue 15) --------------------------------------------
LOOKUP_SYMBOLS = 8  # filler symbols s0..s7 (repeats allowed)
LOOKUP_MAX_OFFSET = 2  # the query asks for the token 1 or 2 places before it
LOOKUP_GROUP = 3  # examples per bag and query: rotations with pairwise different answers


def lookup_vocabulary(n_symbols: int = LOOKUP_SYMBOLS, max_offset: int = LOOKUP_MAX_OFFSET) -> list[str]:
    return [f"s{i}" for i in range(n_symbols)] + [f"@{k}" for k in range(1, max_offset + 1)]


def lookup(n: int, seed: int = 1234, min_len: int = 4, max_len: int = 14, n_symbols: int = LOOKUP_SYMBOLS,
           max_offset: int = LOOKUP_MAX_OFFSET, group: int = LOOKUP_GROUP) -> list[dict]:
    """``{"text": "s3 s6 s1 s7 @2", "label": 1}``: label = the index of the symbol ``k`` places before the
    query ``@k`` (here s1). Only positions tell the answer: examples come in groups of ``group``
    (the last group may be cut at ``n``) with the same bag of symbols and the same query, the symbols
    cyclically rotated so that the answers of a group are pairwise different. Any function of the bag
    and the query (a model without positions, e.g. a bidirectional encoder with NoPE) is right on at
    most one example per group: accuracy <= 1/group. Offsets are relative to the query, so the
    same rule holds at any length (length generalisation, Q2)."""
    if min(min_len, n_symbols) < max(max_offset, group) or max_len < min_len:
        raise ValueError(f"lookup: need max(max_offset, group) <= min(min_len, n_symbols) and min_len <= max_len, got "
                         f"max_offset={max_offset}, group={group}, min_len={min_len}, max_len={max_len}, "
                         f"n_symbols={n_symbols}")
    rng = random.Random(f"lookup:{seed}")
    out: list[dict] = []
    while len(out) < n:
        length = rng.randint(min_len, max_len)
        seq = [rng.randrange(n_symbols) for _ in range(length)]
        k = rng.randint(1, max_offset)
        by_answer: dict[int, int] = {}  # answer symbol -> one shift giving it
        for shift in rng.sample(range(length), length):
            by_answer.setdefault(seq[(shift + length - k) % length], shift)
        if len(by_answer) < group:
            continue  # too few distinct symbols for a group with pairwise different answers
        for answer in rng.sample(sorted(by_answer), group):
            rot = seq[by_answer[answer]:] + seq[:by_answer[answer]]
            out.append({"text": " ".join(f"s{i}" for i in rot) + f" @{k}", "label": rot[length - k]})
    return out[:n]
