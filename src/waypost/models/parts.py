"""The part protocol: every trained component of a model (a GBM, the tabular MLP, a column network
with its head, the multi-column network) implements the same methods, so the fit pipeline,
persistence and export handle any number of parts of any family without knowing which.

Parts are built through the architecture registry's factories (`waypost.models.registry`) and
loaded back by their `kind`, the string their `save` entry carries, through `load_part`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from waypost.errors import ModelFileError


@runtime_checkable
class Part(Protocol):
    kind: str

    def fit(self, x_train: Any, y_train: np.ndarray, x_valid: Any, y_valid: np.ndarray, *, tracker: Any = None,
            verbose: bool = False, time_limit: float | None = None) -> Part:
        """Train on preprocessed inputs and encoded targets; returns self."""

    def predict_raw(self, inputs: Any) -> np.ndarray:
        """Probabilities (n, k), or standardised regression values (n,)."""

    def to_onnx(self, sample: Any) -> Any:
        """The part as an ONNX ModelProto traced on preprocessed `sample` inputs (bundles stay torch-free)."""

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the part's files (safetensors, JSON, native GBM formats; never pickle) into
        `directory`; returns its JSON manifest entry, with `kind` and `file`."""


#: part kind -> "module:Class" whose `load(directory, entry)` reads it back
PART_CLASSES = {
    "gbm": "waypost.models.gbm:GBMModel",
    "mlp": "waypost.models.tabular_mlp:MLPModel",
    "image": "waypost.models.image_model:ImageModel",
    "text": "waypost.models.text_model:TextModel",
    "multi_column": "waypost.models.multi_column:MultiColumnModel",
    "linear": "waypost.models.linear:LinearModel",
    "forest": "waypost.models.forest:ForestModel",
    "catboost": "waypost.models.catboost_part:CatBoostModel",
    "entity_gbm": "waypost.models.entity_gbm:EntityGBM",
    "column_gbm": "waypost.models.column_gbm:ColumnGBM",
    "stack": "waypost.ensemble.stack:StackedModel",
}


def read_parts(part: Any) -> list[str]:
    """The names of the parts `part` runs at predict time (its `reads`: one name, or a list)."""
    source = getattr(part, "reads", None)
    return [] if not source else [source] if isinstance(source, str) else list(source)


def attach_read(part: Any, parts: dict[str, Any]) -> None:
    """Give `part` the parts it reads: one part for a single name, a dict for a list."""
    source = part.reads
    part.attach(parts[source] if isinstance(source, str) else {n: parts[n] for n in source})


def part_class(kind: str) -> Any:
    if kind not in PART_CLASSES:
        raise ModelFileError(f"unknown model part kind {kind!r}; known: {sorted(PART_CLASSES)}")
    module, name = PART_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def part_file(directory: Path, entry: dict[str, Any]) -> Path:
    """The file a part's entry names, inside `directory`; a ModelFileError when it is not there."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise ModelFileError(f"model file missing: {path}")
    return path


def load_part(directory: Path, entry: dict[str, Any]) -> Any:
    return part_class(entry["kind"]).load(directory, entry)
