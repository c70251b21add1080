"""build_datamodule for every task: batch keys of docs/ARCHITECTURE.md, caching, seeding."""

import time
from typing import get_args

import datasets
import pytest
import torch

from transformer_ablations.config import ConfigError, DataConfig, ModelConfig, RunConfig, Task
from transformer_ablations.data import synthetic
from transformer_ablations.data.datamodule import EVAL_BATCH_FACTOR
from transformer_ablations.tasks import CLASSIFICATION, SEQ2SEQ, build_datamodule, prepare, tasks_of

CLASSIFICATION_TASKS, SEQ2SEQ_TASKS = tasks_of(CLASSIFICATION), tasks_of(SEQ2SEQ)

datasets.disable_progress_bars()

KEYS = {
    "mlm": {"input_ids", "attention_mask", "segment_ids", "labels"},
    "mlm_nsp": {"input_ids", "attention_mask", "segment_ids", "labels", "nsp_labels"},
    "causal": {"input_ids", "attention_mask", "labels"},
    "encoder_decoder": {"src_ids", "src_mask", "tgt_in_ids", "tgt_mask", "labels", "src_len"},
    "decoder": {"input_ids", "attention_mask", "prefix_len", "labels", "src_len"},
    "classification": {"input_ids", "attention_mask", "segment_ids", "labels"},
}
MASKS = {"attention_mask", "src_mask", "tgt_mask"}


def _cases():
    cases = []
    for task in get_args(Task):
        if task == "corpus":
            cases += [(task, "mlm", "encoder"), (task, "mlm_nsp", "encoder"), (task, "causal", "decoder")]
        elif task in SEQ2SEQ_TASKS:
            cases += [(task, "seq2seq", "encoder_decoder"), (task, "seq2seq", "decoder")]
        else:
            assert task in CLASSIFICATION_TASKS
            cases += [(task, "none", "encoder")]
    return cases


def _cfg(tmp_path, task, objective="none", arch="encoder", seed=0, **data):
    kw = {"task": task, "seq_len": 32, "n_train": 48, "n_val": 12, "batch_size": 8, "cache_dir": str(tmp_path / "cache")}
    kw.update(data)
    return RunConfig(objective=objective, seed=seed, model=ModelConfig(arch=arch), data=DataConfig(**kw))


@pytest.mark.parametrize("task,objective,arch", _cases())
def test_every_task_gives_batches_with_the_contract_keys(tmp_path, task, objective, arch):
    multiples = [2] if task not in ("single", "pair", "pair_tag") else []
    cfg = _cfg(tmp_path, task, objective, arch, eval_length_multiples=multiples)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    kind = objective if task == "corpus" else ("classification" if task in CLASSIFICATION_TASKS else arch)
    want = KEYS[kind]
    assert dm.val_names == ["val"] + [f"val_len{m}x" for m in multiples]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == len(dm.val_names)
    V = dm.tokenizer.vocab_size
    for name, loader in [("train", dm.train_dataloader())] + list(zip(dm.val_names, loaders)):
        batch = next(iter(loader))
        assert set(batch) == want, (name, set(batch) ^ want)
        for k, v in batch.items():
            assert v.dtype == (torch.bool if k in MASKS else torch.long), k
        B = batch["labels"].shape[0]
        assert B == (8 if name == "train" else min(8 * EVAL_BATCH_FACTOR, len(dm.datasets[name])))
        limit = cfg.data.seq_len * (int(name[7:-1]) if name.startswith("val_len") else 1)
        for k in ("input_ids", "src_ids", "tgt_in_ids"):
            if k in batch:
                assert batch[k].shape[0] == B and batch[k].shape[1] <= limit
                assert int(batch[k].max()) < V and int(batch[k].min()) >= 0
        if kind == "classification":
            assert dm.num_classes == {"order": 2, "retrieval": 16, "single": 2, "pair": 2, "pair_tag": 2,
                                      "lookup": synthetic.LOOKUP_SYMBOLS}[task]
            rows = (B, batch["input_ids"].shape[1]) if task == "pair_tag" else (B,)  # token tagging: a tag per token
            assert batch["labels"].shape == rows and int(batch["labels"].max()) < dm.num_classes
        else:
            assert dm.num_classes is None
            lab = batch["labels"]
            assert ((lab == -100) | ((lab >= 0) & (lab < V))).all() and (lab != -100).any()
        if name.startswith("val_len") and task != "corpus":  # longer than anything in training
            seq = batch.get("input_ids", batch.get("src_ids"))
            assert seq.shape[1] > cfg.data.seq_len // 2


