"""Batches over several encoder columns at once (images, texts) plus the tabular views, for the
engine training `waypost.models.multi_column.MultiColumnModel`.

Each column is a feed that knows its own per-batch step, so a new column kind adds one feed class:
- `ImageFeed`: uint8 (N, C, H, W) kept as uint8 (a quarter of float32's memory), augmented per
  batch in training (`waypost.train.augment`, the same transform `ImageBatches` uses; never
  mixup/cutmix, which would have to mix the other columns of the rows too), then normalised;
  evaluation batches are normalised only, as the deployed bundle does.
- `TextFeed`: (input_ids, attention_mask) cut to the batch's longest text (the idea of
  `waypost.models.text_model.trim_padding`): right padding past it is pure cost.
The tabular tensors (numeric float32, categorical int64) and the targets (int64 class codes or
float32 standardised values) are sliced alongside. Like `TensorBatches`, whole batches are cut with
one index tensor; with text columns a shuffled epoch is sorted by total text length within chunks of
`BUCKET_BATCHES` batches, so batches pad little while the epoch stays random.

Determinism: one `torch.Generator` seeded with `seed` drives shuffling and augmentation (the
engine's checkpoints save and restore it as `generator`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from waypost.errors import DataError
from waypost.train.batches import RowBatches


def as_tensor(value: np.ndarray | torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    return t if dtype is None else t.to(dtype)


class ImageFeed:
    """One image column: uint8 (N, C, H, W) -> float32 normalised, augmented in training."""

    def __init__(self, images: np.ndarray | torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                 augment: Any = None) -> None:
        from waypost.train.augment import build_batch_transform

        self.images = as_tensor(images)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"image column: expected uint8 (N, C, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if len(mean) != self.images.shape[1] or len(std) != self.images.shape[1]:
            raise DataError(f"image column: {self.images.shape[1]} channels but {len(mean)} means / {len(std)} stds")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if augment is not None and augment.enabled is True:
            if augment.mixes:
                raise DataError("mixup/cutmix mix pixels but not the other columns of the rows: turn them off "
                                "for a table with several columns")
            self.transform = build_batch_transform(augment, tuple(int(v) for v in self.images.shape[-2:]))
        else:
            self.transform = None

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.images,)

    def to(self, device: str | torch.device) -> None:
        self.images = self.images.to(device)

    def lengths(self) -> None:
        return None

    def batch(self, idx: torch.Tensor, training: bool, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        from waypost.train.augment import normalize

        x = self.images[idx]
        if training and self.transform is not None:
            x = self.transform(x, generator)
        return (normalize(x, self.mean, self.std),)


class TextFeed:
    """One text column: (input_ids, attention_mask) int64, cut to the batch's longest text."""

    def __init__(self, input_ids: np.ndarray | torch.Tensor, attention_mask: np.ndarray | torch.Tensor) -> None:
        self.ids, self.mask = as_tensor(input_ids, torch.int64), as_tensor(attention_mask, torch.int64)
        if self.ids.shape != self.mask.shape or self.ids.ndim != 2:
            raise DataError(f"text column: input_ids {tuple(self.ids.shape)} and attention_mask "
                            f"{tuple(self.mask.shape)} must be the same (N, L)")

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.ids, self.mask)

    def to(self, device: str | torch.device) -> None:
        self.ids, self.mask = self.ids.to(device), self.mask.to(device)

    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1).cpu()

    def batch(self, idx: torch.Tensor, training: bool, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return trim_to_longest(self.ids[idx], self.mask[idx])


def trim_to_longest(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(1, int(mask.sum(1).max())) if len(mask) else 1
    return ids[:, :length], mask[:, :length]


class ColumnBatches(RowBatches):
    """Yields (*each feed's tensors, in the feeds' order, *extra, targets) per batch.

    feeds: name -> ImageFeed / TextFeed. extra: per-row tensors passed through (the tabular views).
    `train()`/`eval()` switch mode like an nn.Module: training shuffles (or oversamples by
    `sample_weights`) and augments; evaluation keeps the rows in order, or sorted by text length when
    there are text columns (the engine scores each batch against its own targets).
    """

    def __init__(self, feeds: dict[str, Any], targets: np.ndarray | torch.Tensor, batch_size: int, *,
                 extra: tuple[np.ndarray | torch.Tensor, ...] = (), training: bool = False,
                 sample_weights: np.ndarray | None = None, seed: int = 0, drop_last: bool = False,
                 device: str | torch.device | None = None) -> None:
        if not feeds:
            raise DataError("ColumnBatches: no columns")
        self.feeds = dict(feeds)
        self.targets = as_tensor(targets)
        self.extra = tuple(as_tensor(t) for t in extra)
        self.n = int(self.targets.shape[0])
        for name, feed in self.feeds.items():
            for t in feed.tensors:
                if int(t.shape[0]) != self.n:
                    raise DataError(f"ColumnBatches: {self.n} targets but {t.shape[0]} rows in column {name!r}")
        for i, t in enumerate(self.extra):
            if int(t.shape[0]) != self.n:
                raise DataError(f"ColumnBatches: {self.n} targets but {t.shape[0]} rows in extra[{i}]")
        if device is not None:
            for feed in self.feeds.values():
                feed.to(device)
            self.targets, self.extra = self.targets.to(device), tuple(t.to(device) for t in self.extra)
        lengths = [v for v in (feed.lengths() for feed in self.feeds.values()) if v is not None]
        self.training = training  # train()/eval() switch it (waypost.train.batches.RowBatches)
        self._rows(self.n, batch_size, sample_weights=sample_weights, seed=seed, drop_last=drop_last,
                   lengths=torch.stack(lengths).sum(0) if lengths else None)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._order()
        device = self.targets.device
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size].to(device)
            out: list[torch.Tensor] = []
            for feed in self.feeds.values():
                out.extend(feed.batch(idx, self.training, self.generator))
            yield (*out, *(t[idx] for t in self.extra), self.targets[idx])


def column_schedules(plans: dict[str, Any], encoders: dict[str, Any]) -> list[Any]:
    """One `TransferSchedule` per encoder column, each on its own plan. Lightning keeps callback
    state by `state_key`, which must be unique: each schedule's key names its column, so resumable
    checkpoints restore every column's phases."""
    from waypost.train.transfer import TransferSchedule

    class ColumnTransferSchedule(TransferSchedule):
        def __init__(self, plan: Any, encoder: Any, column: str) -> None:
            super().__init__(plan, encoder)
            self.column = column

        @property
        def state_key(self) -> str:
            return self._generate_state_key(column=self.column)

    return [ColumnTransferSchedule(plans[c], encoders[c], c) for c in plans]
