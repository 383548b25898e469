"""A bundle is checked before it answers anything: manifest structure, the graph's digest, its
inputs and outputs, and one prediction on a row built from the fitted state.

Why each check: a hand-edited `waypost.json` (a feature removed, `task` missing) used to crash with a
raw KeyError deep in the runtime; a swapped `model.onnx` loaded silently (its sha256 was recorded and
never compared); a graph of the wrong shape loaded, `/ready` said ready, and every request then got a
500. Now each of those fails at load with an error naming the file and the key or tensor at fault,
so a server never starts on a bundle it cannot serve.

numpy + hashlib only (the runtime's rule).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from waypost.errors import ModelFileError
from waypost.manifest import require, require_preprocessor, require_target

BUNDLE_SPEC = {
    "task": str, "target": str, "features": dict, "preprocessor": dict, "target_encoder": dict,
    "model": {"file": str, "digest": str, "inputs": list},
}
# the tabular views' graph inputs -> the element type the runtime feeds them (an encoder column's
# inputs come from its kind: `input_types`)
TABULAR_INPUTS = {"numeric": "tensor(float)", "categorical": "tensor(int64)", "gbm": "tensor(float)"}


def input_types(manifest: dict[str, Any]) -> dict[str, str]:
    """Every graph input the bundle's preprocessing feeds -> its element type."""
    from waypost.kinds import get_kind
    from waypost.kinds.frame import encoder_columns

    out = dict(TABULAR_INPUTS)
    for entry in encoder_columns(manifest["preprocessor"]):
        out.update(zip(entry["inputs"], get_kind(entry["kind"]).input_types.values()))
    return out


def check_manifest(manifest: dict[str, Any], where: str) -> None:
    """Every key the runtime reads is present with its type; features and preprocessing agree."""
    require(manifest, BUNDLE_SPEC, where)
    from waypost.kinds import is_registered, kind_names

    for name, ftype in manifest["features"].items():
        if not isinstance(ftype, str) or not is_registered(ftype):
            raise ModelFileError(f"{where}: feature {name!r} has type {ftype!r}; expected one of {list(kind_names())}")
    if not manifest["features"]:
        raise ModelFileError(f"{where}: 'features' is empty: the bundle has no inputs")
    require_preprocessor(manifest["preprocessor"], manifest["features"], where)
    require_target(manifest["target_encoder"], manifest["task"], where)


def read_verified(path: Path, digest: str) -> bytes:
    """The graph's bytes, once their sha256 equals the manifest's `model.digest`."""
    if not path.is_file():
        raise ModelFileError(f"model file missing: {path}")
    blob = path.read_bytes()
    algo, _, want = digest.partition(":")
    if algo != "sha256" or not want:
        raise ModelFileError(f"{path.parent / 'waypost.json'}: 'model.digest' must be 'sha256:<hex>', got {digest!r}")
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise ModelFileError(f"{path}: sha256 {got[:16]}... does not match the manifest's {want[:16]}...: the graph "
                             "was changed or replaced after export; re-export the bundle")
    return blob


def output_width(manifest: dict[str, Any]) -> int:
    """Columns of the graph's output: the task's width (one per class, or 1 for regression)."""
    from waypost.tasks import get_task

    task = get_task(manifest["task"])
    return task.n_outputs(len(manifest["target_encoder"]["classes"]) if task.is_classification else 0)


def check_graph(session: Any, manifest: dict[str, Any], where: str) -> None:
    """The session's inputs are the manifest's, with the types the runtime feeds; its first output
    is (batch, width)."""
    inputs = {i.name: i for i in session.get_inputs()}
    listed = list(manifest["model"]["inputs"])
    if set(inputs) != set(listed):
        raise ModelFileError(f"{where}: the graph's inputs {sorted(inputs)} are not the manifest's "
                             f"model.inputs {sorted(listed)}")
    fed = input_types(manifest)
    for name, node in inputs.items():
        want = fed.get(name)
        if want is None:
            raise ModelFileError(f"{where}: graph input {name!r} is not one the runtime feeds ({sorted(fed)})")
        if node.type != want:
            raise ModelFileError(f"{where}: graph input {name!r} is {node.type}; the runtime feeds {want}")
    outputs = session.get_outputs()
    if not outputs:
        raise ModelFileError(f"{where}: the graph has no outputs")
    shape = outputs[0].shape
    width = output_width(manifest)
    if len(shape) != 2:
        raise ModelFileError(f"{where}: the graph's output {outputs[0].name!r} has shape {shape}; expected (batch, {width})")
    if isinstance(shape[1], int) and shape[1] != width:
        raise ModelFileError(f"{where}: the graph's output has {shape[1]} columns; the manifest's task "
                             f"{manifest['task']!r} needs {width}")


def example_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """One row built from the fitted state, as a JSON client would send it: each number's training
    median, each category's most frequent value, a binary's first value (in its JSON type), each
    date's median; texts empty, images None (the caller supplies one): each column's kind says."""
    from waypost.kinds import get_kind
    from waypost.kinds.frame import encoder_columns, tabular_columns

    state = manifest["preprocessor"]
    row = {col["name"]: get_kind(col["kind"]).example_value(col) for col in tabular_columns(state)}
    for entry in encoder_columns(state):
        row[entry["name"]] = get_kind(entry["kind"]).example_value(entry)
    return row


def self_test(bundle: Any) -> None:
    """One prediction on `example_record` (a blank image of the trained size for an image column):
    the graph must run on what the runtime feeds it and answer (1, width) finite numbers."""
    manifest = bundle.manifest
    from waypost.kinds import get_kind
    from waypost.kinds.frame import encoder_columns

    record = example_record(manifest)
    for entry in encoder_columns(manifest["preprocessor"]):  # e.g. a blank image of the trained size
        record[entry["name"]] = get_kind(entry["kind"]).probe_value(entry)
    where = str(bundle.path / "model.onnx")
    try:
        raw = bundle.raw([record])
    except Exception as exc:  # noqa: BLE001 - any failure here means the bundle cannot serve
        raise ModelFileError(f"{where}: the bundle's self-test prediction failed: {exc}") from None
    width = output_width(manifest)
    if raw.shape != (1, width):
        raise ModelFileError(f"{where}: the self-test prediction has shape {raw.shape}; expected (1, {width})")
    if not np.isfinite(raw).all():
        raise ModelFileError(f"{where}: the self-test prediction is not finite ({raw.tolist()})")
