"""Attention: SDPA == reference, chunked additive == unchunked, scalings, rope, alibi, masks, stats."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch

from transformer_ablations.config import ConfigError, Scaling
from transformer_ablations.model import AttentionContext, SelfAttention, Transformer, alibi_slopes, apply_rope
from transformer_ablations.model.positional import POSITIONALS

SCALINGS = list(get_args(Scaling))
KINDS = [("dot", "sdpa"), ("dot", "reference"), ("additive", "sdpa")]  # additive has one implementation


def ragged_batch(b=3, t=9, vocab=13):
    ids = torch.randint(0, vocab, (b, t))
    lengths = torch.tensor([t, t - 3, t - 5])[:b]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return ids, mask


def twin(cfg_a, cfg_b) -> tuple[Transformer, Transformer]:
    a = Transformer(cfg_a)
    b = Transformer(cfg_b)
    b.load_state_dict(a.state_dict())
    return a, b


def perturb_learned_scale(model: Transformer) -> None:
    """Move learned temperatures off their init so a wrong fold into SDPA would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_scale"):
                p.add_(torch.randn_like(p))


# --- SDPA fast path == reference path ------------------------------------------------------------
MASK_CASES = {
    "padding": {"arch": "encoder", "positional": "learned"},
    "causal": {"arch": "decoder", "positional": "rope"},
    "prefix": {"arch": "decoder", "positional": "sinusoidal"},
    "alibi": {"arch": "decoder", "positional": "alibi"},
    "alibi_bidirectional": {"arch": "encoder", "positional": "alibi"},
    "cross": {"arch": "encoder_decoder", "positional": "learned"},
}


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("case", list(MASK_CASES))
def test_sdpa_equals_reference(make_model_cfg, scaling, case):
    base = dict(MASK_CASES[case], n_layers=2)
    fast, ref = twin(
        make_model_cfg(**base, attention={"scaling": scaling, "impl": "sdpa"}),
        make_model_cfg(**base, attention={"scaling": scaling, "impl": "reference"}),
    )
    perturb_learned_scale(fast)
    ref.load_state_dict(fast.state_dict())
    ids, mask = ragged_batch()
    kwargs = {"prefix_len": torch.tensor([4, 2, 3])} if case == "prefix" else {}
    if case == "cross":
        kwargs = {"encoder_input_ids": ids.flip(1), "encoder_attention_mask": mask}
    out_fast, _ = fast(ids, mask, **kwargs)
    out_ref, _ = ref(ids, mask, **kwargs)
    assert torch.allclose(out_fast[mask], out_ref[mask], atol=1e-5), (out_fast - out_ref)[mask].abs().max()


# --- additive: chunked == unchunked ----------------------------------------------------------------
@pytest.mark.parametrize("scaling", ["sqrt_dk", "learned", "qk_norm"])
def test_additive_chunks_equal_one_chunk(make_model_cfg, scaling):
    common = {"arch": "decoder", "positional": "alibi", "n_layers": 2, "segment_embeddings": False}
    chunked, whole = twin(
        make_model_cfg(**common, attention={"kind": "additive", "additive_init": "unit", "scaling": scaling, "chunk_size": 2}),
        make_model_cfg(**common, attention={"kind": "additive", "additive_init": "unit", "scaling": scaling, "chunk_size": 64}),
    )
    ids, mask = ragged_batch()
    outputs = []
    for model in (chunked, whole):
        out, _ = model(ids, mask)
        (out[mask] ** 2).sum().backward()
        outputs.append(out)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    grads = {n: p.grad for n, p in chunked.named_parameters()}
    for name, p in whole.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # fp32 gradients summed in another order (chunk by chunk), with cancellations: equal to 1e-4 of the
        # tensor's own scale (unit v_a makes some ~10); a fixed atol fails on some CPUs' kernels, a lost chunk does not pass
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-4 * float(p.grad.abs().max()))
    assert chunked.decoder.blocks[0].self_attn.core.v_a.grad.abs().sum() > 0  # the score parameters learn


