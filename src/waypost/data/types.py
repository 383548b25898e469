"""The column types waypost recognises. One name per type; the registry maps each to architectures."""
from __future__ import annotations

from typing import Literal

FeatureType = Literal[
    "numeric", "category", "binary", "datetime", "text", "image", "audio", "video", "sequence"
]
FEATURE_TYPES: tuple[str, ...] = (
    "numeric", "category", "binary", "datetime", "text", "image", "audio", "video", "sequence"
)
TABULAR_TYPES: frozenset[str] = frozenset({"numeric", "category", "binary", "datetime"})

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
