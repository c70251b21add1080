"""Training order as a pure function of (seed, step): what makes a resumed run bit-identical.

The training data are read as an endless stream of passes; pass ``k`` is a permutation of the
dataset drawn from ``(seed, k)``. An "epoch" is ``steps_per_epoch`` global batches of that
stream (one validation + checkpoint interval), and rank ``r`` of ``W`` takes its slice of each
global batch, so the global batch is the same whatever the device count. Each example also
carries its pass number, so random masking can be seeded from (seed, pass, example) instead
of from a generator whose state a crash would lose.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from .collate import _mix

# Training splits up to this many examples are read into Python once: `datasets`' row access (Arrow to
# Python, ~50 us a row) is a tenth of a small model's step. Larger ones (real corpora) stay in Arrow.
IN_MEMORY_ROWS = 200_000


class StreamBatchSampler(Sampler[list[int]]):
    def __init__(self, batch_size: int, steps_per_epoch: int, rank: int = 0, world_size: int = 1):
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        start = self.epoch * self.steps_per_epoch * global_batch
        for step in range(self.steps_per_epoch):
            first = start + step * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))  # stream positions


class StreamDataset(Dataset):
    """Stream position -> the example at that place of pass ``position // len(base)``."""

    def __init__(self, base, seed: int):
        self.base, self.seed = base, int(seed)
        self._pass, self._perm = -1, None
        self._rows = None  # the base's rows as Python dicts (IN_MEMORY_ROWS), read at the first example

    def _row(self, index: int) -> dict:
        if self._rows is None:
            small = hasattr(self.base, "to_list") and len(self.base) <= IN_MEMORY_ROWS
            self._rows = self.base.to_list() if small else self.base
        return self._rows[index]

    def __len__(self) -> int:
        return len(self.base)

    def permutation(self, k: int) -> torch.Tensor:
        if k != self._pass:
            self._perm = torch.randperm(len(self.base), generator=torch.Generator().manual_seed(_mix(self.seed, k)))
            self._pass = k
        return self._perm

    def __getitem__(self, position: int) -> dict:
        k, offset = divmod(int(position), len(self.base))
        example = dict(self._row(int(self.permutation(k)[offset])))
        example["pass"] = k
        return example