def test_additive_recomputes_chunks_in_backward(make_model_cfg):
    """The [B,H,c,Tk,d] tanh tensor is not kept for backward: saved activations stay O(T^2), not O(T^2 d)."""
    cfg = make_model_cfg(
        arch="encoder",
        n_heads=1,
        head_dim=32,
        positional="none",
        attention={"kind": "additive", "chunk_size": 4},
    )
    model = Transformer(cfg)
    ids = torch.randint(0, 13, (2, 16))
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = model(ids)
    per_chunk_tanh = 2 * 1 * 4 * 16 * 32
    assert max(saved) < per_chunk_tanh, max(saved)
    out.sum().backward()


# --- scalings ---------------------------------------------------------------------------------------
def logit_std_at_init(scaling: str, head_dim: int, make_model_cfg) -> float:
    """One head, q and k with unit-variance components (W ~ N(0, 1/D) on unit-variance x)."""
    cfg = make_model_cfg(d_model=16, n_heads=1, head_dim=head_dim, attention={"scaling": scaling})
    layer = SelfAttention(cfg)
    torch.nn.init.normal_(layer.qkv.weight, std=1 / math.sqrt(16))
    torch.nn.init.zeros_(layer.qkv.bias)
    x = torch.randn(4, 16, 16)
    ctx = AttentionContext.build(None, None, None, 16, x.device)
    _, stats = layer(x, ctx, return_stats=True)
    return float(stats["logit_std"])


def test_unscaled_logit_std_grows_as_sqrt_dk(make_model_cfg):
    small, large = (logit_std_at_init("none", d, make_model_cfg) for d in (16, 256))
    assert 3.0 < large / small < 5.0, (small, large)  # sqrt(256 / 16) = 4
    assert 2.5 < small < 5.5  # ~ sqrt(16)


@pytest.mark.parametrize("scaling", ["sqrt_dk", "learned", "qk_norm"])
def test_scaled_logit_std_stays_near_one(make_model_cfg, scaling):
    for head_dim in (16, 256):
        std = logit_std_at_init(scaling, head_dim, make_model_cfg)
        assert 0.7 < std < 1.3, (head_dim, std)


def test_dk_scaling_shrinks_logits(make_model_cfg):
    small, large = (logit_std_at_init("dk", d, make_model_cfg) for d in (16, 256))
    assert 3.0 < small / large < 5.0, (small, large)  # d_k / sqrt(d_k) = sqrt(d_k)


# --- positions inside attention -----------------------------------------------------------------------
def test_rope_score_depends_only_on_offset(make_model_cfg):
    rope = POSITIONALS["rope"](make_model_cfg(head_dim=8)).rope(32, torch.device("cpu"))
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> torch.Tensor:
        qs = torch.zeros(1, 1, 32, 8)
        ks = torch.zeros(1, 1, 32, 8)
        qs[0, 0, i], ks[0, 0, j] = q, k
        return apply_rope(qs, rope)[0, 0, i] @ apply_rope(ks, rope)[0, 0, j]

    for i, j, s in [(3, 1, 5), (0, 7, 11), (10, 10, 4)]:
        assert torch.allclose(score(i, j), score(i + s, j + s), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(1, 3), atol=1e-3)  # relative, but not symmetric
    rotated = apply_rope(q.expand(1, 1, 32, 8), rope)  # q at every position
    assert torch.allclose(rotated.norm(dim=-1), q.norm().expand(1, 1, 32), atol=1e-5)  # a rotation


def test_rope_rejects_odd_head_dim(make_model_cfg):
    with pytest.raises(ConfigError, match="model.positional=rope.*model.head_dim=7"):
        Transformer(make_model_cfg(head_dim=7, positional="rope"))


def test_alibi_slopes_follow_the_paper():
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    assert alibi_slopes(4) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]
    # not a power of 2: the 4-head slopes, then every other slope of 8 heads
    assert alibi_slopes(6) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]


