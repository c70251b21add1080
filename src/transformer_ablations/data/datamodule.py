"""``build_datamodule(cfg, tokenizer=None) -> AblationDataModule``: the Lightning side of the data.

After :meth:`AblationDataModule.setup` the module has ``tokenizer``, ``num_classes`` (None for
corpus and seq2seq tasks), ``val_names`` (the order of ``val_dataloader()``'s list, e.g.
``["val", "val_len2x", "val_len4x"]``), ``kind`` (mlm, mlm_nsp, causal, seq2seq,
classification) and ``datasets`` (split name -> ``datasets.Dataset``).

Batches follow docs/ARCHITECTURE.md. ``cfg.seed`` drives the train shuffle and the MLM masks
(offset by the DDP rank and the dataloader worker); the data themselves are fixed
(:data:`~transformer_ablations.data.prepare.DATA_SEED`). Validation MLM masks are a function of
(seed, example), identical at every validation.
"""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from transformer_ablations.config import RunConfig
from transformer_ablations.data.collate import (
    ClassificationCollator,
    CausalCollator,
    MLMCollator,
    Seq2SeqCollator,
    current_rank,
)
from transformer_ablations.data.prepare import Prepared, prepare
from transformer_ablations.data.tokenizer import Tokenizer


class AblationDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.cfg = cfg
        self._given_tokenizer = tokenizer
        self.tokenizer: Tokenizer | None = tokenizer
        self.num_classes: int | None = None
        self.val_names: list[str] = []
        self.kind: str | None = None
        self.datasets: dict = {}
        self.prepared: Prepared | None = None

    # --- Lightning hooks -----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build the on-disk cache (Lightning calls this on one process per node)."""
        prepare(self.cfg, self._given_tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.prepared is not None:
            return
        p = prepare(self.cfg, self._given_tokenizer)
        self.prepared = p
        self.tokenizer = p.tokenizer
        self.num_classes = p.num_classes
        self.val_names = list(p.val_names)
        self.kind = p.kind
        self.datasets = dict(p.splits)

    @property
    def vocab_size(self) -> int:
        self.setup()
        return self.tokenizer.vocab_size

    def collator(self, split: str, rank: int | None = None) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """The collate function for a split (train: random masks; val splits: fixed masks)."""
        self.setup()
        d, tok = self.cfg.data, self.tokenizer
        max_len = self.prepared.max_lens[split]
        if self.kind in ("mlm", "mlm_nsp"):
            return MLMCollator(tok, max_len, d.mlm_probability, nsp=self.kind == "mlm_nsp", seed=self.cfg.seed,
                               rank=rank, deterministic=split != "train")
        if self.kind == "causal":
            return CausalCollator(tok, max_len)
        if self.kind == "seq2seq":
            mode = "decoder" if self.cfg.model.arch == "decoder" else "encoder_decoder"
            return Seq2SeqCollator(tok, max_len, mode)
        return ClassificationCollator(tok, max_len, d.pair_format)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        d = self.cfg.data
        gen = None
        if shuffle:
            gen = torch.Generator().manual_seed(int(self.cfg.seed) * 1000 + current_rank())
        return DataLoader(
            self.datasets[split],
            batch_size=d.batch_size,
            shuffle=shuffle,
            generator=gen,
            collate_fn=self.collator(split),
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [self._loader(name, shuffle=False) for name in self.val_names]


def build_datamodule(cfg: RunConfig, tokenizer: Tokenizer | None = None) -> AblationDataModule:
    """A data module for ``cfg``; pass ``tokenizer`` to reuse a pretrained checkpoint's tokenizer."""
    return AblationDataModule(cfg, tokenizer)
