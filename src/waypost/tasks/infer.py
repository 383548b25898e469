"""Which task a target asks for, with the reason: the tasks' side of `waypost init`'s guesses.

Integer-valued targets with few classes, making up a small share of the rows, are classes (binary
for two, multiclass above); other numbers are a quantity (regression); labels of any other dtype
are classes. A target the config names a task for is never guessed. Tasks without a target
(anomaly) or with one of another shape (forecast, recommend) are asked for by name in the config.
"""
from __future__ import annotations

import pandas as pd

from waypost.errors import DataError

#: integer-valued targets with at most this many classes, making up at most this share of the
#: rows, are classes; otherwise the target is a quantity (regression)
TARGET_MAX_CLASSES = 20
TARGET_MAX_CLASS_FRACTION = 0.05

__all__ = ["TARGET_MAX_CLASSES", "TARGET_MAX_CLASS_FRACTION", "infer_task"]


def _classes(n_classes: int) -> str:
    return "binary" if n_classes == 2 else "multiclass"


def _label_kind(dtype: object) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    return "string"


def infer_task(y: pd.Series, name: str) -> tuple[str, str]:
    """binary, multiclass or regression from the target's values, with the reason."""
    from waypost.kinds.recognise import is_integer_valued, short

    values = y.dropna()
    if len(values) == 0:
        raise DataError(f"target column {name!r} has no values: every row is missing")
    try:
        n_classes = int(values.nunique())
    except TypeError:
        raise DataError(f"target column {name!r} holds unhashable values like {short(values.iloc[0])!r}; expected labels or numbers") from None
    if n_classes == 1:
        raise DataError(f"target column {name!r} has a single class {short(values.iloc[0])!r}: nothing to learn; expected at least 2 distinct values")
    dtype = values.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        raise DataError(f"target column {name!r} holds dates; expected labels or numbers")
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        task = _classes(n_classes)
        return task, f"target {name!r} has {n_classes} classes ({_label_kind(dtype)}) -> {task}"
    if not is_integer_valued(values):
        return "regression", f"target {name!r} is {dtype} with non-integer values -> regression"
    share = n_classes / len(values)
    if n_classes == 2 or (n_classes <= TARGET_MAX_CLASSES and share <= TARGET_MAX_CLASS_FRACTION):
        task = _classes(n_classes)
        return task, f"target {name!r} has {n_classes} distinct integer values ({share:.1%} of rows) -> {task}"
    return "regression", (
        f"target {name!r} has {n_classes} distinct integer values ({share:.1%} of rows; classes need "
        f"<= {TARGET_MAX_CLASSES} and <= {TARGET_MAX_CLASS_FRACTION:.0%}) -> regression"
    )
