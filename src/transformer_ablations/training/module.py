"""The LightningModule: a thin wrapper that turns a plain task model's outputs into metrics.

The task model (``model.task_models``) owns the maths and the loss; this module owns the
optimizer, the schedule and the torchmetrics. Metric keys are ``stage/name``.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassMatthewsCorrCoef

from ..config import RunConfig, from_dict
from ..tasks import TaskSpec, length_buckets


def _classification_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "mcc": MulticlassMatthewsCorrCoef(num_classes),
        }
    )


class AblationModule(L.LightningModule):
    """``net``: the built task model (``TaskSpec.model``); ``task``: its spec (which metrics it logs).
    The hyperparameters (what a checkpoint records) are ``config``, ``num_classes`` and ``val_names``;
    ``tokenizer_bytes`` go into each checkpoint, ``special_ids`` (bos/eos) drive greedy decoding."""

    def __init__(self, net: nn.Module, task: TaskSpec, config: dict, num_classes: int | None = None,
                 val_names: list[str] | None = None, tokenizer_bytes: bytes | None = None,
                 special_ids: dict[str, int] | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "task", "tokenizer_bytes", "special_ids"])
        self.cfg: RunConfig = from_dict(config)
        self.val_names = list(val_names or ["val"])
        self.net = net
        self.tokenizer_bytes = tokenizer_bytes
        self.is_classifier = task.family.name == "classification"
        self.is_seq2seq = task.family.name == "seq2seq"
        if self.is_classifier:
            self.val_metrics = nn.ModuleList(_classification_metrics(num_classes) for _ in self.val_names)
        else:
            self.val_metrics = nn.ModuleList(
                MetricCollection({"acc": MeanMetric(), "nll": MeanMetric()}) for _ in self.val_names
            )
        self.val_loss = nn.ModuleList(MeanMetric() for _ in self.val_names)
        self.val_aux = nn.ModuleDict({"nsp_acc": MeanMetric()}) if self.cfg.objective == "mlm_nsp" else nn.ModuleDict()
        self.buckets = length_buckets(self.cfg.data.seq_len) if self.is_seq2seq else []
        if self.is_seq2seq:
            self.exact = MeanMetric()
            self.exact_by_len = nn.ModuleList(MeanMetric() for _ in self.buckets)
        self.special_ids: dict[str, int] = dict(special_ids or {})  # bos/eos for greedy decoding
        self.last_attention_stats: list[dict] | None = None
        self.last_val_output, self.last_exact = None, None
        self.want_attention_stats = False
        if self.cfg.finetune.mode == "probe" and self.is_classifier:
            self.freeze_backbone()

    # --- fine-tuning --------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Probe mode: a frozen encoder in eval mode (no dropout), only the head trains."""
        for p in self.net.backbone.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.finetune.mode == "probe" and self.is_classifier:
            self.net.backbone.eval()
        return self

    # --- steps --------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int):
        out = self.net(batch, return_stats=self.want_attention_stats)
        self.last_attention_stats = out.stats
        self.log("train/loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=False, sync_dist=True)
        return out.loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0):
        out = self.net(batch)
        self.last_val_output = out  # read by eval_records.ExampleRecorder (per-example outcomes)
        n = out.targets.numel()
        self.val_loss[dataloader_idx].update(out.loss.detach(), weight=max(n, 1))
        metrics = self.val_metrics[dataloader_idx]
        if self.is_classifier:
            metrics.update(out.logits.detach(), out.targets)
        elif n:
            correct = (out.logits.argmax(-1) == out.targets).float()
            metrics["acc"].update(correct)
            metrics["nll"].update(out.loss.detach(), weight=n)
        if "nsp" in out.aux and dataloader_idx == 0:
            logits, targets = out.aux["nsp"]
            self.val_aux["nsp_acc"].update((logits.argmax(-1) == targets).float())
        if self.is_seq2seq and dataloader_idx == 0:
            self._update_exact_match(batch)

    def _update_exact_match(self, batch: dict) -> None:
        labels = batch["labels"]
        target_mask = labels != -100
        max_new = int(target_mask.sum(1).max())
        generated = self.net.generate(batch, max_new_tokens=max_new, **self.special_ids)
        # generated [B, <=max_new]; compare with the target tokens (incl. EOS), right-aligned to labels
        targets = [row[m] for row, m in zip(labels, target_mask)]
        exact = torch.tensor(
            [len(g) >= len(t) and bool(torch.equal(g[: len(t)], t)) for g, t in zip(generated, targets)],
            dtype=torch.float,
            device=labels.device,
        )
        self.exact.update(exact)
        self.last_exact = exact  # per example, for eval_records.ExampleRecorder
        src_len = batch["src_len"]
        lower = 0
        for metric, upper in zip(self.exact_by_len, self.buckets):
            in_bucket = (src_len > lower) & (src_len <= upper)
            if in_bucket.any():
                metric.update(exact[in_bucket])
            lower = upper

    def on_validation_epoch_end(self) -> None:
        for i, name in enumerate(self.val_names):
            if self.val_loss[i].update_count == 0:
                continue
            self.log(f"{name}/loss", self.val_loss[i].compute(), prog_bar=i == 0)
            self.val_loss[i].reset()
            values = self.val_metrics[i].compute()
            self.val_metrics[i].reset()
            if self.is_classifier:
                for key, value in values.items():
                    self.log(f"{name}/{key}", value, prog_bar=key == "acc" and i == 0)
            else:
                key = "token_acc" if self.is_seq2seq else "acc"
                self.log(f"{name}/{key}", values["acc"])
                self.log(f"{name}/ppl", torch.exp(values["nll"]))
        for key, metric in self.val_aux.items():
            if metric.update_count:
                self.log(f"val/{key}", metric.compute())
                metric.reset()
        if self.is_seq2seq and self.exact.update_count:
            self.log("val/exact_match", self.exact.compute(), prog_bar=True)
            self.exact.reset()
            for metric, upper in zip(self.exact_by_len, self.buckets):
                if metric.update_count:
                    self.log(f"val/exact_match_src{upper}", metric.compute())
                metric.reset()

    # --- optimisation -------------------------------------------------------------------
    def configure_optimizers(self):
        t = self.cfg.train
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay, "name": "decay"},
             {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}],
            lr=t.lr,
            betas=(0.9, 0.98),
            # one kernel per step instead of ~10 ops per tensor (a small model's step on CPU spends ~5%
            # in AdamW otherwise); not under mixed precision, where Lightning refuses to clip the
            # gradients of an optimizer that could unscale them itself
            fused=not t.precision.endswith("-mixed"),
        )
        warmup, total = t.warmup_steps, t.max_steps

        def warmup_cosine(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
        # "name": the key LearningRateMonitor logs the lr under (train/lr/decay, train/lr/no_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    # --- checkpoints carry the RNG so a resumed run replays the same dropout ------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        checkpoint["tokenizer"] = self.tokenizer_bytes
        checkpoint["num_classes"] = self.hparams.num_classes

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
