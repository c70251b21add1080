"""The synthetic generators: deterministic, and each task measures what DESIGN.md needs."""

from collections import Counter

import pytest

from transformer_ablations.data import synthetic as syn

GENERATORS = {
    "corpus": lambda seed: syn.corpus(20, seed=seed),
    "order": lambda seed: syn.order(40, seed=seed),
    "retrieval": lambda seed: syn.retrieval(40, seed=seed),
    "reverse": lambda seed: syn.reverse(40, seed=seed),
    "sort": lambda seed: syn.sort(40, seed=seed),
    "translate": lambda seed: syn.translate(40, seed=seed),
    "single": lambda seed: syn.single(40, seed=seed),
    "pair": lambda seed: syn.pair(40, seed=seed),
}


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_same_seed_same_data_other_seed_other_data(task):
    gen = GENERATORS[task]
    assert gen(1) == gen(1)
    assert gen(1) != gen(2)


@pytest.mark.parametrize("task", sorted(GENERATORS))
def test_every_symbol_is_in_the_task_vocabulary(task):
    vocab = set(syn.vocabulary(task))
    data = GENERATORS[task](3)
    texts = [s for doc in data for s in doc] if task == "corpus" else [
        v for ex in data for k, v in ex.items() if k != "label"]
    words = {w for t in texts for w in t.split()}
    assert words <= vocab, words - vocab


def test_corpus_documents_keep_one_topic_and_one_mood():
    docs = syn.corpus(50, seed=0, min_sents=4, max_sents=6)
    assert all(4 <= len(d) <= 6 for d in docs)
    moods = set()
    for doc in docs:
        words = set(" ".join(doc).split())
        topic = {t for t, (ns, ps) in syn.TOPICS.items() if words & set(ns + ps)}
        assert len(topic) == 1  # every noun and place of a document is of its topic
        polar = words & set(syn.VERBS + syn.POS_ADJ + syn.NEG_ADJ)
        pos = polar <= set(syn.POS_VERBS + syn.POS_ADJ)
        assert pos or polar <= set(syn.NEG_VERBS + syn.NEG_ADJ)  # every polar word has the document's mood
        moods.add(pos)
    assert moods == {True, False}
    _, topics = syn.corpus(50, seed=0, min_sents=4, max_sents=6, return_topics=True)
    assert len(topics) == 50 and set(topics) <= set(range(len(syn.TOPICS)))


def test_order_twins_share_their_bag_and_labels_are_balanced():
    data = syn.order(200, seed=5, min_len=4, max_len=20)
    assert len(data) == 200
    labels = Counter(ex["label"] for ex in data)
    assert labels[0] == labels[1] == 100
    for i in range(0, len(data), 2):
        a, b = data[i], data[i + 1]
        assert Counter(a["text"].split()) == Counter(b["text"].split())  # same multiset of tokens
        assert {a["label"], b["label"]} == {0, 1}
        for ex in (a, b):
            w = ex["text"].split()
            assert w.count("A") == w.count("B") == 1
            assert ex["label"] == int(w.index("A") < w.index("B"))
            assert 4 <= len(w) <= 20


def test_order_is_at_exactly_chance_for_any_permutation_invariant_classifier():
    data = syn.order(100, seed=9)

    def bag_classifier(text):  # any function of the multiset of tokens
        return hash(tuple(sorted(text.split()))) % 2

    correct = sum(bag_classifier(ex["text"]) == ex["label"] for ex in data)
    assert correct == len(data) // 2


def test_retrieval_label_is_the_queried_value():
    data = syn.retrieval(100, seed=1, min_pairs=2, max_pairs=10, n_keys=20, n_values=8)
    for ex in data:
        w = ex["text"].split()
        assert w[-2] == "?"
        pairs = dict(zip(w[:-2:2], w[1:-2:2]))
        assert len(pairs) == (len(w) - 2) // 2  # keys distinct
        assert pairs[w[-1]] == f"v{ex['label']}"
        assert 2 <= len(pairs) <= 10
    assert len({ex["label"] for ex in data}) > 4


def test_reverse_and_sort_targets_and_length_spread():
    for gen, fn in ((syn.reverse, lambda s: s[::-1]), (syn.sort, sorted)):
        data = gen(300, seed=2, min_len=2, max_len=12)
        lens = Counter(len(ex["source"].split()) for ex in data)
        assert set(lens) == set(range(2, 13))
        for ex in data:
            assert ex["target"].split() == fn(ex["source"].split())


