"""Batches of in-memory uint8 images for the training engine, augmented per batch.

Like `waypost.train.batches.TensorBatches` (whole batches sliced with one index tensor; any
iterable with a length is a Lightning dataloader), but the images stay uint8 (N, C, H, W) -- a
quarter of float32's memory -- and each batch is augmented (training only), then normalised on the
fly. Evaluation batches get resize + `normalize` only, so validation numbers match what the
deployed bundle computes.

Determinism: one `torch.Generator` seeded with `seed` drives shuffling, augmentation and mixing,
so two instances with the same seed yield identical batches, epoch after epoch.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from waypost.errors import DataError
from waypost.train.batches import RowBatches
from waypost.train.augment import AugmentConfig, BatchTransform, build_batch_transform, mix_batch, normalize


def _tensor(value: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    try:
        return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    except TypeError as exc:
        raise DataError(f"ImageBatches: {what} must be a numpy array or a tensor: {exc}") from None


class ImageBatches(RowBatches):
    """Yields (images float32 normalised, *extra, targets) per batch.

    images: uint8 (N, C, H, W). targets: (N,) int64 class indices, or float32 standardised values
    for regression (float64 is narrowed to float32). extra: further per-row
    tensors (e.g. tabular features for a fused model), sliced alongside. augment: a resolved
    `AugmentConfig` (None or disabled: no augmentation). With mixup/cutmix on, training batches
    carry soft targets (N, n_classes); eval batches always carry the original targets.
    `train()`/`eval()` switch mode like an nn.Module: training shuffles and augments.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        targets: np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: AugmentConfig | None = None,
        training: bool = False,
        out_size: tuple[int, int] | None = None,
        n_classes: int | None = None,
        extra: tuple[np.ndarray | torch.Tensor, ...] = (),
        sample_weights: np.ndarray | None = None,
        seed: int = 0,
        drop_last: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        self.images = _tensor(images, "images")
        self.targets = _tensor(targets, "targets")
        if self.targets.dtype == torch.float64:  # regression values: the network computes in float32
            self.targets = self.targets.float()
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"ImageBatches: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        self.n = int(self.images.shape[0])
        if self.n == 0:
            raise DataError("ImageBatches: no images")
        self.extra = tuple(_tensor(t, "extra") for t in extra)
        for name, t in (("targets", self.targets), *((f"extra[{i}]", t) for i, t in enumerate(self.extra))):
            if int(t.shape[0]) != self.n:
                raise DataError(f"ImageBatches: {self.n} images but {t.shape[0]} rows in {name}")
        channels = int(self.images.shape[1])
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"ImageBatches: {channels}-channel images but {len(mean)} means / {len(std)} stds")
        if device is not None:
            self.images = self.images.to(device)
            self.targets = self.targets.to(device)
            self.extra = tuple(t.to(device) for t in self.extra)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.out_size = tuple(out_size) if out_size is not None else tuple(int(v) for v in self.images.shape[-2:])
        self.augment = augment if augment is not None and augment.enabled is True else None
        self.transform: BatchTransform | None = (
            build_batch_transform(self.augment, self.out_size) if self.augment is not None else None
        )
        self.mixing = self.augment is not None and self.augment.mixes
        if self.mixing:
            if n_classes is None:
                raise DataError("ImageBatches: mixup/cutmix need n_classes")
            if self.targets.dtype.is_floating_point:
                raise DataError("ImageBatches: mixup/cutmix need integer class targets, not values")
            if self.extra:  # the extra columns would have to be mixed with the same pairs and weights
                raise DataError("ImageBatches: mixup/cutmix with extra (non-image) inputs is not supported")
        self.n_classes = n_classes
        self.training = training  # train()/eval() switch it, like nn.Module (waypost.train.batches.RowBatches)
        self._rows(self.n, batch_size, sample_weights=sample_weights, seed=seed, drop_last=drop_last)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> float normalised; the random ops only in training mode."""
        if self.training and self.transform is not None:
            return normalize(self.transform(x, self.generator), self.mean, self.std)
        if tuple(x.shape[-2:]) != self.out_size:  # eval at another size: deterministic resize only
            return normalize(torch.nn.functional.interpolate(
                x.float() / 255.0, size=self.out_size, mode="bilinear", align_corners=False, antialias=True,
            ), self.mean, self.std)
        return normalize(x, self.mean, self.std)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._order().to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self._images(self.images[idx])
            y = self.targets[idx]
            if self.training and self.mixing:
                x, y = mix_batch(x, y, self.augment, int(self.n_classes), self.generator)
            yield (x, *(t[idx] for t in self.extra), y)
