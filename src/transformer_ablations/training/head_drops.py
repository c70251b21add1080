"""Q3's head ablation at evaluation: after the last validation of an encoder-decoder seq2seq run,
each decoder head is zeroed in turn (:func:`~transformer_ablations.model.head_ablation.zero_heads`)
and the teacher-forced token accuracy on the validation split is measured again.

Logged (so they reach ``summary.json``): ``val/head_drop/<layer>_h<i>`` for every decoder head
(self- and cross-attention), ``val/head_drop_self`` and ``val/head_drop_cross`` (means over the
decoder's self- / cross-attention heads) and ``val/head_drop_cross_minus_self``. A drop is the full
model's token accuracy minus the accuracy with that one head zeroed (Michel et al. 2019 §3 ablate
one head at a time the same way).
"""

from __future__ import annotations

import lightning as L
import torch

from ..model.head_ablation import head_names, zero_heads


def token_accuracy(pl_module, loader, strategy) -> float:
    """Teacher-forced accuracy over the labelled target tokens of ``loader``."""
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            out = pl_module.net(strategy.batch_to_device(batch))
            correct += int((out.logits.argmax(-1) == out.targets).sum())
            total += out.targets.numel()
    return correct / max(total, 1)


class HeadDrops(L.Callback):
    """See the module docstring. Runs only for ``model.arch=encoder_decoder`` seq2seq runs, once."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        cfg = pl_module.cfg
        if (trainer.sanity_checking or cfg.model.arch != "encoder_decoder" or not pl_module.is_seq2seq
                or trainer.global_step < trainer.max_steps):
            return
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        backbone = pl_module.net.backbone
        base = token_accuracy(pl_module, loader, trainer.strategy)
        drops: dict[str, list[float]] = {"self": [], "cross": []}
        for kind, kind_drops in drops.items():
            for head in head_names(backbone, kind):
                with zero_heads(backbone, [head]):
                    drop = base - token_accuracy(pl_module, loader, trainer.strategy)
                kind_drops.append(drop)
                pl_module.log(f"val/head_drop/{head.replace(':', '_h')}", drop)
        mean = {k: sum(v) / len(v) for k, v in drops.items()}
        pl_module.log("val/head_drop_self", mean["self"])
        pl_module.log("val/head_drop_cross", mean["cross"])
        pl_module.log("val/head_drop_cross_minus_self", mean["cross"] - mean["self"])
