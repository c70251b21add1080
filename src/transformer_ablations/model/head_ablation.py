"""Zero attention heads at evaluation (Q3: cross- vs self-attention heads; Michel et al. 2019,
"Are Sixteen Heads Really Better than One?", https://arxiv.org/abs/1905.10650).

A head's contribution to its layer is its slice ``y[..., h*d:(h+1)*d]`` of the concatenated head
outputs, which the layer's output projection ``out`` maps back to d_model. :func:`zero_heads`
installs a forward pre-hook on ``out`` that zeroes exactly those slices, so the layer's output is
``out.bias + sum over the other heads`` and nothing else in the network changes. Heads are named
``<layer>:<head>`` with the layer names of the attention statistics (``enc0``, ``dec1_self``,
``dec1_cross``; ``dec0`` in a decoder-only model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import nn

from .attention import MultiHeadAttention


def attention_layers(backbone: nn.Module) -> dict[str, MultiHeadAttention]:
    """Layer name -> attention module, named as in the attention statistics (``Stack.stat_names``)."""
    out: dict[str, MultiHeadAttention] = {}
    for stack in (getattr(backbone, "encoder", None), getattr(backbone, "decoder", None)):
        if stack is None:
            continue
        modules = [m for block in stack.blocks for m in (block.self_attn, block.cross_attn) if m is not None]
        out.update(zip(stack.stat_names, modules))
    return out


def head_names(backbone: nn.Module, kind: str | None = None) -> list[str]:
    """Every ``<layer>:<head>``; ``kind``: only ``cross`` (decoder cross-attention) or ``self``
    (decoder self-attention) layers."""
    names = []
    for layer, module in attention_layers(backbone).items():
        is_cross = layer.endswith("_cross")
        is_dec_self = layer.startswith("dec") and not is_cross
        if kind is None or (kind == "cross" and is_cross) or (kind == "self" and is_dec_self):
            names += [f"{layer}:{h}" for h in range(module.n_heads)]
    return names


@contextlib.contextmanager
def zero_heads(backbone: nn.Module, heads: Iterable[str]) -> Iterator[None]:
    """Within the block, the named heads contribute nothing (see the module docstring)."""
    layers = attention_layers(backbone)
    chosen: dict[str, list[int]] = {}
    for name in heads:
        layer, _, index = name.partition(":")
        if layer not in layers or not index.isdigit() or int(index) >= layers[layer].n_heads:
            valid = ", ".join(f"{n}:0..{m.n_heads - 1}" for n, m in layers.items())
            raise ValueError(f"unknown attention head {name!r}; valid: {valid}")
        chosen.setdefault(layer, []).append(int(index))
    handles = []
    for layer, indices in chosen.items():
        module = layers[layer]
        d = module.head_dim

        def hook(_out, args, indices=tuple(indices), d=d):
            (y,) = args
            y = y.clone()
            for h in indices:
                y[..., h * d : (h + 1) * d] = 0.0
            return (y,)

        handles.append(module.out.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
