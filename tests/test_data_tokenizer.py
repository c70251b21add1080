"""Tokenizer: special ids, caching by content hash, bytes round trip, and racing processes."""

import hashlib
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import pytest

from transformer_ablations.config import ConfigError, DataConfig, RunConfig
from transformer_ablations.data import synthetic as syn
from transformer_ablations.data import tokenizer as tokmod
from transformer_ablations.data.tokenizer import Tokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog .",
    "a journey of a thousand miles begins with a single step .",
    "all that glitters is not gold ; all who wander are not lost .",
    "to be or not to be , that is the question .",
] * 20


def test_special_ids_are_fixed_for_every_model_type():
    for model_type, texts in (("word", syn.english_vocabulary()), ("unigram", TEXTS)):
        tok = Tokenizer.train(texts, 200, model_type=model_type)
        assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
        assert (tok.cls_id, tok.sep_id, tok.mask_id) == (4, 5, 6)
        assert tok.special_ids == {0, 1, 2, 3, 4, 5, 6}
        assert [tok.id_to_piece(i) for i in (4, 5, 6)] == ["[CLS]", "[SEP]", "[MASK]"]
        assert not set(tok.encode("[CLS] [SEP] [MASK] the")) & {4, 5, 6}  # text never makes a special id


def test_word_model_gives_one_token_per_symbol():
    vocab = syn.vocabulary("retrieval", n_keys=64, n_values=16)
    tok = Tokenizer.train(vocab, len(vocab) + 7, model_type="word")
    assert tok.vocab_size == len(vocab) + 7
    text = syn.retrieval(1, seed=0)[0]["text"]
    ids = tok.encode(text)
    assert len(ids) == len(text.split()) and tok.unk_id not in ids
    assert tok.decode(ids) == text
    assert tok.decode([tok.cls_id, *ids, tok.sep_id, tok.pad_id]) == f"[CLS] {text} [SEP]"


def test_vocab_size_too_large_or_too_small_for_a_small_corpus_does_not_crash():
    big = Tokenizer.train(TEXTS, 50_000, model_type="unigram")
    assert 7 < big.vocab_size < 50_000
    small = Tokenizer.train(TEXTS, 10, model_type="unigram")  # below the character set: grows to fit
    assert small.vocab_size >= 10
    word = Tokenizer.train(["a b c"], 10_000, model_type="word")
    assert word.vocab_size == 10
    with pytest.raises(ConfigError, match="empty corpus"):
        Tokenizer.train(["", "  "], 100)


def test_second_build_is_a_cache_hit(tmp_path):
    calls = tokmod.TRAIN_CALLS
    t1 = Tokenizer.train_or_load(TEXTS, 120, tmp_path, "unigram")
    assert tokmod.TRAIN_CALLS == calls + 1 and not t1.from_cache
    files = list((tmp_path / "tokenizers").glob("*.model"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    t2 = Tokenizer.train_or_load(iter(TEXTS), 120, tmp_path, "unigram")
    assert tokmod.TRAIN_CALLS == calls + 1 and t2.from_cache
    assert files[0].stat().st_mtime_ns == mtime
    assert t1 == t2 and t1.to_bytes() == t2.to_bytes()
    t3 = Tokenizer.train_or_load(TEXTS, 121, tmp_path, "unigram")  # other vocab size: other entry
    assert not t3.from_cache and len(list((tmp_path / "tokenizers").glob("*.model"))) == 2
    t4 = Tokenizer.train_or_load(TEXTS[:-1], 120, tmp_path, "unigram")  # other texts: other entry
    assert not t4.from_cache


def test_training_texts_are_streamed_once_and_sampled_to_a_bound(tmp_path):
    small = ["", *TEXTS, "  "]
    assert tokmod.sample_texts(iter(small), k=100) == TEXTS  # a corpus under the bound: all of it, in order
    many = [f"sentence {i}" for i in range(1000)]
    sample = tokmod.sample_texts(iter(many), k=100)
    assert len(sample) == 100 and len(set(sample)) == 100 and set(sample) <= set(many)
    assert sample == tokmod.sample_texts(many, k=100)  # the same sample in every process
    assert sum(int(t.split()[1]) >= 500 for t in sample) > 25  # drawn from the whole stream, not its head
    reads = []

    def stream():  # a one-shot generator: hashed and sampled in a single pass
        for t in TEXTS:
            reads.append(t)
            yield t

    tok = Tokenizer.train_or_load(stream(), 120, tmp_path, "unigram")
    assert reads == TEXTS and tok == Tokenizer.train(TEXTS, 120)
    assert Tokenizer.train_or_load(TEXTS, 120, tmp_path, "unigram").from_cache


def test_bytes_and_pickle_round_trip_encode_identically():
    tok = Tokenizer.train(TEXTS, 120)
    back = Tokenizer.from_bytes(tok.to_bytes())
    pick = pickle.loads(pickle.dumps(tok))
    for text in TEXTS[:4] + ["unseen words like zebra"]:
        assert back.encode(text) == tok.encode(text) == pick.encode(text)
    assert back.hash == tok.hash and back.vocab_size == tok.vocab_size
    with pytest.raises(ConfigError, match="special ids"):
        import io

        import sentencepiece as spm  # a model with other special ids is refused

        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=60,
                                       minloglevel=2, hard_vocab_limit=False)
        Tokenizer.from_bytes(buf.getvalue())


# --- racing processes ---------------------------------------------------------------------
def _race_worker(cache_dir: str, barrier, queue) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import datasets

    datasets.disable_progress_bars()
    from transformer_ablations.data import tokenizer as tm
    from transformer_ablations.tasks import prepare

    try:
        barrier.wait(timeout=60)
        tok = tm.Tokenizer.train_or_load(TEXTS * 5, 150, cache_dir, "unigram")
        cfg = RunConfig(objective="none", data=DataConfig(task="pair", n_train=300, n_val=40, cache_dir=cache_dir))
        p = prepare(cfg)
        h = hashlib.sha256()
        for name, ds in p.splits.items():
            h.update(name.encode())
            h.update(pickle.dumps(ds[:]))
        queue.put(("ok", tok.hash, tm.TRAIN_CALLS, str(p.path), h.hexdigest(), p.tokenizer.hash))
    except BaseException as e:  # noqa: BLE001
        queue.put(("error", repr(e)))


def test_parallel_processes_racing_for_the_same_caches_all_succeed(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path), barrier, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(r[0] == "ok" for r in results), results
    assert len({r[1] for r in results}) == 1  # the same tokenizer everywhere
    assert sum(r[2] for r in results) == 1 + 1  # the unigram model and the pair task's word model trained once each
    assert len({r[3] for r in results}) == 1 and len({r[4] for r in results}) == 1 and len({r[5] for r in results}) == 1
    models = sorted(p.name for p in (tmp_path / "tokenizers").glob("*.model"))
    assert len(models) == 2
    entries = [p.name for p in (tmp_path / "datasets").iterdir() if not p.name.endswith(".lock")]
    assert entries == [Path(results[0][3]).name]  # one dataset folder, no temp leftovers
    assert not [p for p in (tmp_path / "tokenizers").iterdir() if p.name.endswith(".tmp")]
