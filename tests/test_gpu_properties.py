"""The model's properties on each device: every test here runs on the CPU (under ``make test``) and on a
CUDA GPU (``pytest -m gpu``, skipped without one; ``benchmarks/gpu_check.sh`` runs them).

- fast (SDPA) == reference attention, fp32: |fast - reference| <= 1e-5 (TF32 off; fp32's eps is 1.2e-7,
  a few hundred roundings per output);
- fast == reference, bf16 autocast: the fast path's error against a float64 reference is at most twice
  the reference path's own bf16 error, plus 1e-3 (FlashAttention's own test rule: the kernel may not be
  worse than the straightforward maths in the same precision);
- the causal decoder runs under ``sdpa_kernel([FLASH_ATTENTION])`` (no mask tensor reaches SDPA);
- causal masking leaks nothing: outputs before position j are unchanged (<= 1e-6) when tokens from j on
  change, and their gradient with respect to the embeddings from j on is zero (<= 1e-6 of its size);
- the additive kernel's gradients: ``torch.autograd.gradcheck`` (finite differences; the kernel computes
  in fp32 whatever its inputs, so eps and tolerance 1e-3) and fp32 == autograd through the textbook
  formula (1e-4, the CPU tests' tolerance);
- a resumed run == the uninterrupted run on the same GPU (CUDA only; the CPU version is
  ``test_training.py::test_resumed_run_matches_uninterrupted_run``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from transformer_ablations.model import AttentionContext, Transformer
from transformer_ablations.model.kernels import additive

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]
ROOT = Path(__file__).resolve().parents[1]
CASES = {  # arch, positional, padded, prefix-LM
    "padding": ("encoder", "learned", True, False),
    "causal": ("decoder", "rope", False, False),
    "causal_padded": ("decoder", "learned", True, False),
    "prefix": ("decoder", "sinusoidal", False, True),
    "alibi": ("decoder", "alibi", False, False),
    "cross": ("encoder_decoder", "learned", True, False),
}
KINDS = [("dot", "sdpa"), ("dot", "reference"), ("additive", "sdpa")]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 means fp32: TF32 matmuls (10-bit mantissa) would need bf16-like tolerances."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def model_pair(make_model_cfg, case: str, device: str) -> tuple[Transformer, Transformer, tuple, dict]:
    """The same weights on the fast (SDPA) and reference paths, and a batch for ``case``."""
    arch, positional, padded, prefix = CASES[case]
    common = {"arch": arch, "positional": positional, "d_model": 64, "n_heads": 2, "n_layers": 2, "d_ff": 128,
              "max_len": 64}
    fast = Transformer(make_model_cfg(**common, attention={"impl": "sdpa"}))
    ref = Transformer(make_model_cfg(**common, attention={"impl": "reference"}))
    ref.load_state_dict(fast.state_dict())
    b, t = 3, 40
    ids = torch.randint(0, 13, (b, t), device=device)
    mask = (torch.arange(t)[None, :] < torch.tensor([t, t - 7, t - 19])[:, None]).to(device) if padded else None
    kwargs = {"prefix_len": torch.tensor([9, 3, 20], device=device)} if prefix else {}
    if arch == "encoder_decoder":
        kwargs = {"encoder_input_ids": ids.flip(1), "encoder_attention_mask": mask}
    return fast.to(device), ref.to(device), (ids, mask), kwargs


def real(out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return out[mask] if mask is not None else out.flatten(0, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_fast_equals_reference_fp32(make_model_cfg, device, case):
    fast, ref, (ids, mask), kwargs = model_pair(make_model_cfg, case, device)
    out_fast, out_ref = fast(ids, mask, **kwargs)[0], ref(ids, mask, **kwargs)[0]
    err = (real(out_fast, mask) - real(out_ref, mask)).abs().max().item()
    assert err <= 1e-5, err


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_fast_equals_reference_bf16(make_model_cfg, device, case):
    fast, ref, (ids, mask), kwargs = model_pair(make_model_cfg, case, device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out_fast, out_ref = fast(ids, mask, **kwargs)[0], ref(ids, mask, **kwargs)[0]
    exact = real(ref.double()(ids, mask, **kwargs)[0], mask)
    err_fast = (real(out_fast, mask).double() - exact).abs().max().item()
    err_ref = (real(out_ref, mask).double() - exact).abs().max().item()
    assert err_ref > 0, "the reference path did not run in bf16"
    assert err_fast <= 2 * err_ref + 1e-3, (err_fast, err_ref)


@pytest.mark.parametrize("device", DEVICES)
def test_causal_decoder_runs_the_flash_kernel(make_model_cfg, device):
    """No padding, no ALiBi: SDPA gets no mask tensor (``is_causal``), so flash attention accepts it."""
    fast, _, (ids, _), _ = model_pair(make_model_cfg, "causal", device)
    with torch.autocast(device, dtype=torch.bfloat16), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = fast(ids)[0]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,impl", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_mask_leaks_nothing(make_model_cfg, device, kind, impl, dtype):
    cfg = make_model_cfg(arch="decoder", positional="learned", d_model=64, n_heads=2, n_layers=2, d_ff=128,
                         max_len=64, attention={"kind": kind, "impl": impl})
    model = Transformer(cfg).to(device)
    t, j = 48, 20
    ids = torch.randint(0, 13, (2, t), device=device)
    later = ids.clone()
    later[:, j:] = (ids[:, j:] + 1 + torch.randint(0, 11, (2, t - j), device=device)) % 13
    embeddings = []
    hook = model.tok_embedding.register_forward_hook(lambda m, i, o: embeddings.append(o) or o.retain_grad())
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        out, _ = model(ids)
        out_later, _ = model(later)
    hook.remove()
    assert (out_later[:, j:] - out[:, j:]).abs().max() > 1e-2  # the change reaches the later positions
    assert (out_later[:, :j] - out[:, :j]).abs().max().item() <= 1e-6
    out[:, :j].float().sum().backward()
    grad = embeddings[0].grad
    assert grad[:, :j].abs().max() > 0
    assert grad[:, j:].abs().max().item() <= 1e-6 * grad[:, :j].abs().max().item()


def _naive_additive(q, k, v, v_a, scale, bias):
    scores = (torch.tanh(q[:, :, :, None, :] + k[:, :, None, :, :]) * v_a[None, :, None, None, :]).sum(-1)
    return (scores * scale + bias).softmax(-1) @ v


def _causal_bias(t: int, device: str) -> torch.Tensor:
    return AttentionContext.build(None, None, None, t, torch.device(device), causal=True).bias


@pytest.mark.parametrize("device", DEVICES)
def test_additive_kernel_gradcheck(device):
    b, h, t, d = 2, 2, 5, 3
    q, k, v = (torch.randn(b, h, t, d, dtype=torch.float64, device=device, requires_grad=True) for _ in range(3))
    v_a = torch.randn(h, d, dtype=torch.float64, device=device, requires_grad=True)
    scale = (torch.rand(h, 1, 1, dtype=torch.float64, device=device) + 0.5).requires_grad_()
    bias = _causal_bias(t, device).double()

    def kernel(q, k, v, v_a, scale):
        return additive.AdditiveAttentionFunction.apply(q, k, v, v_a, scale, bias, 2)

    # the kernel computes in fp32 whatever its inputs (float64 in, fp32 inside, float64 out): finite
    # differences of eps 1e-3 (fp32 rounding / eps ~ 1e-4), tolerance 1e-3; a wrong gradient is off by ~0.1
    assert torch.autograd.gradcheck(kernel, (q, k, v, v_a, scale), eps=1e-3, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_additive_kernel_fp32_gradients_equal_autograd(device):
    b, h, t, d = 2, 4, 64, 16
    q, k, v = (torch.randn(b, h, t, d, device=device, requires_grad=True) for _ in range(3))
    v_a = torch.randn(h, d, device=device, requires_grad=True)
    bias, inputs = _causal_bias(t, device), [q, k, v, v_a]
    grad_out = torch.randn(b, h, t, d, device=device)
    ref = _naive_additive(q, k, v, v_a, 0.25, bias)
    fast = additive.AdditiveAttentionFunction.apply(q, k, v, v_a, 0.25, bias, 8)
    assert torch.allclose(fast, ref, atol=1e-5)
    for name, a, r in zip(["q", "k", "v", "v_a"], torch.autograd.grad(fast, inputs, grad_out),
                          torch.autograd.grad(ref, inputs, grad_out)):
        assert torch.allclose(a, r, atol=1e-4, rtol=1e-4), (name, (a - r).abs().max().item())


class Crash(Exception):
    pass


@pytest.mark.gpu
@CUDA
def test_resumed_run_matches_uninterrupted_run_on_the_gpu(tmp_path, crash_at_step):
    """As the CPU test (q5_pretrain smoke, dropout 0.1, killed at step 6, resumed from step 4), on cuda:0.
    Metrics agree to a relative 1e-4, not bit for bit: SDPA's fp32 (memory-efficient) backward adds with
    atomics, so two uninterrupted GPU runs differ in the last bits too; a resume that loses optimizer,
    schedule, data-order or RNG state moves the losses by far more than that."""
    from transformer_ablations.cli import parse_run_config
    from transformer_ablations.training.run import train

    def cfg(out: Path):
        return parse_run_config([
            "--config", str(ROOT / "experiments" / "q5_pretrain.yaml"), "--scale=smoke",
            f"--train.out_dir={out}", f"--data.cache_dir={tmp_path / 'cache'}", "--train.wandb=disabled",
            "--train.accelerator=gpu", "--train.devices=1", "--train.max_steps=12", "--train.val_every=4",
            "--model.dropout=0.1",
        ])

    whole = train(cfg(tmp_path / "whole"))
    crash_at_step(cfg(tmp_path / "resumed"), 6)
    resumed = train(cfg(tmp_path / "resumed"))
    assert whole["status"] == resumed["status"] == "finished"
    assert resumed["resumed_from_step"] == 4
    compared = {k: v for k, v in whole["metrics"].items() if k.startswith(("val", "train/loss"))}
    assert compared
    for key, value in compared.items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
