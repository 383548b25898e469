"""Reading a directory's versioned JSON manifest (model directories and bundles alike).

Stdlib only: the deployment runtime uses it. Every failure names the file and what was expected;
a manifest from a newer waypost is refused rather than half-read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from waypost.errors import ModelFileError


def read_versioned_json(directory: str | Path, filename: str, *, fmt: str, max_version: int,
                        kind: str, written_by: str) -> dict[str, Any]:
    """`kind` ("model directory", "bundle") and `written_by` ("waypost export") word the errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFileError(f"{kind} not found: {directory}")
    path = directory / filename
    if not path.is_file():
        raise ModelFileError(f"{path} not found: {directory} is not a {kind} written by {written_by}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is corrupt: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise ModelFileError(f"{path} is not a waypost {kind} manifest (format must be {fmt!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise ModelFileError(
            f"{path} has format_version {version!r}; this waypost reads up to {max_version}: upgrade waypost"
        )
    return manifest
