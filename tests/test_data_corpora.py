"""file: and hf: sources: formats, splits, and one-line ConfigErrors for bad inputs."""

import json
import random
import shutil

import datasets
import pytest

from transformer_ablations.config import ConfigError, DataConfig, RunConfig
from transformer_ablations.data import corpora
from transformer_ablations.data.builders import DATA_SEED
from transformer_ablations.data.examples import pair_examples
from transformer_ablations.data.tokenizer import Tokenizer
from transformer_ablations.tasks import prepare

datasets.disable_progress_bars()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _story(n_docs: int, sents: int = 6) -> str:
    return "\n\n".join(
        "\n".join(f"Sentence {j} of story {i} tells about the cat number {i % 7}. It ends here." for j in range(sents))
        for i in range(n_docs)
    )


def test_parse_source():
    assert corpora.parse_source("synthetic") == ("synthetic", "", None)
    assert corpora.parse_source("file:../x/y.txt") == ("file", "../x/y.txt", None)
    assert corpora.parse_source("hf:glue:sst2") == ("hf", "glue", "sst2")
    assert corpora.parse_source("hf:bookcorpus") == ("hf", "bookcorpus", None)
    with pytest.raises(ConfigError) as e:
        corpora.parse_source("ftp://x")
    assert "data.source=ftp://x" in _one_line(e) and "synthetic, file:<path>" in str(e.value)


def test_txt_blocks_are_documents_and_lines_and_periods_split_sentences(tmp_path):
    f = _write(tmp_path / "c.txt", "First line. Second one!\nThird\n\n\nOther doc? Yes.\n\nLast doc here\n")
    tc = corpora.load_text_corpus(f"file:{f}")
    docs = list(tc.train_docs) + list(tc.val_docs)
    assert docs == [["First line.", "Second one!", "Third"], ["Other doc?", "Yes."], ["Last doc here"]]
    assert list(tc.val_docs) == [["Last doc here"]]  # a single file: the last 10% of documents (>= 1) are held out


def test_txt_without_blank_lines_is_cut_into_documents(tmp_path):
    f = _write(tmp_path / "lines.txt", "\n".join(f"line {i} ." for i in range(100)))
    tc = corpora.load_text_corpus(f"file:{f}")
    docs = list(tc.train_docs) + list(tc.val_docs)
    assert len(docs) == 4 and sum(map(len, docs)) == 100


def test_tsv_labeled_single_and_pair(tmp_path):
    f = _write(tmp_path / "s.tsv", "sentence\tlabel\n" + "".join(f"good movie {i} \t{i % 2}\n" for i in range(20)))
    ld = corpora.load_labeled(f"file:{f}")
    assert not ld.is_pair and ld.num_classes == 2 and len(ld.train) == 18 and len(ld.val) == 2
    assert {r["label"] for r in ld.train + ld.val} == {0, 1}
    p = _write(tmp_path / "p.tsv", "id\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\ta {i}\tb \"{i}\"\t{i % 3}\n" for i in range(30)))
    lp = corpora.load_labeled(f"file:{p}")
    assert lp.is_pair and lp.num_classes == 3
    assert all(r["text_b"].startswith("b \"") for r in lp.train)  # quotes kept verbatim (QUOTE_NONE)


def test_tsv_without_label_column(tmp_path):
    f = _write(tmp_path / "u.tsv", "sentence\n" + "".join(f"just text {i} .\n" for i in range(40)))
    with pytest.raises(ConfigError) as e:
        corpora.load_labeled(f"file:{f}")
    msg = _one_line(e)
    assert f"data.source=file:{f}" in msg and "no 'label' column" in msg and "columns: sentence" in msg
    tc = corpora.load_text_corpus(f"file:{f}")  # fine as a pretraining corpus
    assert sum(len(d) for d in [*tc.train_docs, *tc.val_docs]) == 40


def test_non_integer_labels(tmp_path):
    f = _write(tmp_path / "bad.tsv", "sentence\tlabel\nfine\t1\nawful\tneg\n")
    with pytest.raises(ConfigError) as e:
        corpora.load_labeled(f"file:{f}")
    assert "label 'neg'" in _one_line(e) and "not a non-negative integer" in str(e.value)
    g = _write(tmp_path / "bad.jsonl", '{"sentence": "x", "label": 0.5}\n{"sentence": "y", "label": 1}\n')
    with pytest.raises(ConfigError):
        corpora.load_labeled(f"file:{g}")


def test_tsv_row_with_wrong_column_count(tmp_path):
    f = _write(tmp_path / "ragged.tsv", "sentence\tlabel\nok\t1\nno label here\n")
    with pytest.raises(ConfigError) as e:
        corpora.load_labeled(f"file:{f}")
    assert "line 3 has 1 columns" in _one_line(e)


