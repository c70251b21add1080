"""Every performance fast path of the model equals the straightforward maths it replaces:

- SDPA's mask forms (no mask, ``is_causal``, boolean mask, float bias) == the float-bias SDPA call ==
  the reference path;
- the oneDNN linear (``cpu_linear``, every Linear of the model on AMD CPUs) == ``F.linear``, outputs and
  gradients, and the whole model's loss and gradients with it on == with it off (ATen's BLAS);
- the fused chunked linear + cross-entropy (training loss of the MLM and LM heads) == ``F.cross_entropy``
  over materialised logits, loss and gradients (float64: to rounding; ignored positions included), with
  its products in ATen or in oneDNN; the deferred ``TaskOutput.logits`` == the head's logits;
- the additive attention kernels (chunked, sigmoid form of tanh, recomputed backward) == the textbook
  ``v_a . tanh(q_i + k_j)`` with the whole [B, H, Tq, Tk, d] tensor, outputs and gradients;
- ``torch.compile`` == eager.

(The sparse MLM loss == dense loss is in test_model_heads.py; chunk size independence of additive
attention in test_model_attention.py.)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from transformer_ablations.config import Arch
from transformer_ablations.model import (
    AttentionContext,
    CausalLM,
    MaskedLM,
    SelfAttention,
    Transformer,
)
from transformer_ablations.model import attention as attention_module
from transformer_ablations.model import heads as heads_module
from transformer_ablations.model.kernels import additive, cpu_linear, fused_ce
from transformer_ablations.model.positional import POSITIONALS

# --- SDPA: which mask form, and all forms agree ------------------------------------------------------
MASK_FORMS = {
    # name: (arch, positional, padded, prefix) -> expected (sdpa mask kind, is_causal)
    "encoder_unpadded": ("encoder", "learned", False, False, None, False),
    "encoder_padded": ("encoder", "learned", True, False, torch.bool, False),
    "decoder_unpadded": ("decoder", "rope", False, False, None, True),
    "decoder_padded": ("decoder", "rope", True, False, torch.bool, False),
    "prefix_lm": ("decoder", "learned", False, True, torch.bool, False),
    "alibi": ("decoder", "alibi", False, False, torch.float32, False),
}


def _context(model: Transformer, mask, prefix_len, t) -> AttentionContext:
    if model.cfg.arch == "encoder":
        return model.self_attention_context(mask, None, t, mask.device)
    if prefix_len is not None:
        structure = attention_module.prefix_lm_structure(prefix_len, t)
        return model.self_attention_context(mask, structure, t, mask.device)
    return model.self_attention_context(mask, None, t, mask.device, causal=True)


@pytest.mark.parametrize("scaling", ["sqrt_dk", "learned", "qk_norm"])
@pytest.mark.parametrize("form", list(MASK_FORMS))
def test_sdpa_mask_forms_agree(make_model_cfg, form, scaling):
    arch, positional, padded, prefix, mask_dtype, is_causal = MASK_FORMS[form]
    cfg = make_model_cfg(arch=arch, positional=positional, n_heads=2, attention={"scaling": scaling})
    model = Transformer(cfg)
    b, t = 3, 7
    mask = torch.ones(b, t, dtype=torch.bool)
    if padded:
        mask[1, 5:] = False
        mask[2, 3:] = False
    prefix_len = torch.tensor([3, 1, 4]) if prefix else None
    ctx = _context(model, mask, prefix_len, t)
    assert ctx.is_causal == is_causal
    assert (ctx.sdpa_mask is None) if mask_dtype is None else (ctx.sdpa_mask.dtype == mask_dtype)

    layer = SelfAttention(cfg)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("log_scale"):
                p.add_(torch.randn_like(p))  # a wrong fold of the learned scale would show
    reference = SelfAttention(
        dataclasses.replace(cfg, attention=dataclasses.replace(cfg.attention, impl="reference"))
    )
    reference.load_state_dict(layer.state_dict())
    float_bias = dataclasses.replace(ctx, sdpa_mask=ctx.bias, is_causal=False)  # the pre-fast-path call
    x = torch.randn(b, t, cfg.d_model)
    outputs = {
        "fast": layer(x, ctx)[0],
        "float_bias": layer(x, float_bias)[0],
        "reference": reference(x, ctx)[0],
    }
    real = mask  # padding rows may differ (they are ignored)
    for name, out in outputs.items():
        assert torch.allclose(out[real], outputs["reference"][real], atol=1e-5), name


@pytest.mark.parametrize("arch", ["encoder", "decoder"])
def test_all_real_mask_equals_no_mask(make_model_cfg, arch):
    """An all-True attention_mask takes the mask-free SDPA call; outputs equal those with no mask given
    and those of the reference path (which always applies the float bias)."""
    cfg = make_model_cfg(arch=arch, n_layers=2)
    fast = Transformer(cfg)
    ref = Transformer(
        dataclasses.replace(cfg, attention=dataclasses.replace(cfg.attention, impl="reference"))
    )
    ref.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 13, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    out_mask, _ = fast(ids, mask)
    out_none, _ = fast(ids)
    out_ref, _ = ref(ids, mask)
    assert torch.allclose(out_mask, out_none, atol=1e-6)
    assert torch.allclose(out_mask, out_ref, atol=1e-5)


# --- fused linear + cross-entropy --------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_linear_cross_entropy_matches_dense(onednn, chunk, with_bias):
    n, d, v = 7, 5, 11
    hidden = torch.randn(n, d, requires_grad=True)
    weight = torch.randn(v, d, requires_grad=True)
    bias = torch.randn(v, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    params = [p for p in (hidden, weight, bias) if p is not None]
    dense = F.cross_entropy(F.linear(hidden, weight, bias), targets)
    dense_grads = torch.autograd.grad(dense * 3.0, params)
    fused = fused_ce._fused_linear_cross_entropy(hidden, weight, bias, targets, chunk)
    fused_grads = torch.autograd.grad(fused * 3.0, params)  # backward scales by the incoming gradient
    assert torch.allclose(fused, dense, atol=1e-6)
    for a, b in zip(fused_grads, dense_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_fused_linear_cross_entropy_partial_grads_and_empty():
    hidden, weight = torch.randn(4, 3, requires_grad=True), torch.randn(6, 3)  # frozen weight
    targets = torch.randint(0, 6, (4,))
    loss = fused_ce.linear_cross_entropy(hidden, weight, None, targets)
    (grad,) = torch.autograd.grad(loss, hidden)
    (dense_grad,) = torch.autograd.grad(F.cross_entropy(F.linear(hidden, weight), targets), hidden)
    assert torch.allclose(grad, dense_grad, atol=1e-6)
    empty = fused_ce.linear_cross_entropy(hidden[:0], weight, None, targets[:0])
    assert float(empty) == 0.0  # no predicted token: 0, not NaN
    with torch.no_grad():  # evaluation takes the plain path: same value
        assert torch.allclose(fused_ce.linear_cross_entropy(hidden, weight, None, targets), loss)


needs_onednn = pytest.mark.skipif(not cpu_linear.available(), reason="PyTorch built without oneDNN")


@pytest.fixture(params=[False, True], ids=["aten", "onednn"])
def onednn(request, monkeypatch):
    """Run the test with the oneDNN linear off (ATen's BLAS) and on (whatever this CPU's default is)."""
    if request.param and not cpu_linear.available():
        pytest.skip("PyTorch built without oneDNN")
    monkeypatch.setattr(cpu_linear, "ENABLED", request.param)
    return request.param


def test_fused_linear_cross_entropy_float64_with_ignored_positions():
    """float64 (ATen products): loss and gradients w.r.t. every hidden state (0 at ignored positions),
    the weight and the bias equal F.cross_entropy(ignore_index=-100) over the [B*T, V] logits, to
    rounding; the remainder chunk and a scaled incoming gradient included."""
    b, t, d, v = 3, 5, 6, 17
    hidden = torch.randn(b, t, d, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, d, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (b, t))
    labels[0, 1], labels[1, :3], labels[2, 4] = -100, -100, -100
    dense = F.cross_entropy(
        F.linear(hidden, weight, bias).view(b * t, v), labels.view(b * t), ignore_index=-100
    )
    dense_grads = torch.autograd.grad(dense * 3.0, (hidden, weight, bias))
    keep = labels != heads_module.IGNORE_INDEX
    fused = fused_ce._fused_linear_cross_entropy(hidden[keep], weight, bias, labels[keep], 4)  # 11 rows
    fused_grads = torch.autograd.grad(fused * 3.0, (hidden, weight, bias))
    torch.testing.assert_close(fused, dense, rtol=1e-12, atol=1e-12)
    for a, r in zip(fused_grads, dense_grads):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-12)
    assert (fused_grads[0][~keep] == 0).all()


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_fused_linear_cross_entropy_target_probability_underflow(onednn, chunk):
    """A row whose target logit is far below its top (softmax(target) == 0 in fp32) takes its CE from
    recomputed logits: finite and equal to the dense value, gradients too."""
    n, d, v = 5, 4, 9
    hidden = torch.randn(n, d)
    hidden[1] *= 60.0  # large logits: this row's spread is hundreds of nats
    hidden.requires_grad_()
    weight = torch.randn(v, d, requires_grad=True)
    logits = F.linear(hidden, weight).detach()
    targets = torch.randint(0, v, (n,))
    targets[1] = logits[1].argmin()
    assert torch.softmax(logits[1], -1)[targets[1]] == 0  # the case under test
    fused = fused_ce._fused_linear_cross_entropy(hidden, weight, None, targets, chunk)
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    ref = (hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_())
    dense = F.cross_entropy(F.linear(*ref), targets)
    torch.testing.assert_close(fused.double(), dense, rtol=1e-5, atol=1e-5)
    for a, r in zip(fused_grads, torch.autograd.grad(dense, ref)):
        torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("frozen_weight", [False, True])
def test_fused_linear_cross_entropy_onednn_products(monkeypatch, chunk, with_bias, frozen_weight):
    """fp32 with oneDNN products == the float64 dense loss and gradients, to fp32 rounding."""
    monkeypatch.setattr(cpu_linear, "ENABLED", True)
    n, d, v = 11, 16, 37
    hidden = torch.randn(n, d, requires_grad=True)
    weight = torch.randn(v, d, requires_grad=not frozen_weight)
    bias = torch.randn(v, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    assert cpu_linear.uses_onednn(hidden, weight)
    params = [p for p in (hidden, weight, bias) if p is not None and p.requires_grad]
    ref = [
        p.detach().double().requires_grad_(p.requires_grad) if p is not None else None
        for p in (hidden, weight, bias)
    ]
    dense = F.cross_entropy(F.linear(*ref), targets)
    dense_grads = torch.autograd.grad(dense * 3.0, [p for p in ref if p is not None and p.requires_grad])
    fused = fused_ce._fused_linear_cross_entropy(hidden, weight, bias, targets, chunk)
    fused_grads = torch.autograd.grad(fused * 3.0, params)
    torch.testing.assert_close(fused.double(), dense, rtol=1e-5, atol=1e-6)
    for a, r in zip(fused_grads, dense_grads):
        assert a.shape == r.shape
        torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-6)


# --- the oneDNN linear -------------------------------------------------------------------------------
@needs_onednn
@pytest.mark.parametrize("x_shape", [(6, 5), (2, 3, 5), "transposed"])
@pytest.mark.parametrize("out_features", [3, 9])  # weight_grad copies g (N <= K) or x (N > K, + ones row)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("frozen", ["none", "weight", "input"])
def test_onednn_linear_matches_f_linear(monkeypatch, x_shape, out_features, with_bias, frozen):
    """Output and the gradients w.r.t. input, weight and bias == float64 F.linear, to fp32 rounding."""
    monkeypatch.setattr(cpu_linear, "ENABLED", True)
    x = (
        torch.randn(5, 2, 3).transpose(0, 2) if x_shape == "transposed" else torch.randn(*x_shape)
    )  # [3, 2, 5]
    x.requires_grad_(frozen != "input")
    weight = torch.randn(out_features, 5, requires_grad=frozen != "weight")
    bias = torch.randn(out_features, requires_grad=True) if with_bias else None
    assert cpu_linear.uses_onednn(x, weight)
    ref = [
        p.detach().double().requires_grad_(p.requires_grad) if p is not None else None
        for p in (x, weight, bias)
    ]
    grad_out = torch.randn(*x.shape[:-1], out_features)
    y, y_ref = cpu_linear.linear(x, weight, bias), F.linear(*ref)
    assert isinstance(y.grad_fn, cpu_linear.OneDNNLinear._backward_cls)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-6)
    params = [p for p in (x, weight, bias) if p is not None and p.requires_grad]
    ref_params = [p for p in ref if p is not None and p.requires_grad]
    grads = torch.autograd.grad(y, params, grad_out)
    for a, r in zip(grads, torch.autograd.grad(y_ref, ref_params, grad_out.double()), strict=True):
        assert a.shape == r.shape and a.is_contiguous()
        torch.testing.assert_close(a.double(), r, rtol=1e-5, atol=1e-5)


def test_linear_falls_back_to_f_linear(monkeypatch):
    """Off, or for what oneDNN is not used for (float64, 1-D input), ``linear`` is ``F.linear`` exactly."""
    x, weight, bias = torch.randn(4, 5), torch.randn(3, 5), torch.randn(3)
    monkeypatch.setattr(cpu_linear, "ENABLED", False)
    assert not cpu_linear.uses_onednn(x, weight)
    assert torch.equal(cpu_linear.linear(x, weight, bias), F.linear(x, weight, bias))
    monkeypatch.setattr(cpu_linear, "ENABLED", cpu_linear.available())
    x64, w64 = x.double(), weight.double()
    assert not cpu_linear.uses_onednn(x64, w64) and not cpu_linear.uses_onednn(x[0], weight)
    assert torch.equal(cpu_linear.linear(x64, w64), F.linear(x64, w64))


def test_onednn_default(monkeypatch):
    """The environment variable forces the default either way; otherwise only x86-64 AMD CPUs use it."""
    monkeypatch.setenv("ABLATE_ONEDNN_LINEAR", "0")
    assert not cpu_linear.default_enabled()
    monkeypatch.setenv("ABLATE_ONEDNN_LINEAR", "1")
    assert cpu_linear.default_enabled()
    monkeypatch.delenv("ABLATE_ONEDNN_LINEAR")
    monkeypatch.setattr(cpu_linear, "_cpu_vendor", lambda: "GenuineIntel")
    assert not cpu_linear.default_enabled()


@needs_onednn
@pytest.mark.parametrize("kind", ["mlm_nsp", "causal"])
def test_task_model_onednn_equals_aten(make_model_cfg, monkeypatch, kind):
    """A training step's loss and every gradient with the oneDNN linears (and oneDNN products in the fused
    loss) == with ATen's BLAS everywhere, to fp32 rounding; and the oneDNN path is deterministic."""
    if kind == "mlm_nsp":
        model, batch = MaskedLM(make_model_cfg(n_layers=2), nsp=True), _mlm_batch()
    else:
        model, batch = (
            CausalLM(make_model_cfg(arch="decoder", n_layers=2, segment_embeddings=False)),
            _causal_batch(),
        )
    results = {}
    for name, enabled in [("aten", False), ("onednn", True), ("onednn_again", True)]:
        monkeypatch.setattr(cpu_linear, "ENABLED", enabled)
        loss = model(batch).loss
        results[name] = [loss, *torch.autograd.grad(loss, list(model.parameters()))]
    for (a, b, c), name in zip(zip(*results.values()), ["loss"] + [n for n, _ in model.named_parameters()]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
        assert torch.equal(b, c), name  # same inputs, same bits


def _mlm_batch(b=3, t=9, vocab=13):
    ids = torch.randint(0, vocab, (b, t))
    mask = torch.arange(t)[None, :] < torch.tensor([t, t - 2, t - 4])[:, None]
    labels = torch.full((b, t), -100)
    labels[0, 1], labels[0, 4], labels[1, 2], labels[2, 3] = 5, 6, 7, 8
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "segment_ids": (torch.arange(t) >= t // 2).long().expand(b, t),
        "labels": labels,
        "nsp_labels": torch.tensor([1, 0, 1]),
    }


def _causal_batch(b=3, t=9, vocab=13):
    ids = torch.randint(0, vocab, (b, t))
    mask = torch.arange(t)[None, :] < torch.tensor([t, t, t - 3])[:, None]
    labels = torch.cat([ids[:, 1:], torch.full((b, 1), -100)], dim=1).masked_fill(~mask, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _dense_loss(model, batch):
    """The loss with [N, V] logits materialised (what the fused path must reproduce)."""
    if isinstance(model, MaskedLM):
        hidden, _ = model.backbone(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
        head = model.mlm_head
    else:
        hidden, _ = model.backbone(batch["input_ids"], batch["attention_mask"])
        head = model.lm_head
    keep = batch["labels"] != -100
    logits = head(hidden[keep], model.backbone.tok_embedding.weight)
    loss = F.cross_entropy(logits, batch["labels"][keep])
    if isinstance(model, MaskedLM) and model.nsp_head is not None:
        loss = loss + F.cross_entropy(model.nsp_head(hidden), batch["nsp_labels"])
    return loss, logits


@pytest.mark.parametrize("kind", ["mlm_nsp", "causal"])
def test_task_model_training_loss_and_grads_equal_dense(make_model_cfg, onednn, kind):
    if kind == "mlm_nsp":
        model, batch = MaskedLM(make_model_cfg(), nsp=True), _mlm_batch()
    else:
        model, batch = CausalLM(make_model_cfg(arch="decoder", segment_embeddings=False)), _causal_batch()
    out = model(batch)  # grad enabled: fused loss, logits deferred
    assert callable(object.__getattribute__(out, "logits"))
    grads = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    dense, dense_logits = _dense_loss(model, batch)
    dense_grads = torch.autograd.grad(dense, list(model.parameters()), allow_unused=True)
    assert torch.allclose(out.loss, dense, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), grads, dense_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6), name
    assert out.logits.shape == dense_logits.shape and not out.logits.requires_grad
    assert torch.allclose(out.logits, dense_logits, atol=1e-6)
    with torch.no_grad():  # evaluation: logits computed eagerly, same loss
        eval_out = model(batch)
    assert torch.is_tensor(object.__getattribute__(eval_out, "logits"))
    assert torch.allclose(eval_out.loss, dense, atol=1e-6)


# --- additive attention kernels == the textbook formula --------------------------------------------------
def naive_additive_scores(q, k, v_a):
    """v_a . tanh(q_i + k_j) with the whole [B, H, Tq, Tk, d] tensor."""
    return (torch.tanh(q[:, :, :, None, :] + k[:, :, None, :, :]) * v_a[None, :, None, None, :]).sum(-1)


def _bias(kind: str, b: int, h: int, t: int, make_model_cfg) -> torch.Tensor:
    if kind == "none":
        return AttentionContext.build(None, None, None, t, torch.device("cpu")).bias
    if kind == "padding":  # incl. an all-padding sample (its rows fall back to every key)
        mask = torch.arange(t)[None, :] < torch.tensor([t, 3, 0])[:b, None]
        return AttentionContext.build(mask, mask, None, t, torch.device("cpu")).bias
    alibi = POSITIONALS["alibi"](make_model_cfg(n_heads=h, positional="alibi")).attention_bias(
        t, torch.device("cpu")
    )
    return AttentionContext.build(
        None, None, None, t, torch.device("cpu"), position_bias=alibi, causal=True
    ).bias


@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("bias_kind", ["none", "padding", "causal_alibi"])
@pytest.mark.parametrize("learned_scale", [False, True])
def test_additive_attention_function_matches_naive(make_model_cfg, chunk, bias_kind, learned_scale):
    b, h, t, d = 3, 2, 7, 4
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    v_a = torch.randn(h, d, requires_grad=True)
    scale = (torch.rand(h, 1, 1) + 0.5).requires_grad_() if learned_scale else 0.4
    bias = _bias(bias_kind, b, h, t, make_model_cfg)
    inputs = [q, k, v, v_a] + ([scale] if learned_scale else [])
    grad_out = torch.randn(b, h, t, d)

    ref = (naive_additive_scores(q, k, v_a) * scale + bias).softmax(-1) @ v
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)
    fast = additive.AdditiveAttentionFunction.apply(q, k, v, v_a, scale, bias, chunk)
    fast_grads = torch.autograd.grad(fast, inputs, grad_out)
    assert torch.allclose(fast, ref, atol=1e-5)
    for name, a, r in zip(["q", "k", "v", "v_a", "scale"], fast_grads, ref_grads):
        assert torch.allclose(a, r, atol=1e-4, rtol=1e-4), (name, (a - r).abs().max())


@pytest.mark.parametrize("chunk", [1, 2, 64])
def test_additive_score_function_matches_naive(chunk):
    b, h, tq, tk, d = 2, 3, 5, 6, 4
    q, k = torch.randn(b, h, tq, d, requires_grad=True), torch.randn(b, h, tk, d, requires_grad=True)
    v_a = torch.randn(h, d, requires_grad=True)
    grad = torch.randn(b, h, tq, tk)
    ref = naive_additive_scores(q, k, v_a)
    fast = additive.AdditiveScoreFunction.apply(q, k, v_a, chunk)
    assert torch.allclose(fast, ref, atol=1e-5)
    for a, r in zip(
        torch.autograd.grad(fast, (q, k, v_a), grad), torch.autograd.grad(ref, (q, k, v_a), grad)
    ):
        assert torch.allclose(a, r, atol=1e-4, rtol=1e-4)


def test_additive_cross_attention_lengths_differ(make_model_cfg):
    """Tq != Tk (cross-attention): the kernels agree with the naive formula."""
    b, h, tq, tk, d = 2, 2, 3, 8, 4
    q, k, v = torch.randn(b, h, tq, d), torch.randn(b, h, tk, d), torch.randn(b, h, tk, d)
    v_a = torch.randn(h, d)
    mask = torch.arange(tk)[None, :] < torch.tensor([tk, 5])[:, None]
    bias = AttentionContext.build(mask, None, None, tk, torch.device("cpu")).bias
    ref = (naive_additive_scores(q, k, v_a) * 0.5 + bias).softmax(-1) @ v
    fast = additive.AdditiveAttentionFunction.apply(q, k, v, v_a, 0.5, bias, 2)
    assert torch.allclose(fast, ref, atol=1e-5)


@pytest.mark.parametrize("arch", get_args(Arch))
def test_additive_fast_path_equals_probability_path_in_training(make_model_cfg, arch):
    """The training forward (no probabilities kept) == the forward that returns attention stats
    (probabilities materialised): outputs and every gradient."""
    cfg = make_model_cfg(
        arch=arch,
        n_layers=2,
        positional="alibi" if arch == "decoder" else "learned",
        attention={"kind": "additive", "scaling": "learned", "chunk_size": 3},
    )
    model = Transformer(cfg)
    ids = torch.randint(0, 13, (3, 7))
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None]
    kwargs = (
        {"encoder_input_ids": ids.flip(1), "encoder_attention_mask": mask}
        if arch == "encoder_decoder"
        else {}
    )
    results = []
    for return_stats in (False, True):
        model.zero_grad(set_to_none=True)
        out, _ = model(ids, mask, return_stats=return_stats, **kwargs)
        (out[mask] ** 2).sum().backward()
        results.append(
            (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (out_fast, grads_fast), (out_probs, grads_probs) = results
    assert torch.allclose(out_fast[mask], out_probs[mask], atol=1e-5)
    assert grads_fast.keys() == grads_probs.keys()
    for name in grads_fast:
        assert torch.allclose(grads_fast[name], grads_probs[name], atol=1e-4, rtol=1e-4), name


def test_additive_training_keeps_nothing_quadratic(make_model_cfg):
    """Saved for backward: O(T d) tensors only (q, k, v, output, log-sum-exp), no [B, H, T, T] tensor."""
    b, t = 2, 32
    cfg = make_model_cfg(
        n_heads=2, positional="none", max_len=t, attention={"kind": "additive", "chunk_size": 4}
    )
    model = Transformer(cfg)
    saved = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out, _ = model(torch.randint(0, 13, (b, t)))
    assert max(saved) < b * cfg.n_heads * t * t, max(saved)
    out.sum().backward()


def test_additive_chunk_is_capped_by_the_buffer_budget(monkeypatch):
    q, k = torch.zeros(2, 4, 100, 8), torch.zeros(2, 4, 50, 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the budget is per thread
    assert additive.queries_per_chunk(q, k, 64) == 64
    monkeypatch.setattr(additive, "ADDITIVE_CHUNK_ELEMENTS", 2 * 4 * 50 * 8 * 5)
    assert additive.queries_per_chunk(q, k, 64) == 5
    monkeypatch.setattr(additive, "ADDITIVE_CHUNK_ELEMENTS", 1)
    assert additive.queries_per_chunk(q, k, 64) == 1


# --- torch.compile == eager -------------------------------------------------------------------------
def _backend() -> str:
    """Inductor where a C++ compiler exists (about 10-20 s here for the first compile), else aot_eager
    (the same graph capture and autograd tracing, run without code generation)."""
    return "inductor" if (shutil.which("g++") or shutil.which("c++")) else "aot_eager"


@pytest.mark.parametrize(
    "kind,backend",
    [("mlm_nsp", "aot_eager"), ("causal", "aot_eager"), ("causal", "default"), ("additive", "aot_eager")],
)
def test_compiled_equals_eager(make_model_cfg, kind, backend):
    torch._dynamo.reset()
    if kind == "mlm_nsp":
        model, batch = MaskedLM(make_model_cfg(), nsp=True), _mlm_batch()
    elif kind == "causal":
        model, batch = CausalLM(make_model_cfg(arch="decoder", segment_embeddings=False)), _causal_batch()
    else:
        cfg = make_model_cfg(arch="decoder", segment_embeddings=False, attention={"kind": "additive"})
        model, batch = CausalLM(cfg), _causal_batch()
    compiled = torch.compile(model, backend=_backend() if backend == "default" else backend)
    eager_out = model(batch)
    eager_grads = torch.autograd.grad(eager_out.loss, list(model.parameters()))
    for _ in range(2):  # the second call runs the cached graphs
        out = compiled(batch)
        grads = torch.autograd.grad(out.loss, list(model.parameters()))
        assert torch.allclose(out.loss, eager_out.loss, atol=1e-5)
        for (name, _), a, b in zip(model.named_parameters(), grads, eager_grads):
            assert torch.allclose(a, b, atol=1e-5), name


# --- the Q4 attention-cost benchmark's contract (the report reads its JSON) ----------------------------
def test_attention_cost_rows_and_files(tmp_path):
    from transformer_ablations.bench import attention_cost

    eager = ("dot_sdpa", "dot_reference", "additive")  # the compiled kinds: tests/test_q1_q4_experiments.py
    rows = attention_cost.measure(eager, lengths=(8, 16), d_k=8, n_heads=2, batch=1, repeats=2, min_time_s=0.0)
    assert len(rows) == 3 * 2 * 2
    assert all(set(r) == {"kind", "T", "d_k", "repeat", "time_ms", "peak_mem_mb", "flops"} for r in rows)
    assert {r["kind"] for r in rows} == {"dot_sdpa", "dot_reference", "additive"}
    assert all(r["time_ms"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
    out = tmp_path / "q4_attention_cost.json"
    attention_cost.main(
        [
            "--out",
            str(out),
            "--kinds",
            *eager,
            "--lengths",
            "8,16",
            "--repeats",
            "1",
            "--d-k",
            "8",
            "--quiet",
            "--min-time-s",
            "0",
        ]
    )
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 6 and "memory_method" in data["meta"]
    assert out.with_suffix(".png").stat().st_size > 0
