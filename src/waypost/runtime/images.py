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

Decompression bombs: a PNG of zeros compresses about 1000:1, so a 27 KB file can declare 13000 x 13000
pixels and cost 169 MB (over 300 MB of peak memory) to decode. Pillow only warns below twice its own
`Image.MAX_IMAGE_PIXELS`. `ImageTransform` (what bundles, `waypost predict` and `waypost serve` run)
therefore reads each image's header first and refuses more than `max_pixels` pixels with a DataError
naming the row and the file, before a pixel is decoded: `max_image_pixels()`, i.e.
$WAYPOST_MAX_IMAGE_PIXELS or `DEFAULT_MAX_IMAGE_PIXELS`. Training (`load_image` without
`max_pixels`) keeps reading whatever the user's own files hold.
"""
from __future__ import annotations

import io
import math
import os
import re
from typing import Any, Literal

import numpy as np
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

#: Pixels (width x height) an image may declare at predict time: Pillow's own bomb threshold, which
#: Pillow only warns about; here it is refused. 89.5 MP: every camera photo short of 100+ MP sensors.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_PIXELS_ENV = "WAYPOST_MAX_IMAGE_PIXELS"

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "RESIZE_MODES", "ImageTransform", "image_size", "load_image",
           "max_image_pixels", "resize_box", "sniff_image_bytes", "to_array"]


def max_image_pixels() -> int | None:
    """The predict-time pixel limit: $WAYPOST_MAX_IMAGE_PIXELS (0 = none) or the default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV}={raw!r} is not an integer (pixels; 0 turns the limit off)") from None
    return value if value > 0 else None


def image_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, decoding no pixel; None when Pillow cannot read the
    header (the decoder then reports the file as corrupt)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as img:
                return img.size
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, checked on open: the size is in the text
        dims = re.search(r"\((\d+) pixels\)", str(exc))
        return (int(dims.group(1)), 1) if dims else (2**31, 1)
    except Exception:  # noqa: BLE001 - unreadable headers are the decoder's to report
        return None


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
    if value is None or type(value).__name__ in ("NAType", "NaTType"):  # pandas NA / NaT, without pandas
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


def _decode(source: Any, where: str, label: str, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode, so truncated files fail here rather than later inside a batch; with
    `max_pixels`, the declared size is checked before decoding."""
    try:
        with Image.open(source) as img:
            if max_pixels and img.width * img.height > max_pixels:
                raise DataError(
                    f"{where}{label} is {img.width}x{img.height} = {img.width * img.height:,} pixels, more than the "
                    f"limit of {max_pixels:,} (refused before decoding: a decompression bomb or an image far larger "
                    f"than the model's input; ${MAX_PIXELS_ENV} sets the limit)"
                )
            img.seek(0)
            img.load()
            out = ImageOps.exif_transpose(img)
            if out is img:
                out = img.copy()
            return out
    except DataError:
        raise
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


def load_image(value: object, *, row: object | None = None, column: str | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Decode one cell into a Pillow image (original mode, EXIF rotation applied).

    `row` and `column` only feed error messages: a user with 50,000 images must learn which cell
    is broken. Accepts a path (str / PathLike), raw bytes (never used as a path), a numpy array,
    or a Pillow image (returned as is, after EXIF rotation). `max_pixels` refuses a file or bytes
    declaring more pixels, from the header alone (None: no limit beyond Pillow's own).
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
        return _decode(io.BytesIO(blob), where, label, max_pixels)
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = os.path.expanduser(path.strip())
        if not path:
            raise DataError(f"{where}missing image (empty path)")
        return _decode(path, where, path, max_pixels)
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




class ImageTransform:
    """A bundle's image column -> the graph's `image` input: decode, resize/crop (the recipe above),
    scale to [0, 1] and standardise with the training mean/std. Errors name the row.

    `max_pixels` bounds what one image may declare (see the module docstring; 0: no limit); None
    reads `max_image_pixels()` when the transform is built."""

    def __init__(self, state: dict[str, Any], max_pixels: int | None = None) -> None:
        self.max_pixels = (max_pixels or None) if max_pixels is not None else max_image_pixels()
        image = state["image"]
        self.column = state["column"]
        self.size = (int(image["size"][0]), int(image["size"][1]))
        self.channels = int(image["channels"])
        self.resize = image["resize"]
        self.mean = np.asarray(image["mean"], np.float32)[:, None, None]
        self.std = np.asarray(image["std"], np.float32)[:, None, None]

    def __call__(self, columns: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        cells = columns[self.column]
        batch = np.stack([to_array(load_image(v, row=i, column=self.column, max_pixels=self.max_pixels),
                                   self.size, self.channels, self.resize)
                          for i, v in enumerate(cells)])
        return {"image": ((batch.astype(np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)}
