"""The preprocessor of one image column: size, channels and normalisation, fitted on the training
rows and saved as JSON, like the tabular ones.

Decoding and resizing follow `waypost.runtime.images` (shared with the torch-free runtime). The
output is uint8 (N, C, H, W): augmentation works on uint8 batches and normalisation happens last,
on the batch, with the mean/std of the pretrained weights (or ImageNet's when training from
scratch: the CNNs' defaults assume roughly zero-mean inputs either way).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import DataError, NotFittedError
from waypost.plan import Decision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIDE = 16
MAX_SIDE = 224


def choose_size(median_hw: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[tuple[int, int], str]:
    """Train at the images' own median size: upscaling adds no information, and every doubling of
    the side costs four times the compute. Larger images are scaled down to `max_side` on the
    longer side (rounded to a multiple of 8); tiny ones are brought up to MIN_SIDE."""
    h, w = median_hw
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        out = tuple(int(max(MIN_SIDE, round(v * scale / 8) * 8)) for v in (h, w))
    else:
        out = tuple(int(max(MIN_SIDE, v)) for v in (h, w))
    why = f"median image {h}x{w}"
    if scale < 1.0:
        why += f", scaled to at most {max_side} px on the longer side"
    return (out[0], out[1]), why


class ImagePreprocessor:
    kind = "image"

    def __init__(self, name: str, *, size: tuple[int, int] | None = None, channels: int | None = None,
                 resize: str = "shorter_side_then_center_crop", mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, on_bad_image: str = "error") -> None:
        self.name = name
        self.size = size
        self.channels = channels
        self.resize = resize
        self.mean = mean
        self.std = std
        self.on_bad_image = on_bad_image

    def fit(self, series: pd.Series) -> ImagePreprocessor:
        from waypost.data.images import image_column_stats

        stats = image_column_stats(series)
        if stats.sampled - stats.unreadable <= 0 or min(stats.height[1], stats.width[1]) <= 0:
            raise DataError(f"image column {self.name!r} has no readable images in the training data")
        self.stats_ = stats.to_dict()
        median = (stats.height[1], stats.width[1])
        size, why_size = choose_size(median) if self.size is None else (tuple(self.size), "set in the config")
        self.size_ = (int(size[0]), int(size[1]))
        self.channels_ = int(self.channels or stats.channels)
        mean = self.mean or IMAGENET_MEAN
        std = self.std or IMAGENET_STD
        self.mean_ = [float(m) for m in (mean if self.channels_ == 3 else (sum(mean) / len(mean),))]
        self.std_ = [float(s) for s in (std if self.channels_ == 3 else (sum(std) / len(std),))]
        self.decision_ = Decision(
            "column", f"column '{self.name}'", f"image {self.size_[0]}x{self.size_[1]}x{self.channels_}",
            f"{stats.summary()}; {why_size}; {'grayscale' if self.channels_ == 1 else 'RGB'} input",
        )
        return self

    def _check(self) -> None:
        if not hasattr(self, "size_"):
            raise NotFittedError(f"ImagePreprocessor for column {self.name!r} is not fitted")

    def transform(self, series: pd.Series) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """(uint8 images N,C,H,W; kept positions; skipped bad cells): see `load_images`."""
        from waypost.data.images import load_images

        self._check()
        return load_images(series.rename(self.name), size=self.size_, channels=self.channels_,
                           resize=self.resize, on_bad_image=self.on_bad_image)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 -> float32, scaled to [0, 1] then standardised per channel."""
        self._check()
        mean = np.asarray(self.mean_, np.float32)[:, None, None]
        std = np.asarray(self.std_, np.float32)[:, None, None]
        return ((images.astype(np.float32) / 255.0) - mean) / std

    def to_state(self) -> dict[str, Any]:
        self._check()
        return {"kind": self.kind, "name": self.name, "size": list(self.size_), "channels": self.channels_,
                "resize": self.resize, "mean": self.mean_, "std": self.std_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImagePreprocessor:
        if state.get("kind") != cls.kind:
            raise DataError(f"preprocessor state has kind {state.get('kind')!r}; expected 'image'")
        obj = cls(state["name"], resize=state["resize"])
        obj.size_ = (int(state["size"][0]), int(state["size"][1]))
        obj.channels_ = int(state["channels"])
        obj.mean_, obj.std_ = list(state["mean"]), list(state["std"])
        return obj
