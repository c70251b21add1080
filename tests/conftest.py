"""Shared test setup: one torch thread (the CI machine has 2 cores), a fixed seed per test, and a
factory for tiny model configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from transformer_ablations.config import AttentionConfig, ModelConfig

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model_config(**overrides) -> ModelConfig:
    """d_model 16, 2 heads of 8, 1 layer, vocab 13; ``attention=dict(kind=..., ...)`` is accepted."""
    attention = AttentionConfig(**overrides.pop("attention", {}))
    base = ModelConfig(
        d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=32, vocab_size=13, attention=attention
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def make_model_cfg():
    return tiny_model_config


class Crash(Exception):
    pass


@pytest.fixture
def crash_at_step(monkeypatch):
    """``crash_at_step(cfg, step)``: train ``cfg`` with an exception raised before the optimizer step
    ``step`` (a simulated kill), assert that the run is recorded as failed, and restore training."""
    from transformer_ablations.training import callbacks
    from transformer_ablations.training.run import train

    original = callbacks.DivergenceGuard.on_before_optimizer_step

    def run(cfg, step: int) -> dict:
        def crash(self, trainer, pl_module, optimizer):
            if trainer.global_step == step:
                raise Crash("simulated kill")
            return original(self, trainer, pl_module, optimizer)

        monkeypatch.setattr(callbacks.DivergenceGuard, "on_before_optimizer_step", crash)
        crashed = train(cfg)  # a crash is recorded, not raised
        monkeypatch.setattr(callbacks.DivergenceGuard, "on_before_optimizer_step", original)
        assert crashed["status"] == "failed" and "simulated kill" in str(crashed.get("error")), crashed
        return crashed

    return run