def test_second_setup_is_a_cache_hit_and_fast(tmp_path):
    cfg = _cfg(tmp_path, "corpus", "mlm_nsp", n_train=200)
    first = build_datamodule(cfg)
    first.setup()
    assert not first.prepared.from_cache
    t = time.perf_counter()
    second = build_datamodule(cfg)
    second.setup()
    assert second.prepared.from_cache and time.perf_counter() - t < 2.0
    assert second.prepared.path == first.prepared.path
    assert second.datasets["train"][:] == first.datasets["train"][:]
    assert second.tokenizer == first.tokenizer
    other = build_datamodule(_cfg(tmp_path, "corpus", "mlm_nsp", n_train=201))
    other.setup()
    assert other.prepared.path != first.prepared.path


def test_data_is_fixed_across_seeds_while_the_seed_drives_shuffling_and_masks(tmp_path):
    def first_batch(seed):
        dm = build_datamodule(_cfg(tmp_path, "corpus", "mlm", seed=seed))
        dm.setup()
        return dm, next(iter(dm.train_dataloader()))

    dm0, b0 = first_batch(0)
    _, b0b = first_batch(0)
    dm1, b1 = first_batch(1)
    assert dm0.datasets["train"][:] == dm1.datasets["train"][:]  # same data for every seed
    for k in b0:
        assert torch.equal(b0[k], b0b[k])  # reproducible
    assert not torch.equal(b0["labels"], b1["labels"])
    v1 = next(iter(dm0.val_dataloader()[0]))
    v2 = next(iter(dm0.val_dataloader()[0]))
    assert torch.equal(v1["labels"], v2["labels"]) and torch.equal(v1["input_ids"], v2["input_ids"])


@pytest.mark.parametrize("task,objective", [("corpus", "mlm_nsp"), ("lookup", "none")])
def test_training_batches_are_the_same_read_in_memory_or_from_arrow(tmp_path, monkeypatch, task, objective):
    """The training split read into Python once (data/sampling.IN_MEMORY_ROWS) gives the batches that
    reading each row from Arrow gives, masks included, over more than one pass."""
    from transformer_ablations.data import sampling

    def batches(limit):
        monkeypatch.setattr(sampling, "IN_MEMORY_ROWS", limit)
        cfg = _cfg(tmp_path, task, objective, n_train=24)
        cfg.train.val_every, cfg.train.max_steps = 4, 12
        dm = build_datamodule(cfg)
        dm.setup()
        loader = dm.train_dataloader()
        out = []
        for epoch in range(3):  # 3 x 4 batches of 8 from 24 examples: four passes
            loader.batch_sampler.set_epoch(epoch)
            out += list(loader)
        return out, loader.dataset

    in_memory, stream = batches(10**6)
    assert isinstance(stream._rows, list)  # read into Python
    from_arrow, stream = batches(0)
    assert stream._rows is stream.base  # left in Arrow
    assert len(in_memory) == len(from_arrow) == 12
    for a, b in zip(in_memory, from_arrow):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrained_tokenizer_is_reused_for_fine_tuning(tmp_path):
    pre = build_datamodule(_cfg(tmp_path, "corpus", "mlm_nsp"))
    pre.setup()
    for task in ("single", "pair"):
        ft = build_datamodule(_cfg(tmp_path, task, pair_format="concat"), tokenizer=pre.tokenizer)
        ft.setup()
        assert ft.tokenizer is pre.tokenizer
        batch = next(iter(ft.train_dataloader()))
        assert not (batch["input_ids"] == pre.tokenizer.unk_id).any()
        if task == "pair":
            assert batch["segment_ids"].eq(0).all()  # concat format


