"""Per-type preprocessors for tabular columns, fitted on training rows only.

Fitting happens here, in pandas; transforming does not: every view is computed by the deployment
runtime's numpy transform (`waypost.runtime.features`) from the fitted state (`to_state`, plain
JSON, never a pickle), so training and the bundle run one implementation of the formulas. What
stays here is input adaptation: pandas parses dates in the formats it guesses, coerces numeric
strings (a bad one is an error naming its row), and factorises category columns in C.

Contract shared by the column preprocessors: `transform(series)` returns an array of shape
(n, len(output_names)) for the MLP (imputed, standardised, never NaN), and `transform_gbm(series)`
an array (n, len(gbm_names)) of raw values with NaN for missing, for gradient-boosted trees, which
split on raw values and route missing values natively.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from waypost.data.types import TABULAR_TYPES
from waypost.errors import DataError, NotFittedError
from waypost.data.convert import _column_name, _factorize, _to_datetime, _to_float, canonical_string
from waypost.runtime.features import (
    _NS_PER_DAY, _NS_PER_YEAR, ISSUES, ColumnTransform, Distinct, TabularTransform, clip_bounds,
)

__all__ = [
    "BinaryPreprocessor", "CategoryPreprocessor", "DatetimePreprocessor", "NumericPreprocessor",
    "TabularArrays", "TabularPreprocessor", "canonical_string",
]


class _Column:
    """Shared plumbing: name, fitted check, the two views, JSON state round trip.

    Subclasses implement `fit`, `_adapt(series)` (pandas -> what the runtime's transform takes)
    and `_mlp_names()`; the views themselves are the runtime's `ColumnTransform` of the state.
    """

    kind: ClassVar[str] = ""
    _learned: ClassVar[tuple[str, ...]] = ()
    #: learned keys that states written by older versions lack, with the value that reproduces them
    _optional: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.last_unseen_count_ = 0
        self.last_clipped_count_ = 0

    @classmethod
    def configured(cls, name: str, table: Any) -> _Column:
        """The column's preprocessor with the table-level options it takes (`TabularPreprocessor`)."""
        return cls(name)

    def _check_fitted(self) -> str:
        if not hasattr(self, self._learned[0] + "_"):
            raise NotFittedError(f"{type(self).__name__} for column {self.name!r} is not fitted: call fit first")
        return str(self.name)

    def _with_indicator(self, names: list[str]) -> list[str]:
        return names + [f"{self.name}__missing"] if getattr(self, "add_indicator_", False) else names

    @property
    def output_names(self) -> list[str]:
        """Names of the MLP-view columns (`transform`)."""
        self._check_fitted()
        return self._mlp_names()

    def _mlp_names(self) -> list[str]:
        return self._with_indicator([str(self.name)])

    @property
    def gbm_names(self) -> list[str]:
        """Names of the GBM-view columns (`transform_gbm`)."""
        return [self._check_fitted()]

    def transform(self, series: pd.Series) -> np.ndarray:
        """The MLP view: (n, len(output_names)), imputed and scaled, never NaN."""
        return self._views(series)[0]

    def transform_gbm(self, series: pd.Series) -> np.ndarray:
        """The GBM view: (n, len(gbm_names)) float32 raw values, NaN for missing."""
        return self._views(series)[1]

    def transform_both(self, series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Both views from one parse of the column."""
        return self._views(series)

    def _views(self, series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        mlp, gbm, issues = ColumnTransform(self.to_state())(self._adapt(series))
        self.last_unseen_count_ = int(issues["unseen"].sum()) if "unseen" in issues else 0
        self.last_clipped_count_ = int(issues["clipped"].sum()) if "clipped" in issues else 0
        return mlp, gbm

    def _adapt(self, series: pd.Series) -> Any:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {"name": self.name}

    def to_state(self) -> dict[str, Any]:
        """JSON-safe fitted state: plain lists, floats, ints, strings and bools."""
        self._check_fitted()
        return {"kind": self.kind, **self._params(), **{k: getattr(self, k + "_") for k in self._learned}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Any:
        if state.get("kind") != cls.kind:
            raise DataError(f"preprocessor state has kind {state.get('kind')!r}; expected {cls.kind!r}")
        obj = cls(**{k: v for k, v in state.items() if k != "kind" and k not in cls._learned})
        try:
            for key in cls._learned:
                setattr(obj, key + "_", state[key] if key in state or key not in cls._optional else cls._optional[key])
        except KeyError as exc:
            raise DataError(f"{cls.kind} preprocessor state for column {state.get('name')!r} lacks {exc}") from None
        return obj


class NumericPreprocessor(_Column):
    """Median imputation + standardisation, with a missing indicator when training had gaps.

    Values outside the training range by more than `CLIP_MARGIN` of its width are clipped to those
    bounds (`low`, `high`) before anything else, in both views: a network extrapolates without
    limit (1e308 would overflow float32 into NaN), while trees split inside the training range, so
    the clip leaves their answers unchanged. After each `transform`, `last_clipped_count_` holds
    how many values were clipped.
    """

    kind = "numeric"
    _learned = ("median", "mean", "std", "add_indicator", "low", "high")
    _optional = {"low": None, "high": None}

    def fit(self, series: pd.Series) -> NumericPreprocessor:
        self.name = _column_name(self.name, series)
        x = _to_float(series, self.name)
        present = x[~np.isnan(x)]
        if present.size == 0:
            raise DataError(f"column {self.name!r} has no numeric values in the training data")
        std = float(present.std())
        self.median_ = float(np.median(present))
        self.mean_ = float(present.mean())
        self.std_ = std if std > 0 and math.isfinite(std) else 1.0
        self.add_indicator_ = bool(present.size < x.size)
        self.low_, self.high_ = clip_bounds(float(present.min()), float(present.max()))
        return self

    def _adapt(self, series: pd.Series) -> np.ndarray:
        return _to_float(series, self._check_fitted())  # pandas' to_numeric, row-numbered errors


class CategoryPreprocessor(_Column):
    """Codes for embeddings: 0 is the shared bucket for missing, rare and unseen values; 1..K known.

    The vocabulary keeps the `max_categories` most frequent values seen at least `min_frequency`
    times (ties broken by value, so the codes are deterministic). After each `transform`,
    `last_unseen_count_` holds how many non-missing values fell outside the vocabulary (drift
    monitoring reads it). The MLP view is int64 codes (n, 1); the GBM view is the 0-based code of
    known categories as float, and K (= number of known categories) for the unknown bucket (not
    NaN: LightGBM and its ONNX export agree on integer codes, but route NaN on categorical splits
    differently, and a deployed model must predict exactly what was validated).
    """

    kind = "category"
    _learned = ("categories",)

    @classmethod
    def configured(cls, name: str, table: Any) -> CategoryPreprocessor:
        return cls(name, table.max_categories, table.min_frequency)

    def __init__(self, name: str | None = None, max_categories: int = 1000, min_frequency: int = 1) -> None:
        super().__init__(name)
        if max_categories < 1 or min_frequency < 1:
            raise DataError(f"column {name!r}: max_categories and min_frequency must be >= 1")
        self.max_categories = max_categories
        self.min_frequency = min_frequency

    def _params(self) -> dict[str, Any]:
        return {"name": self.name, "max_categories": self.max_categories, "min_frequency": self.min_frequency}

    def fit(self, series: pd.Series) -> CategoryPreprocessor:
        self.name = _column_name(self.name, series)
        codes, canon = _factorize(series, self.name)
        counts: dict[str, int] = {}
        for value, count in zip(canon, np.bincount(codes[codes >= 0], minlength=len(canon)).tolist()):
            counts[value] = counts.get(value, 0) + count
        ranked = sorted((kv for kv in counts.items() if kv[1] >= self.min_frequency), key=lambda kv: (-kv[1], kv[0]))
        self.categories_ = [value for value, _ in ranked[: self.max_categories]]
        return self

    @property
    def cardinality_(self) -> int:
        """Embedding rows needed: the known categories plus the unknown bucket."""
        self._check_fitted()
        return len(self.categories_) + 1

    def _adapt(self, series: pd.Series) -> Distinct:
        return Distinct(*_factorize(series, self._check_fitted()))  # pandas factorises in C


def _binary_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


class BinaryPreprocessor(_Column):
    """Two values -> 0.0 / 1.0 (sorted string forms, numbers numerically); missing/unseen -> 0.5.

    The missing indicator exists only when training had missing values; an unseen value at
    predict time is counted in `last_unseen_count_` and treated as missing.
    """

    kind = "binary"
    _learned = ("values", "add_indicator")

    def fit(self, series: pd.Series) -> BinaryPreprocessor:
        self.name = _column_name(self.name, series)
        codes, canon = _factorize(series, self.name)
        values = sorted(set(canon), key=_binary_key)
        if not values or len(values) > 2:
            raise DataError(
                f"column {self.name!r} is typed binary but has {len(values)} distinct values "
                f"(e.g. {values[:5]}) in the training data; expected 2 (type it as category)"
            )
        self.values_ = values
        self.add_indicator_ = bool((codes < 0).any())
        return self

    def _adapt(self, series: pd.Series) -> Distinct:
        return Distinct(*_factorize(series, self._check_fitted()))


class DatetimePreprocessor(_Column):
    """Standardised fractional year (trend) + sin/cos of month, weekday, day of year (and hour).

    Cyclic encodings keep December next to January; the trend is clipped to the training range
    widened like a number's (`clip_bounds`). The hour pair exists only when training had
    times other than midnight; missing or unparseable dates take the training median, flagged by
    an indicator when training had gaps. The GBM view is the raw year fraction, month, day of
    week, day of year (and hour) with NaN for missing.
    """

    kind = "datetime"
    _learned = ("median", "year_mean", "year_std", "has_time", "add_indicator", "year_low", "year_high")
    _optional = {"year_low": None, "year_high": None}

    def fit(self, series: pd.Series) -> DatetimePreprocessor:
        self.name = _column_name(self.name, series)
        ts = _to_datetime(series, self.name)
        ns = ts[~np.isnat(ts)].astype(np.int64)
        if ns.size == 0:
            raise DataError(f"column {self.name!r} has no parseable dates in the training data")
        years = ns / _NS_PER_YEAR + 1970.0
        std = float(years.std())
        self.median_ = pd.Timestamp(int(np.median(ns))).isoformat()
        self.year_mean_ = float(years.mean())
        self.year_std_ = std if std > 0 else 1.0
        self.has_time_ = bool(np.any(ns % _NS_PER_DAY != 0))
        self.add_indicator_ = bool(ns.size < ts.size)
        self.year_low_, self.year_high_ = clip_bounds(float(years.min()), float(years.max()))
        return self

    def _parts(self) -> list[str]:
        return ["month", "dow", "doy"] + (["hour"] if self.has_time_ else [])

    def _mlp_names(self) -> list[str]:
        return self._with_indicator([f"{self.name}__year"] + [f"{self.name}__{p}_{f}" for p in self._parts() for f in ("sin", "cos")])

    @property
    def gbm_names(self) -> list[str]:
        name = self._check_fitted()
        return [f"{name}__{p}" for p in ("year", "month", "dayofweek", "dayofyear", "hour")[: 5 if self.has_time_ else 4]]

    def _adapt(self, series: pd.Series) -> np.ndarray:
        # pandas parses what the runtime does not (formats it guesses, tz-aware dtypes)
        return _to_datetime(series, self._check_fitted())


_COLUMN_TYPES: dict[str, type[_Column]] = {
    cls.kind: cls for cls in (NumericPreprocessor, CategoryPreprocessor, BinaryPreprocessor, DatetimePreprocessor)
}


@dataclass
class TabularArrays:
    """The three views of a tabular batch, one row per input row."""

    numeric: np.ndarray  # float32 (n, d_num): the MLP's dense input, never NaN
    categorical: np.ndarray  # int64 (n, n_cat): embedding codes, 0 = unknown/missing
    gbm: np.ndarray  # float32 (n, d_gbm): raw values for GBMs, NaN = missing


class TabularPreprocessor:
    """All tabular columns of a table: fit on the training rows, then one call per batch.

    `features` maps column name -> numeric / category / binary / datetime, in the order the
    output columns should appear. Columns absent from `features` are ignored at transform time,
    so a prediction table may carry extra columns (the target, an ID).
    """

    kind = "tabular"
    STATE_VERSION = 1

    def __init__(self, features: dict[str, str], *, max_categories: int = 1000, min_frequency: int = 1) -> None:
        for name, ftype in features.items():
            if ftype not in _COLUMN_TYPES:
                allowed = ", ".join(sorted(TABULAR_TYPES))
                raise DataError(f"column {name!r} has type {ftype!r}: not a tabular type (expected one of {allowed})")
        self.features = dict(features)
        self.max_categories = max_categories
        self.min_frequency = min_frequency

    def _make(self, name: str, ftype: str) -> _Column:
        return _COLUMN_TYPES[ftype].configured(name, self)

    def _check_columns(self, df: pd.DataFrame, when: str) -> None:
        missing = [c for c in self.features if c not in df.columns]
        if missing:
            raise DataError(f"missing columns at {when} time: {missing}; available: {[str(c) for c in df.columns[:20]]}")

    def fit(self, df: pd.DataFrame) -> TabularPreprocessor:
        self._check_columns(df, "fit")
        self.columns_ = [self._make(name, ftype).fit(df[name]) for name, ftype in self.features.items()]
        self._index_outputs()
        return self

    def _index_outputs(self) -> None:
        self.numeric_names_: list[str] = []
        self.category_columns_: list[str] = []
        self.category_cardinalities_: list[int] = []
        self.gbm_names_: list[str] = []
        self.gbm_categorical_: list[int] = []
        for col in self.columns_:
            if isinstance(col, CategoryPreprocessor):
                self.category_columns_.append(str(col.name))
                self.category_cardinalities_.append(col.cardinality_)
                self.gbm_categorical_.append(len(self.gbm_names_))
            else:
                self.numeric_names_ += col.output_names
            self.gbm_names_ += col.gbm_names
        self._transform = TabularTransform(self.to_state())
        self._last_issues: dict[str, dict[str, int]] = {}

    def _check_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise NotFittedError("TabularPreprocessor is not fitted: call fit first")

    def transform(self, df: pd.DataFrame) -> TabularArrays:
        """The three views of `df`'s rows: each column adapted from pandas, then the runtime's
        `TabularTransform` of the fitted state, the same call the deployed bundle makes."""
        self._check_fitted()
        self._check_columns(df, "predict")
        views = self._transform({str(col.name): col._adapt(df[col.name]) for col in self.columns_}, len(df))
        self._last_issues = {issue: {c: int(mask.sum()) for c, mask in masks.items()}
                             for issue, masks in views[ISSUES].items()}
        return TabularArrays(numeric=views["numeric"], categorical=views["categorical"], gbm=views["gbm"])

    def fit_transform(self, df: pd.DataFrame) -> TabularArrays:
        return self.fit(df).transform(df)

    @property
    def unseen_counts_(self) -> dict[str, int]:
        """Per category/binary column: values outside the training vocabulary in the last transform."""
        self._check_fitted()
        counts = self._last_issues.get("unseen", {})
        return {str(c.name): counts.get(str(c.name), 0) for c in self.columns_ if isinstance(c, (CategoryPreprocessor, BinaryPreprocessor))}

    @property
    def clipped_counts_(self) -> dict[str, int]:
        """Per numeric/datetime column: values clipped to the training range in the last transform."""
        self._check_fitted()
        counts = self._last_issues.get("clipped", {})
        return {str(c.name): counts.get(str(c.name), 0) for c in self.columns_ if isinstance(c, (NumericPreprocessor, DatetimePreprocessor))}

    @property
    def input_issues_(self) -> dict[str, dict[str, int]]:
        """The last transform's non-zero counts: {"unseen": {column: n}, "clipped": {column: n}}."""
        out = {"unseen": {c: n for c, n in self.unseen_counts_.items() if n},
               "clipped": {c: n for c, n in self.clipped_counts_.items() if n}}
        return {k: v for k, v in out.items() if v}

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state; `from_state(json.loads(json.dumps(state)))` transforms identically."""
        self._check_fitted()
        return {"kind": self.kind, "version": self.STATE_VERSION, "features": dict(self.features),
                "max_categories": self.max_categories, "min_frequency": self.min_frequency,
                "columns": [col.to_state() for col in self.columns_]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TabularPreprocessor:
        if state.get("kind") != cls.kind:
            raise DataError(f"preprocessor state has kind {state.get('kind')!r}; expected {cls.kind!r}")
        if state.get("version", 0) > cls.STATE_VERSION:
            raise DataError(f"tabular preprocessor state version {state.get('version')} is newer than supported ({cls.STATE_VERSION})")
        obj = cls(state["features"], max_categories=state.get("max_categories", 1000), min_frequency=state.get("min_frequency", 1))
        obj.columns_ = [_COLUMN_TYPES[s["kind"]].from_state(s) for s in state["columns"]]
        obj._index_outputs()
        return obj
