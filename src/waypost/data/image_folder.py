"""A folder of class subfolders is a data set: turn it into the (image path, label) table everything else reads.

Why a table and not a torchvision ImageFolder: the rest of waypost (type inference, splits,
lineage, batch prediction) works on tables, so `waypost init photos/` only has to build one and
from then on an image folder is just a CSV whose `image` column holds paths.

Layout: root/<label>/**/<file>.<image extension>. Hidden files and folders (".DS_Store",
".ipynb_checkpoints") are ignored, as are non-image files. Rows are sorted by (label, path relative
to root) with plain code-point string order, so the table, its digest and every split made from it
are the same on every machine and file system.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from waypost.kinds.image import IMAGE_EXTENSIONS
from waypost.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_folder", "iter_images", "list_images", "table_from_folder"]


def _normalise_extensions(extensions: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not exts:
        raise DataError("extensions must name at least one image file extension")
    return exts


def iter_images(folder: str | os.PathLike[str], exts: tuple[str, ...]) -> Iterator[str]:
    """Image files under `folder` (any depth), streamed in code-point order of their path relative
    to `folder`, one directory in memory at a time.

    Sorting each directory's entries with a "/" after folder names gives the same order as sorting
    every relative path at once. Hidden entries are skipped; symlinked folders are followed, but not
    back into one of their own ancestors (a loop would never end); a broken link to an image is kept,
    so predicting on it names its path.
    """

    def walk(path: str, ancestors: frozenset[str]) -> Iterator[str]:
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            raise DataError(f"cannot list image folder {path}: {exc.strerror or exc}") from None
        keyed = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                keyed.append((e.name + "/", e.path, True))
            elif e.name.lower().endswith(exts):
                keyed.append((e.name, e.path, False))
        for _, entry, is_dir in sorted(keyed):
            if not is_dir:
                yield entry
            elif (real := os.path.realpath(entry)) not in ancestors:
                yield from walk(entry, ancestors | {real})

    top = os.fspath(folder)
    yield from walk(top, frozenset({os.path.realpath(top)}))


def _root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"image folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"expected a folder of class subfolders but {path} is a file")
    return path.resolve()


def list_images(root: str | os.PathLike[str], *, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> pd.DataFrame:
    """Every image under `root` (any depth) as a one-column `image` table: for predicting on unlabelled folders."""
    path = _root(root)
    exts = _normalise_extensions(extensions)
    files = list(iter_images(path, exts))
    if not files:
        raise DataError(f"no image files ({', '.join(exts)}) under {path}")
    return pd.DataFrame({"image": files})


def table_from_folder(
    root: str | os.PathLike[str], *, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> pd.DataFrame:
    """Table with `image` (absolute path) and `label` (class subfolder name) for root/<label>/**/<image>.

    Errors (DataError naming the folder): a missing root; a root without class subfolders; a class
    folder without images (an empty class would train a classifier that can never predict it);
    images lying directly in root (they would have no label).
    """
    path = _root(root)
    exts = _normalise_extensions(extensions)
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    loose = [e.name for e in os.scandir(path) if e.is_file() and e.name.lower().endswith(exts)]
    if not classes:
        hint = f" ({len(loose)} images lie directly in it: move them into one subfolder per class)" if loose else ""
        raise DataError(f"image folder {path} has no class subfolders{hint}; expected root/<label>/<image>")
    if loose:
        raise DataError(
            f"image folder {path} holds {len(loose)} images directly (e.g. {sorted(loose)[0]!r}) beside its "
            "class subfolders; they would have no label: move them into a class subfolder"
        )
    images: list[str] = []
    labels: list[str] = []
    empty: list[str] = []
    for label in classes:
        files = list(iter_images(path / label, exts))
        if not files:
            empty.append(str(path / label))
            continue
        images += files
        labels += [label] * len(files)
    if empty:
        raise DataError(
            f"class folder{'s' if len(empty) > 1 else ''} without images ({', '.join(exts)}): "
            f"{', '.join(empty)}; remove {'them' if len(empty) > 1 else 'it'} or add images"
        )
    return pd.DataFrame({"image": pd.Series(images, dtype=object), "label": pd.Series(labels, dtype=object)})


def is_image_folder(path: str | os.PathLike[str], *, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    """True when `path` is a folder with at least one class subfolder holding an image.

    Cheap (stops at the first image found) so `waypost init PATH` can tell a folder data set from
    a table file before doing any real work.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        return False
    exts = _normalise_extensions(extensions)
    try:
        subfolders = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return False
    return any(next(iter_images(sub, exts), None) is not None for sub in subfolders)