def test_translate_dictionary_reordering_and_disjoint_vocabularies():
    data = syn.translate(300, seed=4, min_len=5, max_len=25)
    assert {len(ex["source"].split()) for ex in data} == set(range(5, 26))
    src_words = {w for ex in data for w in ex["source"].split()}
    tgt_words = {w for ex in data for w in ex["target"].split()}
    assert not src_words & tgt_words
    inverse = {v: k for k, v in syn.TRANSLATE_DICT.items()}
    ex = next(e for e in data if " and " not in e["source"] and len(e["source"].split()) == 5)
    det1, n1, verb, det2, n2 = ex["source"].split()
    assert [inverse[w] for w in ex["target"].split()] == [det1, n1, det2, n2, verb]  # SVO -> SOV
    for ex in data:  # same words, translated one for one, verbs last in each clause
        back = [inverse[w] for w in ex["target"].split()]
        assert Counter(back) == Counter(ex["source"].split())
        for clause in " ".join(back).split(" and "):
            assert clause.split()[-1] in syn.VERBS


def test_translate_adjectives_follow_their_noun():
    ex = next(e for e in syn.translate(200, seed=0, min_len=7, max_len=7) if " and " not in e["source"])
    inverse = {v: k for k, v in syn.TRANSLATE_DICT.items()}
    back = [inverse[w] for w in ex["target"].split()]
    for i, w in enumerate(back):
        if w in syn.ADJECTIVES:
            assert back[i - 1] in syn.NOUNS or back[i - 1] in syn.ADJECTIVES


def test_single_label_is_the_verbs_polarity_and_splits_use_disjoint_polarity_words():
    train = syn.single(400, seed=0, split="train")
    val = syn.single(400, seed=0, split="val")
    polar = lambda ex: {x for x in ex["text"].split() if x in syn.VERBS + syn.POS_ADJ + syn.NEG_ADJ}
    for data in (train, val):
        assert Counter(ex["label"] for ex in data) == Counter({0: 200, 1: 200})
        for ex in data:
            (verb,) = polar(ex) & set(syn.VERBS)
            assert syn.POLARITY[verb] == ex["label"]
    used = lambda data: set().union(*map(polar, data))
    assert not used(train) & used(val)
    assert len(used(train)) == len(used(val)) == 24  # half of the 32 verbs and of the 16 polar adjectives
    # the adjectives are distractors: their polarity is independent of the label, and a reader who
    # counts polar words (ignoring which one is the verb) is right on about 4 in 5 sentences only
    adj = [(syn.POLARITY[w], ex["label"]) for ex in val for w in ex["text"].split() if w in syn.POS_ADJ + syn.NEG_ADJ]
    assert abs(sum(a == lab for a, lab in adj) / len(adj) - 0.5) < 0.06
    count = [(sum(2 * syn.POLARITY[w] - 1 for w in ex["text"].split() if w in syn.POLARITY), ex["label"]) for ex in val]
    acc = sum(1.0 if (c > 0) == bool(lab) else 0.0 if c else 0.5 for c, lab in count) / len(count)
    assert 0.7 < acc < 0.85, acc


def _mood(text: str) -> int:
    words = set(text.split())
    (mood,) = {int(w in syn.POS_VERBS + syn.POS_ADJ) for w in words if w in syn.VERBS + syn.POS_ADJ + syn.NEG_ADJ}
    return mood


def test_pair_label_is_same_mood_needs_both_segments_and_splits_use_disjoint_words():
    data = syn.pair(400, seed=0)
    assert Counter(ex["label"] for ex in data) == Counter({0: 200, 1: 200})
    for ex in data:
        assert ex["label"] == int(_mood(ex["text_a"]) == _mood(ex["text_b"]))
    # neither segment alone tells the label: either mood is as often in either class
    for seg in ("text_a", "text_b"):
        by_mood = Counter((_mood(ex[seg]), ex["label"]) for ex in data)
        assert all(abs(by_mood[(m, 1)] - by_mood[(m, 0)]) < 30 for m in (0, 1))
    val = syn.pair(400, seed=0, split="val")
    polar = lambda rows: {x for ex in rows for x in (ex["text_a"] + " " + ex["text_b"]).split()} & set(
        syn.VERBS + syn.POS_ADJ + syn.NEG_ADJ)
    assert not polar(data) & polar(val)
    assert len(polar(data)) == len(polar(val)) == 24