def test_jsonl_text_and_labeled(tmp_path):
    f = _write(tmp_path / "docs.jsonl", "\n".join(
        json.dumps({"text": f"Doc {i} first. Doc {i} second.\nThird of {i}."}) for i in range(10)))
    tc = corpora.load_text_corpus(f"file:{f}")
    assert next(iter(tc.train_docs)) == ["Doc 0 first.", "Doc 0 second.", "Third of 0."] and len(list(tc.val_docs)) == 1
    g = _write(tmp_path / "pairs.jsonl", "\n".join(
        json.dumps({"sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2}) for i in range(10)))
    ld = corpora.load_labeled(f"file:{g}")
    assert ld.is_pair and len(ld.train) + len(ld.val) == 10
    h = _write(tmp_path / "broken.jsonl", '{"text": "ok"}\n{oops\n')
    with pytest.raises(ConfigError) as e:
        corpora.load_text_corpus(f"file:{h}")
    assert "line 2 is not valid JSON" in _one_line(e)


def test_directory_with_train_and_dev_tsv(tmp_path):
    d = tmp_path / "sst"
    d.mkdir()
    _write(d / "train.tsv", "sentence\tlabel\n" + "".join(f"train {i}\t{i % 2}\n" for i in range(12)))
    _write(d / "dev.tsv", "sentence\tlabel\n" + "".join(f"dev {i}\t{i % 2}\n" for i in range(4)))
    ld = corpora.load_labeled(f"file:{d}")
    assert len(ld.train) == 12 and len(ld.val) == 4
    assert all(r["text_a"].startswith("dev") for r in ld.val)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ConfigError) as e:
        corpora.load_labeled(f"file:{empty}")
    assert "no train.tsv" in _one_line(e)


def test_parallel_tsv(tmp_path):
    f = _write(tmp_path / "mt.tsv", "source\ttarget\n" + "".join(f"ein {i}\tone {i}\n" for i in range(20)))
    pd = corpora.load_parallel(f"file:{f}")
    assert len(pd.train) == 18 and pd.val[0]["source"].startswith("ein")


@pytest.mark.parametrize("case", ["missing", "empty", "blank", "latin1", "header_only"])
def test_bad_files_are_one_line_config_errors(tmp_path, case):
    f = tmp_path / ("x.tsv" if case == "header_only" else "x.txt")
    if case == "empty":
        f.write_bytes(b"")
    elif case == "blank":
        f.write_text("\n  \n\n")
    elif case == "latin1":
        f.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    elif case == "header_only":
        f.write_text("sentence\tlabel\n")
    source = f"file:{f}"
    with pytest.raises(ConfigError) as e:
        if case == "header_only":
            corpora.load_labeled(source)
        else:
            corpora.load_text_corpus(source)
    msg = _one_line(e)
    assert msg.startswith(f"data.source={source}: ")
    expect = {"missing": "file not found", "empty": "is empty", "blank": "is empty",
              "latin1": "not valid UTF-8 (byte 0xe9 at offset 3)", "header_only": "no rows"}[case]
    assert expect in msg


def test_text_corpus_too_short_for_n_train(tmp_path):
    f = _write(tmp_path / "short.txt", _story(10))
    cfg = RunConfig(objective="mlm", data=DataConfig(source=f"file:{f}", task="corpus", seq_len=32, n_train=500,
                                                     n_val=4, vocab_size=60, cache_dir=str(tmp_path / "c")))
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    msg = _one_line(e)
    assert "corpus too short" in msg and "data.n_train=500" in msg
    cfg.data.n_train = 0  # 0 = all of it
    p = prepare(cfg)
    assert 0 < len(p.splits["train"]) < 500


def test_text_file_is_read_line_by_line_not_whole(tmp_path):
    good = "".join(f"Line {i} of the corpus.\n" + ("\n" if i % 5 == 4 else "") for i in range(3000)).encode()
    f = tmp_path / "big.txt"
    f.write_bytes(good + b"caf\xe9\n")  # a bad byte at the very end
    lines = corpora.read_lines(f, f"file:{f}")
    assert next(lines) == "Line 0 of the corpus."  # read before the decoder reaches the end of the file
    docs = corpora.lines_to_documents(lines)
    assert next(docs) == [f"Line {i} of the corpus." for i in range(1, 5)]
    with pytest.raises(ConfigError, match=f"byte 0xe9 at offset {len(good) + 3}"):
        list(docs)
    f.write_bytes(good)
    tc = corpora.load_text_corpus(f"file:{f}")
    assert not isinstance(tc.train_docs, list)  # read from the file again at every pass
    in_memory = list(corpora.lines_to_documents(f.read_text(encoding="utf-8").splitlines()))
    assert len(in_memory) == 600 and list(tc.train_docs) + list(tc.val_docs) == in_memory
    assert list(tc.train_docs) == in_memory[:540]


@pytest.mark.parametrize("objective", ["causal", "mlm_nsp"])
def test_streamed_corpus_gives_the_ids_of_an_in_memory_encode(tmp_path, objective):
    # a document whose only sentence encodes to no ids (a control character), one with such a sentence, a long one
    odd = "\x01\n\nShort one. \x01\nthen more\n\n" + "long " * 300 + "\n\n"
    f = _write(tmp_path / "c.txt", odd + _story(40))
    L = 32
    cfg = RunConfig(objective=objective, data=DataConfig(source=f"file:{f}", task="corpus", seq_len=L, n_train=0,
                                                         n_val=4, vocab_size=80, cache_dir=str(tmp_path / "c")))
    p = prepare(cfg)
    docs = list(corpora.lines_to_documents(f.read_text(encoding="utf-8").splitlines()))
    assert len(docs) == 43
    docs = docs[:-4]  # the last 10% are held out
    tok = p.tokenizer
    assert tok == Tokenizer.train([s for d in docs for s in d], 80)
    tdocs = [[tok.encode(s) for s in d] for d in docs]
    assert tdocs[0] == [[]] and [] in tdocs[1]
    train = p.splits["train"]
    if objective == "causal":
        stream = [t for d in tdocs for t in [*(t for s in d for t in s), tok.eos_id]]
        want = [stream[i: i + L] for i in range(0, len(stream) - L + 1, L)]
        assert train["input_ids"] == want
    else:
        rng = random.Random(f"examples:{DATA_SEED}:train")
        want = list(pair_examples(tdocs, L - 3, rng, nsp=True))
        assert [{k: r[k] for k in ("a_ids", "b_ids", "nsp_label")} for r in train] == want
    assert train["idx"] == list(range(len(train)))
    assert sorted(x.name for x in p.path.parent.iterdir()) == [p.path.name, f"{p.path.name}.lock"]  # no scratch left


def test_scratch_of_a_killed_build_is_cleared_by_the_next(tmp_path):
    cfg = RunConfig(objective="causal", data=DataConfig(task="corpus", seq_len=16, n_train=20, n_val=4,
                                                        cache_dir=str(tmp_path)))
    path = prepare(cfg).path
    shutil.rmtree(path)
    for stale in (f".{path.name}.build-dead", f".{path.name}.tmp-1-dead"):
        (path.parent / stale).mkdir()
        (path.parent / stale / "data.arrow").write_bytes(b"x" * 100)
    assert prepare(cfg).path == path and (path / "meta.json").exists()
    assert sorted(x.name for x in path.parent.iterdir()) == [path.name, f"{path.name}.lock"]


def test_classification_task_on_plain_text_is_refused(tmp_path):
    f = _write(tmp_path / "c.txt", _story(5))
    cfg = RunConfig(objective="none", data=DataConfig(source=f"file:{f}", task="single", cache_dir=str(tmp_path)))
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    assert "plain text" in _one_line(e)
    cfg.data.task = "order"
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    assert "needs data.source=synthetic" in _one_line(e)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)


def test_hf_text_dataset_streams_its_documents(offline, tmp_path):
    d = tmp_path / "local_ds"  # a local folder: datasets.load_dataset reads it with its "text" builder
    d.mkdir()
    _write(d / "train.txt", _story(20, sents=2))
    tc = corpora.load_text_corpus(f"hf:{d}")
    assert not isinstance(tc.train_docs, list)
    first = ["Sentence 0 of story 0 tells about the cat number 0.", "It ends here.",
             "Sentence 1 of story 0 tells about the cat number 0.", "It ends here."]
    assert next(iter(tc.train_docs)) == first
    assert len(list(tc.train_docs)) == 18 and len(list(tc.val_docs)) == 2


@pytest.mark.parametrize("source,task,label", [
    ("hf:glue:sst2", "single", "glue/sst2"),
    ("hf:wikitext:wikitext-103-raw-v1", "corpus", "wikitext/wikitext-103-raw-v1"),
    ("hf:no-such-dataset-xyz", "corpus", "no-such-dataset-xyz"),
    ("hf:wmt16:de-en", "translate", "wmt16/de-en"),
])
def test_hf_source_offline_is_a_one_line_config_error(offline, tmp_path, source, task, label):
    obj = {"single": "none", "corpus": "mlm", "translate": "seq2seq"}[task]
    cfg = RunConfig(objective=obj, data=DataConfig(source=source, task=task, cache_dir=str(tmp_path / "c")))
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    msg = _one_line(e)
    assert msg.startswith(f"data.source={source}: cannot reach the Hugging Face hub for '{label}'")
    assert "HF_HUB_OFFLINE=0 python -c" in msg and "or use file:" in msg
