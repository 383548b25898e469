"""Image columns of a table: load and describe them (the cell-level recipe lives in
`waypost.runtime.images`, shared with the torch-free runtime so training and serving decode every
image identically; see its docstring for the exact steps)."""
from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from waypost.errors import DataError
from waypost.runtime.images import (  # noqa: F401 - the public names re-exported, the rest used here
    ResizeMode,
    RESIZE_MODES,
    BadImagePolicy,
    GRAYSCALE_MODES,
    sniff_image_bytes,
    _describe_value,
    _is_missing,
    load_image,
    _normalise_size,
    resize_box,
    to_array,
)

__all__ = [
    "RESIZE_MODES",
    "ImageColumnStats",
    "image_column_stats",
    "load_image",
    "load_images",
    "resize_box",
    "sniff_image_bytes",
    "to_array",
]

def load_images(
    series: pd.Series,
    *,
    size: int | tuple[int, int],
    channels: int,
    resize: ResizeMode | str = "shorter_side_then_center_crop",
    on_bad_image: BadImagePolicy | str = "error",
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Decode a whole image column into one uint8 (N, C, H, W) array.

    Returns (images, kept, skipped): `kept` holds the integer positions (for `.iloc`) of the
    rows that decoded, so targets and other columns can be aligned; `skipped` lists each bad
    cell as {"row": index label, "position", "path", "reason"} for the run's report. With
    on_bad_image="error" the first bad cell raises a DataError naming its row and path.
    """
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    out_h, out_w = _normalise_size(size)
    if resize not in RESIZE_MODES:
        raise DataError(f"unknown resize mode {resize!r}; expected one of {', '.join(RESIZE_MODES)}")
    column = None if series.name is None else str(series.name)
    out = np.empty((len(series), channels, out_h, out_w), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[dict[str, Any]] = []
    for pos, (label, value) in enumerate(zip(series.index, series.to_numpy(dtype=object))):
        try:
            out[len(kept)] = to_array(load_image(value, row=label, column=column), (out_h, out_w), channels, resize)
        except DataError as exc:
            if on_bad_image == "error":
                raise DataError(f"{exc} (to skip bad images: `data.on_bad_image: skip` when training, "
                                "`--on-bad-image skip` when predicting)") from None
            skipped.append({"row": label, "position": pos, "path": _describe_value(value), "reason": str(exc)})
            continue
        kept.append(pos)
    if series.size and not kept:
        raise DataError(
            f"column {column!r}: none of the {len(series)} images could be read; first error: {skipped[0]['reason']}"
        )
    return out[: len(kept)], np.asarray(kept, dtype=np.int64), skipped


@dataclass(frozen=True)
class ImageColumnStats:
    """What an image column looks like, from a sample: enough to pick an architecture and explain it."""

    count: int
    missing: int
    sampled: int
    unreadable: int
    grayscale: int
    rgb: int
    with_alpha: int
    formats: dict[str, int] = field(default_factory=dict)
    width: tuple[int, int, int] = (0, 0, 0)
    height: tuple[int, int, int] = (0, 0, 0)

    @property
    def channels(self) -> int:
        """1 when every readable sampled image is grayscale, else 3: colour must not be thrown away."""
        return 1 if self.grayscale and not self.rgb else 3

    def summary(self) -> str:
        """One line for the plan, e.g. "1,000 images, 28x28 grayscale"."""
        if self.sampled == self.unreadable:
            return f"{self.count:,} images, none of {self.sampled} sampled readable"
        (wmin, wmed, wmax), (hmin, hmed, hmax) = self.width, self.height
        if (wmin, hmin) == (wmax, hmax):
            dims = f"{wmed}x{hmed}"
        else:
            dims = f"{wmin}-{wmax} x {hmin}-{hmax} px (median {wmed}x{hmed})"
        if self.rgb and self.grayscale:
            colour = f"mixed ({self.grayscale} grayscale, {self.rgb} RGB of {self.sampled - self.unreadable} sampled)"
        else:
            colour = "grayscale" if self.grayscale else "RGB"
        text = f"{self.count:,} images, {dims} {colour}"
        if self.unreadable:
            text += f", {self.unreadable} of {self.sampled} sampled unreadable"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived `channels` and `summary` for config and plan."""
        data = asdict(self)
        data["width"] = dict(zip(("min", "median", "max"), self.width))
        data["height"] = dict(zip(("min", "median", "max"), self.height))
        data["channels"] = self.channels
        data["summary"] = self.summary()
        return data


def _peek(value: object) -> tuple[int, int, str, str]:
    """(width, height, mode, format) reading only the header where Pillow allows."""
    if isinstance(value, np.ndarray):
        if value.ndim < 2:
            raise DataError(f"image array has shape {value.shape}")
        h, w = value.shape[:2]
        depth = 1 if value.ndim == 2 else value.shape[2]
        return int(w), int(h), {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(depth, "?"), "array"
    if isinstance(value, Image.Image):
        return value.width, value.height, value.mode, value.format or "image"
    if isinstance(value, (bytes, bytearray, memoryview)):
        if sniff_image_bytes(value) is None:
            raise DataError("bytes of no known image format")
        source: Any = io.BytesIO(bytes(value))
    elif isinstance(value, (str, os.PathLike)):
        source = os.path.expanduser(os.fsdecode(os.fspath(value)).strip())
    else:
        raise DataError(f"unsupported image value {type(value).__name__}")
    try:
        with Image.open(source) as img:
            return img.width, img.height, img.mode, img.format or "?"
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as exc:
        raise DataError(str(exc)) from None


def image_column_stats(series: pd.Series, sample: int = 64) -> ImageColumnStats:
    """Sizes and colour mix of an evenly spaced sample of the non-missing cells (headers only)."""
    missing = series.map(_is_missing).to_numpy(dtype=bool)
    present = series[~missing]
    if len(present) > sample:
        present = present.iloc[np.linspace(0, len(present) - 1, sample).round().astype(np.int64)]
    widths: list[int] = []
    heights: list[int] = []
    formats: dict[str, int] = {}
    gray = rgb = alpha = bad = 0
    for value in present.to_numpy(dtype=object):
        try:
            w, h, mode, fmt = _peek(value)
        except DataError:
            bad += 1
            continue
        widths.append(w)
        heights.append(h)
        formats[fmt] = formats.get(fmt, 0) + 1
        gray += mode in GRAYSCALE_MODES
        rgb += mode not in GRAYSCALE_MODES
        alpha += mode in ("RGBA", "LA", "La", "RGBa", "PA")

    def spread(values: list[int]) -> tuple[int, int, int]:
        return (min(values), int(np.median(values)), max(values)) if values else (0, 0, 0)

    return ImageColumnStats(
        count=int((~missing).sum()),
        missing=int(missing.sum()),
        sampled=len(present),
        unreadable=bad,
        grayscale=gray,
        rgb=rgb,
        with_alpha=alpha,
        formats=dict(sorted(formats.items())),
        width=spread(widths),
        height=spread(heights),
    )