def test_alibi_bias_is_minus_slope_times_distance(make_model_cfg):
    bias = POSITIONALS["alibi"](make_model_cfg(d_model=32, n_heads=8)).attention_bias(6, torch.device("cpu"))
    assert bias.shape == (1, 8, 6, 6)
    for h in range(8):
        for i in range(6):
            for j in range(6):
                assert bias[0, h, i, j] == -(2.0 ** -(h + 1)) * abs(i - j)


# --- masks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,impl", KINDS)
@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_padding_does_not_change_real_tokens(make_model_cfg, kind, impl, arch):
    for positional in ("learned", "rope", "alibi"):
        cfg = make_model_cfg(
            arch=arch, positional=positional, n_layers=2, attention={"kind": kind, "impl": impl}
        )
        model = Transformer(cfg)
        ids = torch.randint(0, 13, (2, 6))
        padded = torch.cat([ids, torch.randint(0, 13, (2, 4))], dim=1)
        mask = torch.arange(10)[None, :] < 6
        out, _ = model(ids)
        out_padded, _ = model(padded, mask.expand(2, 10))
        assert torch.allclose(out, out_padded[:, :6], atol=1e-5), positional


@pytest.mark.parametrize("kind,impl", KINDS)
def test_fully_masked_query_rows_stay_finite(make_model_cfg, kind, impl):
    """An all-padding sample, and left padding under a causal mask: no query row may yield NaN."""
    for arch in ("encoder", "decoder"):
        model = Transformer(
            make_model_cfg(arch=arch, positional="alibi", attention={"kind": kind, "impl": impl})
        )
        ids = torch.randint(0, 13, (3, 5))
        mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
        out, stats = model(ids, mask, return_stats=True)
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(v).all() for s in stats for k, v in s.items() if k != "name")
        out.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- stats ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,impl", KINDS)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_stats_for_every_kind(make_model_cfg, kind, impl, scaling):
    model = Transformer(
        make_model_cfg(n_layers=2, attention={"kind": kind, "impl": impl, "scaling": scaling})
    )
    ids, mask = ragged_batch()
    out, stats = model(ids, mask, return_stats=True)
    assert [s["name"] for s in stats] == ["enc0", "enc1"]
    for s in stats:
        assert set(s) == {"name", "entropy", "max_prob", "saturated", "logit_std", "logit_max"}
        assert 0.0 <= float(s["saturated"]) <= 1.0
        assert 0.0 <= float(s["entropy"]) <= 1.0 + 1e-6
        assert 0.0 < float(s["max_prob"]) <= 1.0
        assert float(s["logit_std"]) >= 0.0
    assert model(ids, mask)[1] is None
    assert torch.allclose(model(ids, mask)[0], out, atol=1e-5)  # stats do not change the output


@pytest.mark.parametrize("kind,impl", KINDS)
def test_stats_exclude_masked_keys_and_padding_queries(make_model_cfg, kind, impl):
    """With all scores equal (zero query/key projections) attention is uniform over the attendable
    keys: normalised entropy is exactly 1 and max_prob = mean over real queries of 1/#keys."""
    model = Transformer(
        make_model_cfg(arch="decoder", positional="none", attention={"kind": kind, "impl": impl})
    )
    attn = model.decoder.blocks[0].self_attn
    with torch.no_grad():
        attn.qkv.weight[:32].zero_()
        attn.qkv.bias.zero_()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    _, stats = model(torch.randint(0, 13, (2, 4)), mask, return_stats=True)
    expected_max_prob = (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 + 1 / 2) / 6  # causal: query i sees i+1 real keys
    assert float(stats[0]["entropy"]) == pytest.approx(1.0, abs=1e-5)
    assert float(stats[0]["max_prob"]) == pytest.approx(expected_max_prob, abs=1e-5)
    assert float(stats[0]["logit_std"]) == pytest.approx(0.0, abs=1e-6)
