"""Heads and task models: pooling with masks, sparse == dense MLM, losses, greedy generation, dispatch."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from transformer_ablations.config import (
    AttentionKind,
    ConfigError,
    DataConfig,
    FinetuneConfig,
    Pooling,
    RunConfig,
)
from transformer_ablations.model import (
    IGNORE_INDEX,
    CausalLM,
    MaskedLM,
    Seq2Seq,
    SequenceClassifier,
    pool,
)
from transformer_ablations.tasks import build_model

BOS, EOS = 1, 2


# --- pooling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", get_args(Pooling))
def test_pooling_ignores_padding(pooling):
    hidden = torch.randn(3, 7, 4)
    lengths = [7, 4, 1]
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    garbage = hidden.masked_fill(~mask[..., None], 1e3)  # padding states far from any real one
    pooled = pool(garbage, mask, pooling)
    for row, n in enumerate(lengths):
        alone = pool(hidden[row : row + 1, :n], None, pooling)  # the same row, unpadded
        assert torch.allclose(pooled[row], alone[0], atol=1e-6), (pooling, row)


def test_pooling_values():
    hidden = torch.arange(12.0).view(1, 4, 3)  # rows [0,1,2], [3,4,5], [6,7,8], [9,10,11]
    mask = torch.tensor([[True, True, True, False]])
    assert pool(hidden, mask, "cls").tolist() == [[0, 1, 2]]
    assert pool(hidden, mask, "mean").tolist() == [[3, 4, 5]]
    assert pool(hidden, mask, "max").tolist() == [[6, 7, 8]]
    assert pool(hidden, mask, "last").tolist() == [[6, 7, 8]]


# --- masked LM ------------------------------------------------------------------------------------------
def mlm_batch(b=3, t=8):
    ids = torch.randint(3, 13, (b, t))
    mask = torch.arange(t)[None, :] < torch.tensor([t, t - 2, t - 4])[:b, None]
    labels = torch.full((b, t), IGNORE_INDEX)
    labels[:, 1] = ids[:, 1]
    labels[0, 5] = ids[0, 5]
    segments = (torch.arange(t) >= t // 2).long().expand(b, t)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "segment_ids": segments,
        "labels": labels,
        "nsp_labels": torch.tensor([1, 0, 1])[:b],
    }


def dense_mlm_loss(model: MaskedLM, batch: dict) -> torch.Tensor:
    """Reference: logits at every position, positions without a label ignored by the loss."""
    hidden, _ = model.backbone(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
    logits = model.mlm_head(hidden, model.backbone.tok_embedding.weight)  # [B, T, V]
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)


def test_sparse_mlm_loss_equals_dense(make_model_cfg):
    model = MaskedLM(make_model_cfg(), nsp=False)
    batch = mlm_batch()
    out = model(batch)
    assert out.logits.shape == (4, 13) and out.targets.shape == (4,)  # only the 4 labelled positions
    assert torch.allclose(out.loss, dense_mlm_loss(model, batch), atol=1e-6)
    assert out.aux == {}


def test_mlm_nsp_adds_the_nsp_loss(make_model_cfg):
    model = MaskedLM(make_model_cfg(), nsp=True)
    batch = mlm_batch()
    out = model(batch, return_stats=True)
    nsp_logits, nsp_targets = out.aux["nsp"]
    assert nsp_logits.shape == (3, 2) and torch.equal(nsp_targets, batch["nsp_labels"])
    expected = dense_mlm_loss(model, batch) + F.cross_entropy(nsp_logits, batch["nsp_labels"])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert [s["name"] for s in out.stats] == ["enc0"]


def test_mlm_head_is_tied_to_the_token_embedding(make_model_cfg):
    model = MaskedLM(make_model_cfg(), nsp=True)
    model(mlm_batch()).loss.backward()
    assert model.backbone.tok_embedding.weight.grad.abs().sum() > 0
    vocab_sized = [n for n, p in model.named_parameters() if p.shape == (13, 16)]
    assert vocab_sized == ["backbone.tok_embedding.weight"]  # the head holds no copy


@pytest.mark.parametrize(
    "make",
    [
        lambda c: MaskedLM(c(), nsp=True),
        lambda c: CausalLM(c(arch="decoder")),
        lambda c: Seq2Seq(c(arch="encoder_decoder")),
        lambda c: SequenceClassifier(c(), num_classes=3, pooling="mean"),
    ],
)
def test_state_dicts_share_no_storage(make_model_cfg, make):
    """safetensors export refuses tensors that share memory."""
    state = make(make_model_cfg).state_dict()
    pointers = [t.data_ptr() for t in state.values()]
    assert len(pointers) == len(set(pointers))


def test_impl_does_not_change_parameter_names(make_model_cfg):
    fast = MaskedLM(make_model_cfg(attention={"impl": "sdpa"}), nsp=True)
    MaskedLM(make_model_cfg(attention={"impl": "reference"}), nsp=True).load_state_dict(fast.state_dict())


# --- causal LM and classification -----------------------------------------------------------------------
def test_causal_lm_loss_at_labelled_positions(make_model_cfg):
    model = CausalLM(make_model_cfg(arch="decoder"))
    ids = torch.randint(0, 13, (2, 6))
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)
    labels[1, 3:] = IGNORE_INDEX
    out = model({"input_ids": ids, "attention_mask": labels != -200, "labels": labels})
    hidden, _ = model.backbone(ids)
    dense = F.cross_entropy((hidden @ model.backbone.tok_embedding.weight.T).flatten(0, 1), labels.flatten())
    assert out.logits.shape == (8, 13) and torch.allclose(out.loss, dense, atol=1e-6)


@pytest.mark.parametrize(
    "arch,pooling", [("encoder", "cls"), ("encoder", "mean"), ("encoder", "max"), ("decoder", "last")]
)
def test_sequence_classifier(make_model_cfg, arch, pooling):
    model = SequenceClassifier(make_model_cfg(arch=arch), num_classes=3, pooling=pooling)
    batch = mlm_batch()
    batch["labels"] = torch.tensor([0, 2, 1])
    out = model(batch)
    assert out.logits.shape == (3, 3) and torch.equal(out.targets, batch["labels"])
    out.loss.backward()
    assert model.head.classifier.weight.grad is not None
    padded = {k: v for k, v in batch.items()}
    padded["input_ids"] = batch["input_ids"].masked_fill(~batch["attention_mask"], 7)  # other padding tokens
    assert torch.allclose(model(padded).logits, out.logits, atol=1e-5)


# --- seq2seq ------------------------------------------------------------------------------------------------
def encoder_decoder_batch():
    src = torch.randint(3, 13, (2, 6))
    src_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    target = torch.randint(3, 13, (2, 4))
    tgt_in = torch.cat([torch.full((2, 1), BOS), target], dim=1)
    labels = torch.cat([target, torch.full((2, 1), EOS)], dim=1)
    return {
        "src_ids": src,
        "src_mask": src_mask,
        "tgt_in_ids": tgt_in,
        "tgt_mask": torch.ones(2, 5, dtype=torch.bool),
        "labels": labels,
        "src_len": src_mask.sum(1),
    }


def prefix_lm_batch():
    ids = torch.randint(3, 13, (2, 9))
    prefix_len = torch.tensor([5, 3])
    mask = torch.arange(9)[None, :] < torch.tensor([9, 6])[:, None]
    position = torch.arange(9)[None, :]
    labels = torch.where((position >= prefix_len[:, None] - 1) & mask, ids.roll(-1, 1), IGNORE_INDEX)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "prefix_len": prefix_len,
        "labels": labels,
        "src_len": prefix_len - 1,
    }


@pytest.mark.parametrize(
    "arch,make_batch", [("encoder_decoder", encoder_decoder_batch), ("decoder", prefix_lm_batch)]
)
def test_seq2seq_forward(make_model_cfg, arch, make_batch):
    model = Seq2Seq(make_model_cfg(arch=arch))
    batch = make_batch()
    out = model(batch, return_stats=True)
    n = int((batch["labels"] != IGNORE_INDEX).sum())
    assert out.logits.shape == (n, 13) and torch.isfinite(out.loss)
    out.loss.backward()


def first_eos_mask(tokens: torch.Tensor) -> torch.Tensor:
    """True up to and including each row's first EOS."""
    return (tokens == EOS).long().cumsum(1).sub((tokens == EOS).long()) == 0


