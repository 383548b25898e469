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
    return migrate(manifest)


# ---- structure --------------------------------------------------------------------------------
# A spec maps each required key to its type (or a tuple of types) or to a nested spec (a dict).
Spec = dict[str, Any]

# What each tabular column's fitted state must hold, by kind (the numpy runtime reads exactly these).
COLUMN_STATE: dict[str, Spec] = {
    "numeric": {"name": str, "median": (int, float), "mean": (int, float), "std": (int, float), "add_indicator": bool},
    "category": {"name": str, "categories": list},
    "binary": {"name": str, "values": list, "add_indicator": bool},
    "datetime": {"name": str, "median": str, "year_mean": (int, float), "year_std": (int, float),
                 "has_time": bool, "add_indicator": bool},
}
PART_STATE: dict[str, Spec] = {
    "image": {"size": list, "channels": int, "resize": str, "mean": list, "std": list},
    "text": {"tokenizer": str, "max_length": int},
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
               dict: "an object"}


def require(obj: Any, spec: Spec, where: str, prefix: str = "") -> None:
    """ModelFileError naming the first key of `spec` that `obj` lacks or holds with the wrong type:
    `waypost.json: missing key 'model.digest'` rather than a KeyError deep inside a loader."""
    for key, want in spec.items():
        name = f"{prefix}{key}"
        if not isinstance(obj, dict) or key not in obj:
            raise ModelFileError(f"{where}: missing key '{name}'")
        value = obj[key]
        if isinstance(want, dict):
            if not isinstance(value, dict):
                raise ModelFileError(f"{where}: '{name}' must be an object, got {type(value).__name__}")
            require(value, want, where, f"{name}.")
            continue
        types = want if isinstance(want, tuple) else (want,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise ModelFileError(f"{where}: '{name}' must be {expected}, got {type(value).__name__} {value!r:.60}")


def require_preprocessor(state: Any, features: dict[str, str], where: str, key: str = "preprocessor") -> None:
    """The fitted preprocessing state (the format-2 "frame" layout, `waypost.kinds.frame`; readers
    migrate format 1 first) names every feature once, and each column's state is complete."""
    require({key: state}, {key: {"kind": str}}, where)
    if state["kind"] != "frame":
        raise ModelFileError(f"{where}: '{key}.kind' is {state['kind']!r}; expected 'frame'")
    require(state, {"columns": list}, where, f"{key}.")
    named: list[str] = []
    for i, entry in enumerate(state["columns"]):
        at = f"{key}.columns.{i}."
        require(entry, {"kind": str, "name": str, "inputs": list}, where, at)
        spec = PART_STATE.get(entry["kind"])
        if spec is None:
            raise ModelFileError(f"{where}: '{at}kind' is {entry['kind']!r}; expected one of {sorted(PART_STATE)}")
        require(entry, spec, where, at)
        named.append(entry["name"])
    if state.get("tabular") is not None:
        named += _tabular_columns(state["tabular"], where, f"{key}.tabular")
    missing = [f for f in features if f not in named]
    extra = [c for c in named if c not in features]
    if missing:
        raise ModelFileError(f"{where}: feature(s) {missing} have no fitted preprocessing in '{key}'")
    if extra:
        raise ModelFileError(f"{where}: '{key}' preprocesses column(s) {extra} that 'features' does not list")


def migrate(manifest: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest read as format 2, in memory (the file is not touched): its preprocessor in
    the one "frame" layout. Later format changes add their step here."""
    from waypost.kinds.frame import frame_state

    if isinstance(manifest.get("preprocessor"), dict):
        manifest["preprocessor"] = frame_state(manifest["preprocessor"])
    return manifest


def _tabular_columns(state: dict[str, Any], where: str, key: str) -> list[str]:
    require(state, {"columns": list}, where, f"{key}.")
    names = []
    for i, col in enumerate(state["columns"]):
        at = f"{key}.columns.{i}."
        require(col, {"kind": str}, where, at)
        spec = COLUMN_STATE.get(col["kind"])
        if spec is None:
            raise ModelFileError(f"{where}: '{at}kind' is {col['kind']!r}; expected one of {sorted(COLUMN_STATE)}")
        require(col, spec, where, at)
        names.append(col["name"])
    return names


def require_target(state: Any, task: str, where: str, key: str = "target_encoder") -> None:
    """The label map for classification (at least two classes), mean/std for regression: the
    task's codec (`waypost.tasks`, imported here only: it needs numpy, which the runtime has)."""
    from waypost.errors import ConfigError
    from waypost.tasks import get_task, task_names

    try:
        classification = get_task(task).is_classification
    except ConfigError:
        raise ModelFileError(f"{where}: 'task' is {task!r}; expected one of {list(task_names())}") from None
    spec = {"classes": list} if classification else {"mean": (int, float), "std": (int, float)}
    require({key: state}, {key: spec}, where)
    if classification and len(state["classes"]) < 2:
        raise ModelFileError(f"{where}: '{key}.classes' must hold at least two classes, got {state['classes']!r}")
    threshold = state.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0
                                      and len(state["classes"]) == 2):
        raise ModelFileError(f"{where}: '{key}.threshold' must be a probability in (0, 1) of a two-class target, "
                             f"got {threshold!r}")
