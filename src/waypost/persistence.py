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
#: 2: the preprocessor is one "frame" state for every table (columns by kind, see
#: `waypost.kinds.frame`), parts are named by their registered kind. 3: each part's files in its own
#: folder (`parts/<name>/`, the entry's `dir`), so two parts of one family never share a file name.
#: Versions 1 and 2 (every file at the top, no `dir`) still load.
FORMAT_VERSION = 3
PARTS_DIR = "parts"


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
        _default_modes(tmp)
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


def _default_modes(directory: Path) -> None:
    """Every file as a plain `open()` would create it (0666 less the umask): some writers (safetensors)
    create 0600 files, which left a model's weights unreadable to the service that serves it while its
    manifest was world-readable."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


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


MODEL_SPEC = {"config": dict, "target": str, "task": str, "features": dict, "preprocessor": dict,
              "target_encoder": dict, "selected": str, "blend_weights": dict, "parts": dict, "plan": list}


def check_model_manifest(manifest: dict[str, Any], directory: str | Path) -> None:
    """Everything `load_predictor` reads is there and consistent, or a ModelFileError naming the key:
    the parts the blend and the selection name must exist, each with its file on disk."""
    from waypost.manifest import require, require_preprocessor, require_target

    where = str(Path(directory) / MANIFEST)
    require(manifest, MODEL_SPEC, where)
    require_preprocessor(manifest["preprocessor"], manifest["features"], where)
    require_target(manifest["target_encoder"], manifest["task"], where)
    parts = manifest["parts"]
    if not parts:
        raise ModelFileError(f"{where}: 'parts' is empty: the model has no trained part")
    for name, entry in parts.items():
        require(entry, {"kind": str, "file": str}, where, f"parts.{name}.")
        folder = _part_dir(Path(directory), entry, name)
        if not (folder / entry["file"]).is_file():
            raise ModelFileError(f"{where}: part {name!r} names {entry['file']!r}, which is not in {folder}")
    weights = manifest["blend_weights"]
    unknown = [p for p in weights if p not in parts]
    if unknown:
        raise ModelFileError(f"{where}: 'blend_weights' names part(s) {unknown}; the model has {sorted(parts)}")
    if not weights or any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()) \
            or abs(sum(weights.values()) - 1.0) > 1e-6:
        raise ModelFileError(f"{where}: 'blend_weights' must be non-negative numbers summing to 1, got {weights}")
    selected = manifest["selected"]
    if selected not in parts and not (selected == "blend" and len(weights) > 1):
        raise ModelFileError(f"{where}: 'selected' is {selected!r}, but the model's parts are {sorted(parts)}"
                             + (" and it has no blend" if selected == "blend" else ""))


# ---- the fitted model ---------------------------------------------------------------------------
def save_model(model: Any, path: Path) -> Path:
    """Write a FittedModel as a model directory (atomically: see `atomic_directory`)."""
    from waypost import __version__

    with atomic_directory(path) as tmp:
        parts = {}
        for name, part in model.parts.items():
            folder = Path(PARTS_DIR) / name
            (tmp / folder).mkdir(parents=True)
            parts[name] = {**part.save(tmp / folder), "dir": folder.as_posix()}
        write_manifest(tmp, {
            "waypost_version": __version__,
            "target": model.target,
            "task": model.task,
            "features": model.features,
            "config": model.config.to_dict(),
            "preprocessor": model.preprocessor.to_state(),
            "target_encoder": model.target_encoder.to_state(),
            "selected": model.selected,
            "blend_weights": model.weights,
            "parts": parts,
            "plan": [d.to_dict() for d in model.plan],
            "validation_metrics": model.validation_metrics,
            "validation_scores": model.validation_scores,
            "history": model.history,
            "lineage": model.lineage,
        })
    return path


def _part_dir(path: Path, entry: dict[str, Any], name: str) -> Path:
    """The folder a part's files are in: `dir` under the model directory (format 3), else the top."""
    folder = entry.get("dir", ".")
    if not isinstance(folder, str) or Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise ModelFileError(f"{path}/{MANIFEST}: parts.{name}.dir must be a folder inside the model directory, "
                             f"got {folder!r}")
    return path / folder


def load_model(path: Path) -> Any:
    """A model directory (format 1 or 2) -> FittedModel, each part loaded by its kind."""
    from waypost.config import WaypostConfig
    from waypost.data.frame_preprocess import FramePreprocessor
    from waypost.data.target import TargetEncoder
    from waypost.models.parts import attach_read, load_part, read_parts
    from waypost.pipelines.fitted import FittedModel
    from waypost.plan import Decision

    manifest = read_manifest(path)
    check_model_manifest(manifest, path)
    try:
        cfg = WaypostConfig.from_dict(manifest["config"], source=f"{path}/{MANIFEST}")
        parts = {name: load_part(_part_dir(Path(path), entry, name), entry) for name, entry in manifest["parts"].items()}
        for name, part in parts.items():  # a part that reads others at predict time gets them back
            reads = read_parts(part)
            missing = [n for n in reads if n not in parts]
            if missing:
                raise ModelFileError(f"{path}/{MANIFEST}: part {name!r} reads part(s) {missing}, which the model lacks")
            if reads:
                attach_read(part, parts)
        return FittedModel(
            config=cfg, task=manifest["task"], target=manifest["target"], features=dict(manifest["features"]),
            preprocessor=FramePreprocessor.from_state(manifest["preprocessor"]),
            target_encoder=TargetEncoder.from_state(manifest["target_encoder"]), parts=parts,
            weights=dict(manifest["blend_weights"]), selected=manifest["selected"],
            plan=[Decision.from_dict(d) for d in manifest["plan"]],
            validation_metrics=manifest.get("validation_metrics", {}),
            validation_scores=manifest.get("validation_scores", {}),
            history=manifest.get("history", {}), lineage=manifest.get("lineage", {}))
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}/{MANIFEST} is incomplete or corrupt: {exc!r}") from None