@pytest.mark.parametrize("kind", get_args(AttentionKind))
def test_encoder_decoder_greedy_matches_teacher_forcing(make_model_cfg, kind):
    model = Seq2Seq(make_model_cfg(arch="encoder_decoder", attention={"kind": kind})).eval()
    batch = encoder_decoder_batch()
    generated = model.generate(batch, max_new_tokens=5, bos_id=BOS, eos_id=EOS)
    assert generated.dtype == torch.long and generated.shape[0] == 2 and generated.shape[1] <= 5
    tgt_in = torch.cat([torch.full((2, 1), BOS), generated[:, :-1]], dim=1)
    hidden, _ = model.backbone(
        tgt_in, encoder_input_ids=batch["src_ids"], encoder_attention_mask=batch["src_mask"]
    )
    forced = (hidden @ model.backbone.tok_embedding.weight.T).argmax(-1)
    keep = first_eos_mask(generated)
    assert torch.equal(forced[keep], generated[keep])
    assert (generated[~keep] == EOS).all()


@pytest.mark.parametrize("positional", ["learned", "alibi"])
def test_prefix_lm_greedy_matches_teacher_forcing(make_model_cfg, positional):
    model = Seq2Seq(make_model_cfg(arch="decoder", positional=positional)).eval()
    batch = prefix_lm_batch()
    generated = model.generate(batch, max_new_tokens=4, bos_id=BOS, eos_id=EOS)
    n = generated.shape[1]
    prefix_len = batch["prefix_len"]
    sequence = torch.zeros(2, 5 + n, dtype=torch.long)
    for row, p in enumerate(prefix_len.tolist()):  # each prompt followed by its own continuation
        sequence[row, :p] = batch["input_ids"][row, :p]
        sequence[row, p : p + n] = generated[row]
    mask = torch.arange(5 + n)[None, :] < (prefix_len + n)[:, None]
    hidden, _ = model.backbone(sequence, mask, prefix_len=prefix_len)
    forced = (hidden @ model.backbone.tok_embedding.weight.T).argmax(-1)
    predicted = forced.gather(1, prefix_len[:, None] - 1 + torch.arange(n))  # position p-1 predicts answer[0]
    keep = first_eos_mask(generated)
    assert torch.equal(predicted[keep], generated[keep])
    # the target tokens after the prompt are never read
    other = dict(
        batch, input_ids=batch["input_ids"].masked_fill(torch.arange(9)[None, :] >= prefix_len[:, None], 5)
    )
    assert torch.equal(model.generate(other, max_new_tokens=4, bos_id=BOS, eos_id=EOS), generated)


