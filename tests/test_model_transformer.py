"""Backbone: permutation equivariance without positions, causality, prefix LM, cross-attention, toggles."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest
import torch

from transformer_ablations.config import Arch, AttentionKind, ConfigError, Norm, Positional, Scaling
from transformer_ablations.model import CrossAttention, Transformer, pool, prefix_lm_structure
from transformer_ablations.model.attention import AttentionContext, MultiHeadAttention

KINDS = [("dot", "sdpa"), ("dot", "reference"), ("additive", "sdpa")]
SCALINGS = list(get_args(Scaling))
POSITIONALS = list(get_args(Positional))


def enlarge_weights(model: Transformer, factor: float = 10.0) -> None:
    """Larger activations than the 0.02 init, so position effects are far above float noise. The
    attention in-projections already start at unit scale (N(0, 1/d_model)) and are left alone, so
    the softmax does not saturate into exact zeros."""
    in_projections = ("qkv.weight", ".q.weight", ".kv.weight")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 2 and "embedding" not in name and not name.endswith(in_projections):
                p.mul_(factor)


# --- Q2: without positions an encoder is permutation-equivariant ---------------------------------------
@pytest.mark.parametrize("kind,impl", KINDS)
def test_encoder_without_positions_is_permutation_equivariant(make_model_cfg, kind, impl):
    model = Transformer(make_model_cfg(positional="none", n_layers=2, attention={"kind": kind, "impl": impl}))
    enlarge_weights(model)
    ids = torch.randint(0, 13, (2, 8))
    perm = torch.randperm(8)
    out, _ = model(ids)
    out_perm, _ = model(ids[:, perm])
    assert torch.allclose(out_perm, out[:, perm], atol=1e-5)  # f(Px) = P f(x)
    assert torch.allclose(pool(out_perm, None, "mean"), pool(out, None, "mean"), atol=1e-5)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "alibi"])
@pytest.mark.parametrize("kind,impl", KINDS)
def test_encoder_with_positions_is_not_permutation_equivariant(make_model_cfg, positional, kind, impl):
    # additive with Bahdanau's v_a = 0 attends uniformly until v_a learns, so RoPE (which acts only on the
    # scores) cannot show yet: take the N(0, 1) v_a, the state of a trained layer
    attention = {"kind": kind, "impl": impl, **({"additive_init": "unit"} if kind == "additive" else {})}
    model = Transformer(make_model_cfg(positional=positional, n_layers=2, attention=attention))
    enlarge_weights(model)
    ids = torch.randint(0, 13, (2, 8))
    perm = torch.randperm(8)
    out, _ = model(ids)
    out_perm, _ = model(ids[:, perm])
    assert (out_perm - out[:, perm]).abs().max() > 1e-3
    assert (pool(out_perm, None, "mean") - pool(out, None, "mean")).abs().max() > 1e-3


# --- causality ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("kind,impl", KINDS)
def test_decoder_position_t_ignores_later_tokens(make_model_cfg, kind, impl, positional, scaling):
    cfg = make_model_cfg(
        arch="decoder",
        positional=positional,
        n_layers=2,
        attention={"kind": kind, "impl": impl, "scaling": scaling},
    )
    model = Transformer(cfg)
    enlarge_weights(model)
    ids = torch.randint(0, 13, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (ids[:, 5:] + 1) % 13
    out, _ = model(ids)
    out_changed, _ = model(changed)
    assert torch.allclose(out[:, :5], out_changed[:, :5], atol=1e-6)
    assert (out[:, 5:] - out_changed[:, 5:]).abs().max() > 1e-4  # the changed positions do see themselves


# --- prefix LM ----------------------------------------------------------------------------------------
def test_prefix_lm_structure_exact():
    allowed = prefix_lm_structure(torch.tensor([3]), 5)[0, 0].int()
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],  # source: bidirectional within the prefix, no target
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],  # target: the whole prefix, earlier targets, itself
            [1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(allowed, expected)


@pytest.mark.parametrize("kind,impl", KINDS)
def test_prefix_lm_targets_see_whole_source_and_no_future_target(make_model_cfg, kind, impl):
    model = Transformer(make_model_cfg(arch="decoder", n_layers=2, attention={"kind": kind, "impl": impl}))
    enlarge_weights(model)
    ids = torch.randint(0, 13, (1, 8))
    prefix_len = torch.tensor([4])
    out, _ = model(ids, prefix_len=prefix_len)

    def changed_at(position: int) -> torch.Tensor:
        changed = ids.clone()
        changed[0, position] = (ids[0, position] + 1) % 13
        return (model(changed, prefix_len=prefix_len)[0] - out).abs().amax(-1)[0]  # [T]: change per position

    last_source = changed_at(3)
    assert (last_source > 1e-4).all()  # every position, source and target, sees all of the source
    target = changed_at(5)
    assert (target[:5] < 1e-6).all() and (target[5:] > 1e-4).all()  # no position sees a future target


# --- encoder-decoder cross-attention --------------------------------------------------------------------
def test_cross_attention_queries_from_decoder_keys_values_from_encoder(make_model_cfg):
    layer = CrossAttention(make_model_cfg())
    with torch.no_grad():
        layer.q.weight.mul_(20)
        layer.kv.weight.mul_(20)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    ctx = AttentionContext.build(None, None, None, 6, x.device)
    out, _ = layer(x, ctx, memory)
    assert out.shape == (2, 3, 16)  # one output per decoder query
    qperm, kperm = torch.randperm(3), torch.randperm(6)
    assert torch.allclose(layer(x[:, qperm], ctx, memory)[0], out[:, qperm], atol=1e-5)  # rows follow queries
    assert torch.allclose(layer(x, ctx, memory[:, kperm])[0], out, atol=1e-5)  # a set of keys/values
    assert (layer(x, ctx, memory + 1.0)[0] - out).abs().max() > 1e-3  # which come from memory


def test_encoder_reaches_decoder_only_through_cross_attention(make_model_cfg):
    model = Transformer(make_model_cfg(arch="encoder_decoder", n_layers=2))
    tgt, src, other_src = (torch.randint(0, 13, (2, 5)) for _ in range(3))
    out, _ = model(tgt, encoder_input_ids=src)
    assert (model(tgt, encoder_input_ids=other_src)[0] - out).abs().max() > 1e-5
    with torch.no_grad():
        for block in model.decoder.blocks:
            block.cross_attn.out.weight.zero_()
            block.cross_attn.out.bias.zero_()
    out, _ = model(tgt, encoder_input_ids=src)
    assert torch.allclose(model(tgt, encoder_input_ids=other_src)[0], out)


@pytest.mark.parametrize("cross_attention", ["full", "pooled"])
def test_pooled_cross_attention_sees_only_the_mean_encoder_state(make_model_cfg, cross_attention):
    model = Transformer(make_model_cfg(arch="encoder_decoder", cross_attention=cross_attention))
    enlarge_weights(model)
    tgt = torch.randint(0, 13, (2, 5))
    memory, mask = torch.randn(2, 6, 16), torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    zero_mean = torch.randn(2, 6, 16).masked_fill(~mask[..., None], 0.0)
    zero_mean = zero_mean - pool(zero_mean, mask, "mean")[:, None] * mask[..., None]  # real states' mean is 0
    out, _ = model.decode(tgt, memory=memory, memory_mask=mask)
    out_same_mean, _ = model.decode(tgt, memory=memory + zero_mean, memory_mask=mask)
    same = torch.allclose(out, out_same_mean, atol=1e-5)
    assert same == (cross_attention == "pooled")


def test_pooled_cross_attention_ignores_source_order_without_positions(make_model_cfg):
    model = Transformer(make_model_cfg(arch="encoder_decoder", cross_attention="pooled", positional="none"))
    tgt, src = torch.randint(0, 13, (2, 5)), torch.randint(0, 13, (2, 7))
    out, _ = model(tgt, encoder_input_ids=src)
    assert torch.allclose(model(tgt, encoder_input_ids=src[:, torch.randperm(7)])[0], out, atol=1e-5)


def test_encoder_decoder_stats_names(make_model_cfg):
    model = Transformer(make_model_cfg(arch="encoder_decoder", n_layers=2))
    _, stats = model(
        torch.randint(0, 13, (2, 5)), encoder_input_ids=torch.randint(0, 13, (2, 7)), return_stats=True
    )
    names = ["enc0", "enc1", "dec0_self", "dec0_cross", "dec1_self", "dec1_cross"]
    assert [s["name"] for s in stats] == names
    _, stats = Transformer(make_model_cfg(arch="decoder"))(torch.ones(1, 3).long(), return_stats=True)
    assert [s["name"] for s in stats] == ["dec0"]


# --- every toggle combination ----------------------------------------------------------------------------
COMBOS = list(
    itertools.product(
        get_args(Arch),
        get_args(AttentionKind),
        SCALINGS,
        POSITIONALS,
        get_args(Norm),
        [True, False],
    )
)


@pytest.mark.parametrize("arch,kind,scaling,positional,norm,segments", COMBOS)
def test_every_toggle_combination_trains(make_model_cfg, arch, kind, scaling, positional, norm, segments):
    cfg = make_model_cfg(
        arch=arch,
        positional=positional,
        norm=norm,
        segment_embeddings=segments,
        attention={"kind": kind, "scaling": scaling},
    )
    model = Transformer(cfg)
    ids = torch.randint(0, 13, (2, 5))
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2], dtype=torch.bool)
    kwargs = {"segment_ids": (torch.arange(5) >= 2).long().expand(2, 5)}
    if arch == "encoder_decoder":
        kwargs.update(
            encoder_input_ids=torch.randint(0, 13, (2, 6)),
            encoder_attention_mask=torch.ones(2, 6, dtype=torch.bool),
        )
    out, stats = model(ids, mask, return_stats=True, **kwargs)
    assert out.shape == (2, 5, 16) and len(stats) == (3 if arch == "encoder_decoder" else 1)
    (out[mask] ** 2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --- construction checks and init --------------------------------------------------------------------------
def test_rejects_unset_vocabulary(make_model_cfg):
    with pytest.raises(ConfigError, match="model.vocab_size=0"):
        Transformer(make_model_cfg(vocab_size=0))


def test_rejects_pooled_cross_attention_without_encoder_decoder(make_model_cfg):
    with pytest.raises(ConfigError, match="model.cross_attention=pooled.*model.arch=decoder"):
        Transformer(make_model_cfg(arch="decoder", cross_attention="pooled"))


def test_learned_positions_stop_at_max_len(make_model_cfg):
    with pytest.raises(ValueError, match="max_len=32"):
        Transformer(make_model_cfg(positional="learned"))(torch.zeros(1, 33, dtype=torch.long))
    Transformer(make_model_cfg(positional="sinusoidal"))(torch.zeros(1, 33, dtype=torch.long))  # any length


def test_init_gpt2_except_unit_scale_query_key(make_model_cfg):
    d_model = 32
    model = Transformer(make_model_cfg(d_model=d_model, d_ff=64, n_layers=2))
    qk_rows = {id(w): rows for m in model.modules() if isinstance(m, MultiHeadAttention) for w, rows in m.query_key_rows()}
    assert qk_rows
    others, query_key = [], []
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            rows = qk_rows.get(id(m.weight), 0)
            query_key.append(m.weight[:rows].flatten())
            others.append(m.weight[rows:].flatten())
    assert torch.cat(others).std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.cat(query_key).std().item() == pytest.approx(d_model**-0.5, rel=0.05)
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_segment_embeddings_toggle(make_model_cfg):
    ids, segments = torch.randint(0, 13, (2, 6)), (torch.arange(6) >= 3).long().expand(2, 6)
    on = Transformer(make_model_cfg(segment_embeddings=True))
    assert (on(ids, segment_ids=segments)[0] - on(ids)[0]).abs().max() > 1e-4
    off = Transformer(make_model_cfg(segment_embeddings=False))
    assert torch.equal(off(ids, segment_ids=segments)[0], off(ids)[0])
    assert not any("seg" in name for name, _ in off.named_parameters())


def test_query_key_grads_are_the_q_and_k_rows(make_model_cfg):
    model = Transformer(make_model_cfg(arch="encoder_decoder"))
    assert model.query_key_grads() == []
    out, _ = model(torch.randint(0, 13, (2, 4)), encoder_input_ids=torch.randint(0, 13, (2, 5)))
    out.sum().backward()
    shapes = [tuple(g.shape) for g in model.query_key_grads()]
    # encoder self q+k, decoder self q+k, decoder cross q, decoder cross k
    assert shapes == [(32, 16), (32, 16), (16, 16), (16, 16)]
