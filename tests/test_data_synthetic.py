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


def test_corpus_documents_are_coherent_and_order_carries_meaning():
    docs = syn.corpus(50, seed=0, min_sents=4, max_sents=6)
    assert all(4 <= len(d) <= 6 for d in docs)
    nouns = set(syn.NOUNS)
    for doc in docs:
        ents = [{w for w in s.split() if w in nouns} for s in doc]
        assert len(set().union(*ents)) <= 3  # one document talks about its three entities
        topic = {t for t, (ns, _) in syn.TOPICS.items() if set().union(*ents) <= set(ns)}
        assert len(topic) == 1
        # one mood per document: polarity of every clause (verb polarity XOR never) and of every
        # non-neutral adjective agrees, and each entity keeps its adjective
        pols, bound = set(), {}
        for s in doc:
            w = s.split()
            verbs = [x for x in w if x in syn.VERBS]
            if verbs:
                pols.add((verbs[0] in syn.POS_VERBS) ^ (syn.NEGATOR in w))
            pols |= {x in syn.POS_ADJ for x in w if x in syn.POS_ADJ + syn.NEG_ADJ}
            for i, x in enumerate(w[:-1]):
                if x in syn.POS_ADJ + syn.NEG_ADJ and w[i + 1] in nouns:
                    assert bound.setdefault(w[i + 1], x) == x
        assert len(pols) == 1
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


def test_single_label_is_polarity_and_train_split_holds_out_verbs():
    train = syn.single(400, seed=0, split="train")
    val = syn.single(400, seed=0, split="val")
    for data in (train, val):
        assert Counter(ex["label"] for ex in data) == Counter({0: 200, 1: 200})
        for ex in data:
            w = ex["text"].split()
            verb = next(x for x in w if x in syn.VERBS)
            assert ex["label"] == int((verb in syn.POS_VERBS) ^ (syn.NEGATOR in w))
    used = lambda data: {x for ex in data for x in ex["text"].split() if x in syn.VERBS}
    assert len(used(train)) == 24 and len(used(val)) == 32


def _topic(text: str) -> str:
    words = set(text.split())
    (topic,) = {t for t, (ns, ps) in syn.TOPICS.items() if words & set(ns + ps)}
    return topic


def test_pair_label_is_same_topic_and_needs_both_segments():
    data = syn.pair(400, seed=0)
    assert Counter(ex["label"] for ex in data) == Counter({0: 200, 1: 200})
    for ex in data:
        assert ex["label"] == int(_topic(ex["text_a"]) == _topic(ex["text_b"]))
    # neither segment alone tells the label: every topic is as often in either class
    for seg in ("text_a", "text_b"):
        by_topic = Counter((_topic(ex[seg]), ex["label"]) for ex in data)
        for t in syn.TOPICS:
            assert abs(by_topic[(t, 1)] - by_topic[(t, 0)]) < 20
    assert syn.pair(50, seed=0, split="val") != syn.pair(50, seed=0, split="train")
