"""Data lineage: which data, which code and which library versions produced a model.

Why: a model in the registry is only trustworthy if you can say what it was trained on. The
digest of the training frame, the source file's digest and the git commit go into the MLflow run
and into the bundle's `waypost.json`, so "was this model trained on today's data?" is a string
comparison. Everything here is deterministic: the same frame gives the same digest in any process
(no Python `hash()`, which is salted per process), and no timestamps are recorded.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["collect_lineage", "dataframe_digest", "file_digest", "git_commit", "git_dirty", "package_versions"]

_CHUNK = 1 << 20
_GIT_TIMEOUT_S = 5.0
_VERSIONED = ("waypost", "torch", "numpy", "pandas", "scikit-learn", "mlflow")


def _cell_text(value: Any) -> str:
    """A stable text for cells pandas cannot hash (lists, arrays, dicts: sequence/series columns).

    Arrays hash their raw bytes with dtype and shape: `repr` would elide the middle of big arrays.
    """
    import numpy as np

    if isinstance(value, np.ndarray):
        raw = np.ascontiguousarray(value)
        if raw.dtype.hasobject:
            return "list:" + json.dumps(raw.tolist(), default=str)
        return f"ndarray:{raw.dtype.str}:{raw.shape}:{hashlib.sha256(raw.tobytes()).hexdigest()}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes:" + hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        if isinstance(value, (set, frozenset)):
            value = sorted(value, key=repr)
        return f"{type(value).__name__}:" + json.dumps(value, sort_keys=True, default=_json_default)
    return f"{type(value).__name__}:{value!r}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def dataframe_digest(df: pd.DataFrame) -> str:
    """`sha256:<hex>` of a frame's cells, column names and dtypes (the row index is ignored).

    Why `pd.util.hash_pandas_object`: vectorised (a million rows in well under a second) and keyed
    with a fixed key, so stable across processes. Any changed cell, renamed column, reordered
    column or changed dtype changes the digest; the row order matters too (it is the data the
    model saw). Columns of lists/arrays (sequences, embeddings), which pandas cannot hash, are
    hashed cell by cell from a canonical text.
    """
    import pandas as pd

    h = hashlib.sha256()
    header = [[str(name), str(dtype)] for name, dtype in df.dtypes.items()]
    h.update(json.dumps({"columns": header, "n_rows": len(df)}, sort_keys=True).encode())
    for position in range(df.shape[1]):
        column = df.iloc[:, position]
        try:
            hashed = pd.util.hash_pandas_object(column, index=False)
        except TypeError:
            hashed = pd.util.hash_pandas_object(column.map(_cell_text).astype(object), index=False)
        h.update(hashed.to_numpy(dtype="uint64").tobytes())
    return f"sha256:{h.hexdigest()}"


def file_digest(path: str | Path) -> str:
    """`sha256:<hex>` of a file, read in 1 MiB chunks so multi-GB tables need no memory."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def _git(args: list[str], path: str | Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # no git binary, unreadable dir, hung
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(path: str | Path = ".") -> str | None:
    """The commit `HEAD` points at for the repository holding `path`; None outside a repository,
    in a repository without commits, or without git installed. Never raises: lineage is best-effort.
    """
    out = _git(["rev-parse", "--verify", "--quiet", "HEAD"], path)
    commit = out.strip() if out else ""
    return commit or None


def git_dirty(path: str | Path = ".") -> bool | None:
    """True when tracked files differ from `HEAD` (the commit alone does not describe the code);
    None when unknown (no repository, no git). Untracked files are ignored: data and outputs
    often live untracked inside a project.
    """
    out = _git(["status", "--porcelain", "--untracked-files=no"], path)
    return None if out is None else bool(out.strip())


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Versions of Python, the platform and the libraries that shape a model.

    Read from package metadata, never by importing: importing torch to read its version costs
    seconds. A package that is not installed maps to None.
    """
    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in _VERSIONED:
        versions[dist] = _version(dist)
    if versions["waypost"] is None:  # running from a source tree that is not installed
        versions["waypost"] = getattr(sys.modules.get("waypost"), "__version__", None)
    return versions


def collect_lineage(
    df: pd.DataFrame,
    source: str | Path | None = None,
    *,
    repo_dir: str | Path = ".",
) -> dict[str, Any]:
    """Everything needed to say what a model was trained on, as a JSON-ready dict.

    Keys: data_digest, n_rows, n_columns, columns, dtypes, source (absolute path for local
    files/folders, as given for URLs), source_digest and source_bytes (files only; a folder of
    images is not hashed here, that could take minutes), git_commit and git_dirty for the code
    in `repo_dir` (the current directory by default: the training code, not the data's location),
    and versions (python, platform, waypost, torch, numpy, pandas, scikit-learn, mlflow).
    """
    record: dict[str, Any] = {
        "data_digest": dataframe_digest(df),
        "n_rows": int(df.shape[0]),
        "n_columns": int(df.shape[1]),
        "columns": [str(c) for c in df.columns],
        "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
        "source": None,
        "source_digest": None,
        "source_bytes": None,
    }
    if source is not None:
        text = str(source)
        path = Path(text).expanduser()
        local = isinstance(source, Path) or "://" not in text
        if local and path.exists():
            path = path.resolve()
            record["source"] = str(path)
            if path.is_file():
                record["source_digest"] = file_digest(path)
                record["source_bytes"] = path.stat().st_size
        else:
            record["source"] = text
    record["git_commit"] = git_commit(repo_dir)
    record["git_dirty"] = git_dirty(repo_dir) if record["git_commit"] else None
    record["versions"] = package_versions()
    return record
