"""Decode image cells (file paths, raw bytes, arrays) into fixed-size uint8 arrays, with errors that name the cell.

Why this module is Pillow + numpy only: the exported bundle's torch-free runtime must turn a client's
image into exactly the array the model was trained on. Training and serving therefore share one
recipe, written down step by step in `to_array`, built from Pillow calls whose results do not
depend on torch or torchvision (their resize kernels differ from Pillow's and would silently shift
every pixel between training and serving).

The recipe for one cell (`load_image` then `to_array`):

1. Decode. A path (str / PathLike) is opened from disk; bytes are decoded in memory and are never
   treated as a path (a server must not read files a client names); an array is taken as pixels
   (H x W, H x W x 1/3/4; uint8, integers in 0..255, bool, or floats in [0, 1] scaled by 255 and
   rounded half to even with `np.rint`). Only the first frame of a GIF / multi-page TIFF is used.
2. `PIL.ImageOps.exif_transpose`: phone photos store their rotation in EXIF; ignoring it trains
   on sideways images.
3. Mode: transparent images (alpha channel, or a palette with a transparent index) are composited
   over white (`Image.alpha_composite` on an opaque white RGBA), because dropping alpha turns
   transparent pixels into whatever colour they carry, often black. 16-bit grayscale ("I;16")
   is shifted right by 8 bits; 32-bit "I" and float "F" are clipped to 0..255. Then
   `convert("L")` for 1 channel (ITU-R 601-2 luma: L = R*299/1000 + G*587/1000 + B*114/1000)
   or `convert("RGB")` for 3.
4. Resize with `Image.Resampling.BILINEAR` (Pillow's antialiasing bilinear: when shrinking, the
   filter support widens with the scale factor, so small outputs are not aliased):
   - "shorter_side_then_center_crop" (default): scale = max(H / h, W / w) so the image covers
     the target; new size (max(W, int(w*scale + 0.5)), max(H, int(h*scale + 0.5))); resize to it;
     then crop the box (left, top, left + W, top + H) with left = (new_w - W) // 2 and
     top = (new_h - H) // 2. Aspect ratio is kept; the borders of the longer side are lost.
   - "stretch": resize straight to (W, H); nothing is cut off, shapes are distorted.
5. `np.asarray(img, dtype=np.uint8)`, channels first: (1, H, W) or (3, H, W). Normalisation
   (mean/std) is the model's business, not the data layer's.

`size` is always (height, width), the order of the output array, never Pillow's (width, height).
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from waypost.errors import DataError

ResizeMode = Literal["shorter_side_then_center_crop", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("shorter_side_then_center_crop", "stretch")
BadImagePolicy = Literal["error", "skip"]
RESAMPLE = Image.Resampling.BILINEAR
#: Pillow modes that hold one intensity channel (alpha aside), for the grayscale / RGB mix.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)

__all__ = [
    "RESIZE_MODES",
    "ImageColumnStats",
    "describe_images",
    "image_column_stats",
    "load_image",
    "load_images",
    "resize_box",
    "sniff_image_bytes",
    "to_array",
]


def sniff_image_bytes(blob: bytes | bytearray | memoryview) -> str | None:
    """The image format named by the magic bytes ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"), else None.

    Cheap and decoder-free, so type inference and the server can reject non-images before Pillow
    sees them.
    """
    head = bytes(blob[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, offset, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    return None


def _where(row: object, column: str | None) -> str:
    parts = []
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts) + ": " if parts else ""


def _describe_value(value: object) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    return f"<{type(value).__name__}>"


def _is_missing(value: object) -> bool:
    """None / NaN / NA only: never np.ndim(value), which would decode a Pillow image to test it."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _array_to_image(arr: np.ndarray, where: str) -> Image.Image:
    shape = arr.shape
    if arr.ndim == 3 and shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise DataError(
            f"{where}image array has shape {shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) "
            "(channels last)"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise DataError(
                f"{where}float image array must hold finite values in [0, 1] "
                f"(found {np.nanmin(arr):.4g}..{np.nanmax(arr):.4g}); scale it or pass uint8 0..255"
            )
        arr = np.rint(arr * 255.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != np.uint8:
            if arr.min() < 0 or arr.max() > 255:
                raise DataError(
                    f"{where}integer image array must hold values in 0..255 "
                    f"(found {arr.min()}..{arr.max()}, dtype {arr.dtype})"
                )
            arr = arr.astype(np.uint8)
    else:
        raise DataError(f"{where}image array has dtype {arr.dtype}; expected uint8, integers or floats in [0, 1]")
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def _decode(source: Any, where: str, label: str) -> Image.Image:
    """Open and fully decode, so truncated files fail here rather than later inside a batch."""
    try:
        with Image.open(source) as img:
            img.seek(0)
            img.load()
            out = ImageOps.exif_transpose(img)
            if out is img:
                out = img.copy()
            return out
    except FileNotFoundError:
        raise DataError(f"{where}image file not found: {label}") from None
    except IsADirectoryError:
        raise DataError(f"{where}expected an image file but {label} is a directory") from None
    except UnidentifiedImageError:
        raise DataError(f"{where}{label} is not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{where}{label} is too large to decode safely: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}{label} is corrupt or truncated: {exc}") from None


def load_image(value: object, *, row: object | None = None, column: str | None = None) -> Image.Image:
    """Decode one cell into a Pillow image (original mode, EXIF rotation applied).

    `row` and `column` only feed error messages: a user with 50,000 images must learn which cell
    is broken. Accepts a path (str / PathLike), raw bytes (never used as a path), a numpy array,
    or a Pillow image (returned as is, after EXIF rotation).
    """
    where = _where(row, column)
    if _is_missing(value):
        raise DataError(f"{where}missing image (empty cell)")
    if isinstance(value, Image.Image):
        return ImageOps.exif_transpose(value) or value
    if isinstance(value, (bytes, bytearray, memoryview)):
        blob = bytes(value)
        label = f"<{len(blob)} bytes>"
        if sniff_image_bytes(blob) is None:
            raise DataError(
                f"{where}{label} do not start with PNG, JPEG, GIF, BMP, WEBP or TIFF magic bytes; "
                "bytes are decoded as an image, never read as a file path"
            )
        return _decode(io.BytesIO(blob), where, label)
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = os.path.expanduser(path.strip())
        if not path:
            raise DataError(f"{where}missing image (empty path)")
        return _decode(path, where, path)
    if isinstance(value, np.ndarray):
        return _array_to_image(value, where)
    raise DataError(
        f"{where}cannot read an image from a {type(value).__name__}; "
        "expected a file path, bytes or a numpy array"
    )


def _normalise_size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise DataError(f"image size must be positive (height, width), got {size!r}")
    return int(h), int(w)


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Step 3 of the module recipe: flatten alpha over white, tame high-bit-depth modes, convert."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8), mode="L")
    elif img.mode in ("I", "F"):
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), mode="L")
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def resize_box(width: int, height: int, size: tuple[int, int], resize: str) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Pillow resize size (w, h) and crop box for an image of `width` x `height`: step 4 as pure arithmetic.

    Kept separate and integer-exact so the runtime (and tests) can reproduce it without Pillow.
    """
    out_h, out_w = size
    if resize == "stretch":
        return (out_w, out_h), (0, 0, out_w, out_h)
    if resize != "shorter_side_then_center_crop":
        raise DataError(f"unknown resize mode {resize!r}; expected one of {', '.join(RESIZE_MODES)}")
    scale = max(out_h / height, out_w / width)
    new_w = max(out_w, int(math.floor(width * scale + 0.5)))
    new_h = max(out_h, int(math.floor(height * scale + 0.5)))
    left = (new_w - out_w) // 2
    top = (new_h - out_h) // 2
    return (new_w, new_h), (left, top, left + out_w, top + out_h)


def to_array(
    img: Image.Image,
    size: int | tuple[int, int],
    channels: int,
    resize: ResizeMode | str = "shorter_side_then_center_crop",
) -> np.ndarray:
    """One image as a uint8 (channels, height, width) array, by steps 3-5 of the module recipe.

    `size` is (height, width) or one int for a square.
    """
    out_size = _normalise_size(size)
    img = _to_mode(img, channels)
    new_size, box = resize_box(img.width, img.height, out_size, resize)
    if img.size != new_size:
        img = img.resize(new_size, resample=RESAMPLE)
    if box != (0, 0, *img.size):
        img = img.crop(box)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


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
                raise DataError(f"{exc} (set on_bad_image: skip to skip bad images)") from None
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


def describe_images(series: pd.Series, sample: int = 64) -> dict[str, Any]:
    """`image_column_stats(...).to_dict()`: count, missing, colour mix, min/median/max width and height."""
    return image_column_stats(series, sample).to_dict()
