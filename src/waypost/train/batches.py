"""In-memory batching for tensors that already fit in RAM.

A torch DataLoader over a TensorDataset indexes one row at a time and collates; slicing whole
batches with one index tensor is several times faster and is what makes the engine's overhead small.
Lightning accepts any iterable with a length as a dataloader.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


#: Length bucketing sorts within chunks of this many batches (see TensorBatches).
BUCKET_BATCHES = 50


class RowBatches:
    """The row order and count every in-memory batcher shares (tensors, images, several columns).

    `training` (switched by `train()`/`eval()` like an nn.Module) draws a random order: rows
    oversampled by `weights` when given, else a permutation when `shuffle`; with `lengths` a random
    order is sorted by length within chunks of `BUCKET_BATCHES` batches, so each batch pads to little
    more than its own rows while the epoch stays random. Outside training (or without shuffle) the
    rows come sorted by length, or in order.
    """

    n: int
    batch_size: int
    shuffle: bool = True
    training: bool = True
    weights: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    drop_last: bool = False
    generator: torch.Generator

    def _rows(self, n: int, batch_size: int, *, sample_weights: np.ndarray | None, seed: int, drop_last: bool,
              lengths: np.ndarray | torch.Tensor | None = None) -> None:
        self.n = int(n)
        self.batch_size = max(1, min(int(batch_size), self.n))
        self.weights = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.float64)
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.drop_last = drop_last and self.n > self.batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def train(self, mode: bool = True) -> RowBatches:
        self.training = mode
        return self

    def eval(self) -> RowBatches:
        return self.train(False)

    def __len__(self) -> int:
        if self.drop_last and self.training:
            return self.n // self.batch_size
        return (self.n + self.batch_size - 1) // self.batch_size

    def _order(self) -> torch.Tensor:
        if self.training and self.weights is not None:  # oversampling: draw n rows with replacement by weight
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator)
        elif self.training and self.shuffle:
            order = torch.randperm(self.n, generator=self.generator)
        elif self.lengths is not None:
            return torch.argsort(self.lengths, stable=True)
        else:
            return torch.arange(self.n)
        if self.lengths is None:
            return order
        chunks = order.split(self.batch_size * BUCKET_BATCHES)
        return torch.cat([c[torch.argsort(self.lengths[c], stable=True)] for c in chunks])


class TensorBatches(RowBatches):
    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        *,
        shuffle: bool = False,
        sample_weights: np.ndarray | None = None,
        seed: int = 0,
        drop_last: bool = False,
        collate: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]] | None = None,
        lengths: np.ndarray | None = None,
    ) -> None:
        """`collate` reshapes each sliced batch (e.g. trims token padding to the batch's longest text).

        `lengths` (one per row) groups rows of similar length: a shuffled epoch is sorted by length
        within chunks of `BUCKET_BATCHES` batches, so each batch pads to little more than its own rows
        while the epoch stays random; an unshuffled pass is sorted outright. The engine scores each
        batch against its own targets, so evaluation order does not matter.
        """
        self.tensors = tensors
        self.collate = collate
        self.shuffle = shuffle
        self._rows(int(tensors[0].shape[0]), batch_size, sample_weights=sample_weights, seed=seed,
                   drop_last=drop_last, lengths=lengths)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._order()
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            yield self.collate(batch) if self.collate is not None else batch


def balanced_sample_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights so each class is drawn equally often."""
    counts = np.bincount(y)
    return (1.0 / counts[y]).astype(np.float64)


def auto_batch_size(n_rows: int) -> int:
    """About 20+ steps an epoch on small data, capped at 512 where bigger batches stop helping on CPU."""
    return int(np.clip(2 ** round(np.log2(max(n_rows / 20, 1))), 16, 512))
