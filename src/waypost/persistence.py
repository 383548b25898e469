"""Model directories: a JSON manifest with a format version, safetensors, and GBMs in native formats.

Writes go to a hidden temporary sibling that is renamed into place only when complete, so a crash or
a bad input never leaves a half-written model where a loader (or a server) would pick it up.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from waypost.errors import ModelFileError

MANIFEST = "waypost_model.json"
FORMAT = "waypost.model"
FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_directory(path: str | Path, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces `path`, on error it is removed.

    An existing `path` is replaced only if it holds `marker` (it is one of ours) or is empty.
    """
    path = Path(path)
    if path.exists() and not (path / marker).is_file() and any(path.iterdir()):
        raise ModelFileError(f"{path} exists and is not a waypost directory (no {marker}); refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    (directory / MANIFEST).write_text(json.dumps(body, indent=2, default=_json_default))


def read_manifest(directory: str | Path) -> dict[str, Any]:
    from waypost.manifest import read_versioned_json

    return read_versioned_json(directory, MANIFEST, fmt=FORMAT, max_version=FORMAT_VERSION,
                               kind="model directory", written_by="Predictor.save / waypost train")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