def test_file_sources_through_the_datamodule(tmp_path):
    d = tmp_path / "glue"
    d.mkdir()
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    (d / "train.tsv").write_text("sentence1\tsentence2\tlabel\n" + "".join(
        f"the movie was {words[i % 8]}\tit felt {words[(i * 3) % 8]}\t{i % 2}\n" for i in range(60)))
    (d / "dev.tsv").write_text("sentence1\tsentence2\tlabel\n" + "".join(
        f"a {words[i % 8]} film\tquite {words[i % 5]}\t{i % 2}\n" for i in range(10)))
    dm = build_datamodule(_cfg(tmp_path, "pair", source=f"file:{d}", vocab_size=80, n_train=0))
    dm.setup()
    assert dm.num_classes == 2 and len(dm.datasets["train"]) == 60 and len(dm.datasets["val"]) == 10
    batch = next(iter(dm.val_dataloader()[0]))
    assert set(batch) == KEYS["classification"] and (batch["segment_ids"] == 1).any()
    txt = tmp_path / "story.txt"
    txt.write_text("\n\n".join(
        "\n".join(f"The {words[(i + j) % 8]} story number {i} goes on and on for line {j}." for j in range(8))
        for i in range(40)))
    for objective, arch in (("causal", "decoder"), ("mlm_nsp", "encoder")):
        dm = build_datamodule(_cfg(tmp_path, "corpus", objective, arch, source=f"file:{txt}", vocab_size=80,
                                   n_train=20, eval_length_multiples=[2]))
        dm.setup()
        assert dm.val_names == ["val", "val_len2x"]
        assert 50 < dm.tokenizer.vocab_size <= 80
        batch = next(iter(dm.train_dataloader()))
        assert set(batch) == KEYS[objective]
        if objective == "causal":
            assert batch["input_ids"].shape == (8, 32)
            assert next(iter(dm.val_dataloader()[1]))["input_ids"].shape[1] == 64
    ds = prepare(_cfg(tmp_path, "corpus", "causal", "decoder", source=f"file:{txt}", vocab_size=80,
                      n_train=20, eval_length_multiples=[2]))
    assert ds.from_cache


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    cfg = _cfg(tmp_path, "order")
    p = prepare(cfg)
    for f in (p.path / "train").glob("*.arrow"):
        f.write_bytes(b"garbage")
    again = prepare(cfg)
    assert not again.from_cache and len(again.splits["train"]) == len(p.splits["train"])
    assert prepare(cfg).from_cache


def test_a_real_corpus_selection_split_is_carved_from_train_never_from_val(tmp_path):
    """data.selection_split on a labelled file: val_select (where lr is chosen) is rows of the training
    file that training no longer sees, and no row of the reported val split."""
    d = tmp_path / "glue"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"train row {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n"
                                                               for i in range(60)))
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"dev row {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n"
                                                             for i in range(10)))
    cfg = _cfg(tmp_path, "single", source=f"file:{d}", vocab_size=60, n_train=0, n_val=0, selection_split=True)
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.val_names == ["val", "val_select"]
    text = {name: {tuple(r["a_ids"]) for r in dm.datasets[name]} for name in ("train", "val", "val_select")}
    assert len(dm.datasets["val_select"]) == 10 and len(dm.datasets["train"]) == 50  # as many as val has
    assert not text["val_select"] & text["train"] and not text["val_select"] & text["val"]
    row = dm.tokenizer.decode(list(next(iter(text["val_select"]))))
    assert row.startswith("train row"), row
    too_many = _cfg(tmp_path, "single", source=f"file:{d}", vocab_size=60, n_train=0, n_val=60, selection_split=True)
    with pytest.raises(ConfigError, match=r"val_select needs 60 of the 60 training rows"):
        build_datamodule(too_many).setup()


def test_a_corpus_without_a_third_split_rejects_the_selection_split(tmp_path):
    from transformer_ablations.tasks import check_run

    cfg = _cfg(tmp_path, "corpus", "mlm", source="file:story.txt", selection_split=True)
    with pytest.raises(ConfigError, match=r"data.selection_split=true needs data.source=synthetic .*data.source=file"):
        check_run(cfg)