def test_seq2seq_rejects_encoder(make_model_cfg):
    with pytest.raises(ConfigError, match="model.arch=encoder"):
        Seq2Seq(make_model_cfg(arch="encoder"))


# --- dispatch ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "objective,task,arch,expected",
    [
        ("mlm", "corpus", "encoder", MaskedLM),
        ("mlm_nsp", "corpus", "encoder", MaskedLM),
        ("causal", "corpus", "decoder", CausalLM),
        ("seq2seq", "reverse", "encoder_decoder", Seq2Seq),
        ("seq2seq", "sort", "decoder", Seq2Seq),
        ("none", "pair", "encoder", SequenceClassifier),
        ("mlm_nsp", "single", "encoder", SequenceClassifier),
    ],
)
def test_build_task_model(make_model_cfg, objective, task, arch, expected):
    cfg = RunConfig(
        objective=objective,
        model=make_model_cfg(arch=arch),
        data=DataConfig(task=task),
        finetune=FinetuneConfig(pooling="mean"),
    )
    model = build_model(cfg, num_classes=3 if expected is SequenceClassifier else None)
    assert type(model) is expected
    if expected is MaskedLM:
        assert (model.nsp_head is not None) == (objective == "mlm_nsp")


def test_build_classifier_needs_num_classes(make_model_cfg):
    cfg = RunConfig(objective="none", model=make_model_cfg(), data=DataConfig(task="order"))
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(cfg)
