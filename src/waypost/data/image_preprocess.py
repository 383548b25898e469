"""The preprocessor of one image column: size and channels fitted on the training rows, and the
normalisation the network trained with, saved as JSON like the tabular ones.

Decoding and resizing follow `waypost.runtime.images` (shared with the torch-free runtime). The
output is uint8 (N, C, H, W): augmentation works on uint8 batches and normalisation happens last,
on the batch. The mean/std are the network's (`encoder.normalization`: the pretrained weights' own,
or ImageNet's from scratch); the fit sets `mean_`/`std_` from the trained model, so the state the
runtime reads is what training used.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import DataError, NotFittedError
from waypost.plan import Decision

MIN_SIDE = 16
MAX_SIDE = 224


def choose_size(median_hw: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[tuple[int, int], str]:
    """Train at the images' own median size: upscaling adds no information, and every doubling of
    the side costs four times the compute. Larger images are scaled down to `max_side` on the
    longer side (rounded to a multiple of 8); tiny ones are brought up to MIN_SIDE."""
    h, w = median_hw
    why = f"median image {h}x{w}"
    scale = max_side / max(h, w)
    if scale < 1.0:
        h, w = (round(v * scale / 8) * 8 for v in (h, w))
        why += f", scaled to at most {max_side} px on the longer side"
    return (int(max(MIN_SIDE, h)), int(max(MIN_SIDE, w))), why


class ImagePreprocessor:
    kind = "image"

    def __init__(self, name: str, *, size: tuple[int, int] | None = None, channels: int | None = None,
                 resize: str = "shorter_side_then_center_crop") -> None:
        self.name = name
        self.size = size
        self.channels = channels
        self.resize = resize

    def fit(self, series: pd.Series) -> ImagePreprocessor:
        from waypost.data.images import image_column_stats

        stats = image_column_stats(series)
        if stats.sampled - stats.unreadable <= 0 or min(stats.height[1], stats.width[1]) <= 0:
            raise DataError(f"image column {self.name!r} has no readable images in the training data")
        median = (stats.height[1], stats.width[1])
        size, why_size = choose_size(median) if self.size is None else (tuple(self.size), "set in the config")
        self.size_ = (int(size[0]), int(size[1]))
        self.channels_ = int(self.channels or stats.channels)
        self.decision_ = Decision(
            "column", f"column '{self.name}'", f"image {self.size_[0]}x{self.size_[1]}x{self.channels_}",
            f"{stats.summary()}; {why_size}; {'grayscale' if self.channels_ == 1 else 'RGB'} input",
        )
        return self

    def _check(self) -> None:
        if not hasattr(self, "size_"):
            raise NotFittedError(f"ImagePreprocessor for column {self.name!r} is not fitted")

    def transform(self, series: pd.Series, *, on_bad_image: str = "error"
                  ) -> tuple[tuple[np.ndarray], np.ndarray, list[dict[str, Any]]]:
        """((uint8 images N,C,H,W,); kept positions; skipped bad cells): see `load_images`. A bad
        image is an error naming row and path unless the fit passes `on_bad_image="skip"`."""
        from waypost.data.images import load_images

        self._check()
        images, kept, skipped = load_images(series.rename(self.name), size=self.size_, channels=self.channels_,
                                            resize=self.resize, on_bad_image=on_bad_image)
        return (images,), kept, skipped

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
