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

from waypost.data.infer import IMAGE_EXTENSIONS
from waypost.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_folder", "list_images", "table_from_folder"]


def _normalise_extensions(extensions: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not exts:
        raise DataError("extensions must name at least one image file extension")
    return exts


def _walk_images(folder: Path, exts: tuple[str, ...]) -> Iterator[Path]:
    """Image files under `folder`, hidden entries skipped, in sorted order. Symlinked folders are followed."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(exts):
                yield Path(dirpath, name)


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
    files = sorted(_walk_images(path, exts), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise DataError(f"no image files ({', '.join(exts)}) under {path}")
    return pd.DataFrame({"image": [str(f) for f in files]})


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
        files = sorted(_walk_images(path / label, exts), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            empty.append(str(path / label))
            continue
        images += [str(f) for f in files]
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
    return any(next(_walk_images(Path(sub), exts), None) is not None for sub in subfolders)
