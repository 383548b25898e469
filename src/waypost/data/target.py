"""Encode the target: class labels <-> 0..K-1 codes, or a standardised regression value.

Which of the two is the task's to say (`waypost.tasks.get_task(task).is_classification`); the
numpy halves of the codec (codes -> labels, standardised -> raw values) live with the tasks, so the
torch- and pandas-free runtime decodes exactly as this class does.

The label map lands in the bundle as JSON, so `classes_` holds plain Python scalars (int, bool,
str, float) that survive `json.dumps` and come back with their type: a model trained on labels
0/1 predicts 0/1, not "0"/"1".
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import ConfigError, DataError, NotFittedError
from waypost.tasks import get_task, task_names

__all__ = ["TargetEncoder", "drop_missing_target"]


def drop_missing_target(df: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """Rows without a label cannot train or score a model; drop them and say how many.

    The index is kept (not reset) so the caller can still line rows up with the original table.
    """
    if target not in df.columns:
        raise DataError(f"target column {target!r} not found; available columns: {[str(c) for c in df.columns[:20]]}")
    keep = df[target].notna().to_numpy()
    n_dropped = int(len(df) - keep.sum())
    return (df if n_dropped == 0 else df[keep]), n_dropped


def _python_label(value: Any) -> Any:
    """A JSON-safe Python scalar; integer-valued floats become ints (pandas' NaN-upcast artefact)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return int(v) if math.isfinite(v) and v == int(v) else v
    return str(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (1, value) if isinstance(value, str) else (0, value)


class TargetEncoder:
    """Fit on the training target; `transform` gives model targets, `inverse_transform` labels."""

    def __init__(self, task: str, name: str | None = None) -> None:
        try:
            get_task(task)
        except ConfigError:
            raise DataError(f"task {task!r} is not supported by TargetEncoder; expected one of {list(task_names())}") from None
        self.task = task
        self.name = name

    @property
    def is_classification(self) -> bool:
        """The task's answer (`waypost.tasks`): a label map, or a standardised value."""
        return get_task(self.task).is_classification

    def _check_fitted(self) -> None:
        attr = "classes_" if self.is_classification else "mean_"
        if not hasattr(self, attr):
            raise NotFittedError(f"TargetEncoder for target {self.name!r} is not fitted: call fit first")

    def _no_missing(self, y: pd.Series) -> None:
        n_missing = int(y.isna().sum())
        if n_missing:
            raise DataError(
                f"target column {self.name!r} has {n_missing} missing values; drop those rows first "
                "(waypost.data.target.drop_missing_target)"
            )

    def _to_float(self, y: pd.Series) -> np.ndarray:
        if pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype):
            return y.to_numpy(dtype=np.float64, na_value=np.nan)
        coerced = pd.to_numeric(y, errors="coerce")
        bad = coerced.isna() & y.notna()
        if bad.any():
            raise DataError(
                f"regression target {self.name!r} expected numbers but has values like {y[bad].iloc[0]!r} "
                f"({int(bad.sum())} such rows)"
            )
        return coerced.to_numpy(dtype=np.float64, na_value=np.nan)

    def fit(self, y: pd.Series) -> TargetEncoder:
        if self.name is None:
            self.name = str(y.name)
        self._no_missing(y)
        if len(y) == 0:
            raise DataError(f"target column {self.name!r} has no rows")
        if self.is_classification:
            uniques = pd.unique(y.to_numpy(dtype=object))
            labels = {_python_label(v) for v in uniques}
            if any(isinstance(v, str) for v in labels) and not all(isinstance(v, str) for v in labels):
                labels = {str(v) for v in labels}  # mixed types: compare as strings
            self.classes_ = sorted(labels, key=_sort_key)
            if len(self.classes_) < 2:
                raise DataError(f"target column {self.name!r} has a single class {self.classes_[0]!r}; expected at least 2")
            self._restore()
            self.threshold_: float | None = None  # a binary decision threshold, set by the fit (tasks/decision.py)
        else:
            x = self._to_float(y)
            if not np.all(np.isfinite(x)):
                raise DataError(f"regression target {self.name!r} has infinite values")
            std = float(x.std())
            self.mean_ = float(x.mean())
            self.std_ = std if std > 0 else 1.0
        return self

    def _restore(self) -> None:
        self._stringly = all(isinstance(v, str) for v in self.classes_)
        self._index = {v: i for i, v in enumerate(self.classes_)}

    @property
    def n_classes_(self) -> int:
        self._check_fitted()
        return len(self.classes_) if self.is_classification else 0

    def transform(self, y: pd.Series) -> np.ndarray:
        """int64 codes (classification) or float32 standardised values (regression)."""
        self._check_fitted()
        self._no_missing(y)
        if not self.is_classification:
            return ((self._to_float(y) - self.mean_) / self.std_).astype(np.float32)
        codes, uniques = pd.factorize(pd.Series(y.to_numpy(dtype=object)))
        lookup = []
        for value in uniques:
            label = _python_label(value)
            key = str(label) if self._stringly else label
            if key not in self._index:
                raise DataError(
                    f"target column {self.name!r} has label {label!r} not seen in training; "
                    f"known classes: {self.classes_[:20]}"
                )
            lookup.append(self._index[key])
        return np.asarray(lookup, dtype=np.int64)[codes] if len(codes) else np.zeros(0, np.int64)

    def inverse_transform(self, values: np.ndarray | list[Any]) -> np.ndarray:
        """Labels from codes (original types) or raw-scale regression values (float64)."""
        self._check_fitted()
        arr = np.asarray(values)
        if not self.is_classification:
            from waypost.tasks.regression import destandardise

            return destandardise(arr, {"mean": self.mean_, "std": self.std_})
        from waypost.tasks.classification import label_array

        codes = arr.astype(np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= len(self.classes_)):
            raise DataError(f"class codes for target {self.name!r} must lie in 0..{len(self.classes_) - 1}")
        return label_array(self.classes_)[codes]

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: the label map for classification, mean/std for regression."""
        self._check_fitted()
        state: dict[str, Any] = {"kind": "target", "task": self.task, "name": self.name}
        if self.is_classification:
            state["classes"] = list(self.classes_)
            if self.threshold_ is not None:
                state["threshold"] = float(self.threshold_)
        else:
            state.update(mean=self.mean_, std=self.std_)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TargetEncoder:
        if state.get("kind") != "target":
            raise DataError(f"target state has kind {state.get('kind')!r}; expected 'target'")
        obj = cls(state["task"], name=state.get("name"))
        if obj.is_classification:
            obj.classes_ = list(state["classes"])
            obj._restore()
            obj.threshold_ = float(state["threshold"]) if state.get("threshold") is not None else None
        else:
            obj.mean_, obj.std_ = float(state["mean"]), float(state["std"])
        return obj
