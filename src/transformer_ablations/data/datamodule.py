"""``build_datamodule(cfg, task, tokenizer=None) -> AblationDataModule`` (``tasks.build_datamodule`` looks the task up): the Lightning side of the data.

After :meth:`AblationDataModule.setup` the module has ``tokenizer``, ``num_classes`` (None for
corpus and seq2seq tasks), ``val_names`` (the order of ``val_dataloader()``'s list, e.g.
``["val", "val_len2x", "val_len4x"]``), ``kind`` (mlm, mlm_nsp, causal, seq2seq,
classification) and ``datasets`` (split name -> ``datasets.Dataset``).

Batches follow docs/ARCHITECTURE.md. ``cfg.seed`` drives the train order and the MLM masks;
the data themselves are fixed (:data:`~transformer_ablations.data.prepare.DATA_SEED`). One
training "epoch" is ``train.val_every`` steps of an endless stream of seeded passes
(``data.sampling``), so a run resumed at an epoch boundary continues bit-identically, and the
global batch (``data.batch_size``) is split over DDP ranks, whatever their number.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from transformer_ablations.config import RunConfig
from transformer_ablations.data.prepare import Prepared, prepare
from transformer_ablations.data.sampling import StreamBatchSampler, StreamDataset
from transformer_ablations.data.tokenizer import Tokenizer

# Evaluation keeps no activations for backward, so a batch this many times the training batch fits
# wherever training fits; fewer, larger batches spend less of a small model's eval in per-batch overhead.
EVAL_BATCH_FACTOR = 4


class AblationDataModule(L.LightningDataModule):
    def __init__(self, cfg: RunConfig, task, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.cfg = cfg
        self.task = task  # the TaskSpec of cfg.data.task: its examples and its collator
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
        prepare(self.cfg, self.task, self._given_tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.prepared is not None:
            return
        p = prepare(self.cfg, self.task, self._given_tokenizer)
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

    def collator(self, split: str) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
        """The collate function for a split."""
        self.setup()
        return self.task.collator(self.cfg, self.tokenizer, self.prepared.max_lens[split], self.kind)

    def _loader(self, split: str, dataset=None, **kwargs) -> DataLoader:
        workers = self.cfg.data.num_workers
        # the loader's own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run (which creates one more iterator) would drift
        return DataLoader(self.datasets[split] if dataset is None else dataset, collate_fn=self.collator(split),
                          num_workers=workers, persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(self.cfg.seed), **kwargs)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        rank, world = _rank_and_world()
        if self.cfg.data.batch_size % world:
            raise ValueError(f"data.batch_size={self.cfg.data.batch_size} is not divisible by {world} devices")
        sampler = StreamBatchSampler(self.cfg.data.batch_size // world, self.cfg.train.val_every, rank, world)
        stream = StreamDataset(self.datasets["train"], self.cfg.seed)
        return self._loader("train", dataset=stream, batch_sampler=sampler)

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        batch_size = self.cfg.data.batch_size * EVAL_BATCH_FACTOR
        return [self._loader(name, batch_size=batch_size, shuffle=False) for name in self.val_names]


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def build_datamodule(cfg: RunConfig, task, tokenizer: Tokenizer | None = None) -> AblationDataModule:
    """A data module for ``cfg`` and its ``TaskSpec``; pass ``tokenizer`` to reuse a pretrained checkpoint's tokenizer."""
    return AblationDataModule(cfg, task, tokenizer)
