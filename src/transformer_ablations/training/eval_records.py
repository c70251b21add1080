"""Per-example validation outcomes, for the report's bootstrap over validation examples.

At the end of every validation the run directory gets ``val_examples.json`` (the last one
overwrites the previous one, so it matches the final metrics of ``summary.json``)::

    {"version": 1, "step": 600,
     "sets": {"val": {"fingerprint": "<sha1 of the inputs and labels>", "n": 512,
                      "metrics": {"acc": {"num": [...], "den": [...]}, "loss": {...}, ...}},
              "val_len4x": {...}}}

Each metric of a set is a ratio of sums over examples, ``sum(num) / sum(den)``, indexed by the
example's position in the (unshuffled) validation loader: for a classifier one example is one
row (``num`` = correct, ``den`` = 1); for token-level tasks ``num`` = correct tokens and ``den`` =
predicted tokens of the row, so the ratio is the logged token accuracy. ``loss`` is the
token (or row) cross-entropy; for ``mlm_nsp`` it omits the NSP term that ``val/loss`` adds.
Seq2seq rows add ``exact_match`` and ``exact_match_src<L>`` (``den`` = 1 inside the length bucket).
The fingerprint (of the tokens with masked positions restored) lets the report pair examples only
between runs that saw the same validation sentences; MLM masks may differ between seeds.

Written on single-process runs only (under DDP each rank sees a shard; the report then falls
back to intervals over seeds).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..atomic import atomic_write_text

EXAMPLES_FILE = "val_examples.json"
VERSION = 1


def _content(batch: dict) -> bytes:
    """The examples' content: tokens with masked positions restored from the labels, so runs that mask
    the same sentences differently (MLM masks depend on the run's seed) still count as the same examples."""
    parts = []
    ids, labels = batch.get("input_ids"), batch["labels"]
    if ids is not None and labels.shape == ids.shape:
        parts.append(torch.where(labels != -100, labels, ids))
    else:
        parts += [t for t in (ids, labels) if t is not None]
    parts += [batch[k] for k in ("src_ids", "tgt_in_ids", "nsp_labels") if k in batch]
    return b"".join(t.detach().cpu().numpy().tobytes() for t in parts)


class ExampleRecorder(L.Callback):
    """Collects per-example outcomes during validation and writes :data:`EXAMPLES_FILE`."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self._reset()

    def _reset(self) -> None:
        self.values: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: {"num": [], "den": []}))
        self.hashes: dict[str, Any] = defaultdict(hashlib.sha1)

    def _active(self, trainer) -> bool:
        return not trainer.sanity_checking and trainer.world_size == 1

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        out = getattr(pl_module, "last_val_output", None)
        if out is None or not self._active(trainer):
            return
        name = pl_module.val_names[dataloader_idx]
        labels = batch["labels"]
        self.hashes[name].update(_content(batch))
        logits, targets = out.logits.detach().float(), out.targets
        correct = (logits.argmax(-1) == targets).float()
        loss = F.cross_entropy(logits, targets, reduction="none") if targets.numel() else correct
        if labels.dim() == 1:  # one target per row (classifiers; token tagging has [B, T] labels)
            rows, ones = [correct, loss], torch.ones_like(correct)
            dens = [ones, ones]
        else:  # targets are the labelled tokens, row-major (model.heads.predicted_positions)
            per_row = (labels != -100).sum(1)
            row_of = torch.repeat_interleave(torch.arange(len(per_row), device=labels.device), per_row)
            sums = [torch.zeros(len(per_row), device=labels.device).index_add_(0, row_of, v) for v in (correct, loss)]
            rows, dens = sums, [per_row.float(), per_row.float()]
        acc_key = "token_acc" if pl_module.is_seq2seq else "acc"
        self._add(name, acc_key, rows[0], dens[0])
        self._add(name, "loss", rows[1], dens[1])
        if "nsp" in out.aux and dataloader_idx == 0:
            nsp_logits, nsp_targets = out.aux["nsp"]
            hit = (nsp_logits.argmax(-1) == nsp_targets).float()
            self._add(name, "nsp_acc", hit, torch.ones_like(hit))
        exact = getattr(pl_module, "last_exact", None)
        if pl_module.is_seq2seq and dataloader_idx == 0 and exact is not None:
            self._add(name, "exact_match", exact, torch.ones_like(exact))
            lower, src_len = 0, batch["src_len"]
            for upper in pl_module.buckets:
                self._add(name, f"exact_match_src{upper}", exact, ((src_len > lower) & (src_len <= upper)).float())
                lower = upper

    def _add(self, name: str, key: str, num: torch.Tensor, den: torch.Tensor) -> None:
        cell = self.values[name][key]
        cell["num"].extend(round(float(x), 6) for x in num.detach().cpu())
        cell["den"].extend(float(x) for x in den.detach().cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active(trainer) or not self.values:
            return
        sets = {}
        for name, metrics in self.values.items():
            n = {len(m["num"]) for m in metrics.values()}
            sets[name] = {"fingerprint": self.hashes[name].hexdigest(), "n": max(n), "metrics": metrics}
        record = {"version": VERSION, "step": int(trainer.global_step), "sets": sets}
        atomic_write_text(self.run_dir / EXAMPLES_FILE, json.dumps(record, separators=(",", ":")))
