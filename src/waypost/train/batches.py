"""In-memory batching for tensors that already fit in RAM.

A torch DataLoader over a TensorDataset indexes one row at a time and collates; slicing whole
batches with one index tensor is several times faster and is what makes the engine's overhead small.
Lightning accepts any iterable with a length as a dataloader.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


class TensorBatches:
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
    ) -> None:
        """`collate` reshapes each sliced batch (e.g. trims token padding to the batch's longest text)."""
        self.tensors = tensors
        self.collate = collate
        self.n = int(tensors[0].shape[0])
        self.batch_size = max(1, min(batch_size, self.n))
        self.shuffle = shuffle
        self.weights = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.float64)
        self.drop_last = drop_last and self.n > self.batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return (self.n + self.batch_size - 1) // self.batch_size

    def _order(self) -> torch.Tensor:
        if self.weights is not None:  # oversampling: draw n rows with replacement by weight
            return torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator)
        if self.shuffle:
            return torch.randperm(self.n, generator=self.generator)
        return torch.arange(self.n)

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
