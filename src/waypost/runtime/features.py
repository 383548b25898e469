"""Tabular preprocessing in numpy alone, from the JSON state that `waypost.data.preprocess` fits.

This is the one implementation of the tabular formulas: the deployed bundle runs it on records and
columns, and training's `TabularPreprocessor.transform` runs it too, after adapting its pandas
columns (pandas parses dates in formats guessed per value, coerces numeric strings, and reduces a
category column to its distinct values). What the runtime does alone, by design:
- datetime strings are parsed as ISO 8601 (what JSON APIs send) or Unix seconds; other formats
  count as missing;
- values arrive as Python lists / numpy arrays from records or columns, or as `Distinct`.

No pandas here: the runtime must install and import small.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from waypost.errors import DataError

_NS_PER_DAY = 86_400 * 10**9
_NS_PER_YEAR = 365.2425 * _NS_PER_DAY

#: How far past the training range a number may go before it is clipped, as a share of the range's
#: width: mild extrapolation (next year's prices) passes, 1e6 grams of penguin does not.
CLIP_MARGIN = 0.25
#: The key under which a transform returns its per-row input issues beside the graph's inputs:
#: {"unseen" | "clipped": {column: bool mask over the rows}}, only columns with at least one.
ISSUES = "__issues__"


def clip_bounds(low: float, high: float) -> tuple[float, float]:
    """The clip range learned from a column's training (min, max): widened by `CLIP_MARGIN` of its width."""
    margin = CLIP_MARGIN * (high - low)
    return low - margin, high + margin


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def canonical(v: Any) -> str | None:
    """The category key of a value, so 1, 1.0 and np.int64(1) are one category; None for missing.
    (`waypost.data.convert.canonical_string` is this, plus pandas Timestamps.)"""
    if _is_missing(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return str(int(f)) if math.isfinite(f) and f == int(f) else repr(f)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def binary_choices(values: list[str]) -> list[Any]:
    """A binary column's two canonical training values in the JSON type a client sends them in:
    "True"/"False" -> booleans, two numbers -> numbers ("1" -> 1, "0.5" -> 0.5), else the strings."""
    if sorted(values) == ["False", "True"]:
        return [v == "True" for v in values]
    numbers: list[Any] = []
    for v in values:
        try:
            f = float(v)
        except ValueError:
            return list(values)
        if not math.isfinite(f):
            return list(values)
        numbers.append(int(f) if f.is_integer() and v.lstrip("-").isdigit() else f)
    return numbers


def to_float(values: Any, name: str) -> np.ndarray:
    """float64 (n,), NaN for missing and +-inf. May share memory with `values`: never written to."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        x = arr.astype(np.float64, copy=False)
    else:
        try:
            x = np.asarray([np.nan if (v is None or (isinstance(v, str) and not v.strip())) else v
                            for v in arr.tolist()], dtype=np.float64)
        except (TypeError, ValueError):
            row, bad = next((i, v) for i, v in enumerate(arr.tolist()) if not _parses_as_float(v))
            raise DataError(f"row {row}: column {name!r} expected a number, got {bad!r:.80}") from None
    x = x.reshape(-1)
    finite = np.isfinite(x)
    return x if finite.all() else np.where(finite, x, np.nan)


def _parses_as_float(v: Any) -> bool:
    if v is None or (isinstance(v, str) and not v.strip()):
        return True
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class Distinct:
    """A column already reduced to its distinct values: `values[inverse[i]]` is row i's value, and
    inverse -1 marks a missing one. Category and binary columns accept it in place of the rows, so
    a caller that can factorise faster (pandas, an Arrow dictionary) pays one key per value."""

    __slots__ = ("inverse", "values")

    def __init__(self, inverse: np.ndarray, values: list[Any]) -> None:
        self.inverse = np.asarray(inverse, dtype=np.int64)
        self.values = values


def _distinct(values: Any) -> Distinct | None:
    """Rows -> `Distinct` by a dict lookup each; None when a value is unhashable (a list)."""
    arr = np.asarray(values, dtype=object).reshape(-1)
    seen: dict[Any, int] = {}
    try:
        inverse = np.fromiter((seen.setdefault(v, len(seen)) for v in arr.tolist()), dtype=np.int64, count=len(arr))
    except TypeError:
        return None
    return Distinct(inverse, list(seen))


def _codes(values: Any, index: dict[str, int], fill: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(code per row, {"unseen": mask} or {}); missing and unknown values get `fill`.

    `canonical` runs once per distinct value (a batch of 10,000 rows of a 5-valued column
    canonicalises 5 values), and the unseen mask is only gathered when some value is unseen.
    """
    distinct = values if isinstance(values, Distinct) else _distinct(values)
    if distinct is None:  # unhashable values (lists): one canonical() per row, then as strings
        keys = [canonical(v) for v in np.asarray(values, dtype=object).reshape(-1).tolist()]
        distinct = Distinct(np.arange(len(keys)), keys)
    keys = [canonical(v) for v in distinct.values]
    code_of = np.array([index.get(k, fill) if k is not None else fill for k in keys] + [fill], dtype=np.int64)
    unseen_of = np.array([k is not None and k not in index for k in keys] + [False], dtype=bool)
    codes = code_of[distinct.inverse]  # inverse -1 (missing) picks the trailing entry
    unseen = unseen_of[distinct.inverse] if unseen_of.any() else None
    return codes, {"unseen": unseen} if unseen is not None and unseen.any() else {}


def to_datetime(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]")
    if arr.dtype.kind in "iuf":
        x = arr.astype(np.float64)
        out = np.full(x.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
        ok = np.isfinite(x)
        out[ok] = (x[ok] * 1e9).astype(np.int64).astype("datetime64[ns]")
        return out
    cache: dict[Any, np.datetime64] = {}
    out = np.empty(arr.shape[0], dtype="datetime64[ns]")
    for i, v in enumerate(arr.tolist()):
        if v not in cache:
            cache[v] = _parse_one(v)
        out[i] = cache[v]
    return out


def _parse_one(v: Any) -> np.datetime64:
    if _is_missing(v):
        return np.datetime64("NaT", "ns")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return np.datetime64(int(v * 1e9), "ns")
    s = str(v).strip()
    offset = 0
    if s.endswith("Z"):
        s = s[:-1]
    elif len(s) > 16 and s[-6] in "+-" and s[-3] == ":" and ("T" in s or " " in s):  # ...+02:00
        sign = 1 if s[-6] == "+" else -1
        offset = sign * (int(s[-5:-3]) * 3600 + int(s[-2:]) * 60)
        s = s[:-6]
    try:
        ts = np.datetime64(s.replace(" ", "T"), "ns")
    except ValueError:
        return np.datetime64("NaT", "ns")
    return ts - np.timedelta64(offset, "s")


def _fields(ts: np.ndarray) -> dict[str, np.ndarray]:
    ns = ts.astype(np.int64)
    days = ts.astype("datetime64[D]")
    months = ts.astype("datetime64[M]").astype(np.int64)
    years = ts.astype("datetime64[Y]")
    since_midnight = ns - days.astype("datetime64[ns]").astype(np.int64)
    return {
        "year": ns / _NS_PER_YEAR + 1970.0,
        "month": (months % 12 + 1).astype(np.float64),
        "dow": ((days.astype(np.int64) + 3) % 7).astype(np.float64),  # 1970-01-01 was a Thursday
        "doy": ((days - years.astype("datetime64[D]")).astype(np.int64) + 1).astype(np.float64),
        "hour": (since_midnight // (3600 * 10**9)).astype(np.float64),
        "minute": ((since_midnight // (60 * 10**9)) % 60).astype(np.float64),
    }


class ColumnTransform:
    """One column's transform from its fitted state: returns (mlp view, gbm view, issue masks).

    Issue masks flag the rows of this column that the fitted state could not take as they were:
    `unseen` (a category or binary value outside the training vocabulary: the unknown bucket /
    missing) and `clipped` (a number or date outside the training range, clipped to its bounds;
    see `clip_bounds`). States written before clipping existed have no bounds and clip nothing.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.kind = state["kind"]
        self.name = str(state["name"])
        #: the MLP view this column feeds: integer codes for embeddings, or numbers
        self.view = "numeric"
        # one formula per tabular kind (those with a fitted-state spec), `_<kind>` below, with its
        # `_setup_<kind>` from the fitted state
        from waypost.manifest import COLUMN_STATE

        if self.kind not in COLUMN_STATE:
            raise DataError(f"bundle column {self.name!r} has unsupported kind {self.kind!r}")
        self._rule = getattr(self, f"_{self.kind}")
        getattr(self, f"_setup_{self.kind}", lambda: None)()

    def _setup_category(self) -> None:
        self.index = {v: i + 1 for i, v in enumerate(self.state["categories"])}
        self.view = "categorical"

    def _setup_binary(self) -> None:
        self.index = {v: i for i, v in enumerate(self.state["values"])}

    def _setup_datetime(self) -> None:
        self.median = np.datetime64(self.state["median"], "ns")

    def __call__(self, values: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        return self._rule(values)

    def _numeric(self, values: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        s = self.state
        x = to_float(values, self.name)
        issues = {}
        if s.get("low") is not None:
            outside = (x < s["low"]) | (x > s["high"])
            if outside.any():
                issues["clipped"] = outside
                x = np.clip(x, s["low"], s["high"])
        missing = np.isnan(x)
        z = (np.where(missing, s["median"], x) - s["mean"]) / s["std"]
        mlp = np.column_stack([z, missing] if s["add_indicator"] else [z]).astype(np.float32)
        return mlp, x.astype(np.float32)[:, None], issues

    def _category(self, values: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        codes, issues = _codes(values, self.index, 0)
        gbm = codes.astype(np.float32) - 1.0
        gbm[gbm < 0] = float(len(self.index))
        return codes[:, None], gbm[:, None], issues

    def _binary(self, values: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        codes, issues = _codes(values, self.index, -1)  # unseen values count as missing
        missing = codes < 0
        cols = [np.where(missing, 0.5, codes)] + ([missing] if self.state["add_indicator"] else [])
        gbm = np.where(missing, np.nan, codes).astype(np.float32)
        return np.column_stack(cols).astype(np.float32), gbm[:, None], issues

    def _datetime(self, values: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        s = self.state
        ts = to_datetime(values, self.name)
        missing = np.isnat(ts)
        f = _fields(np.where(missing, np.datetime64(0, "ns"), ts))
        parts = ["month", "dow", "doy"] + (["hour"] if s["has_time"] else [])
        gbm = np.column_stack([f["year"], f["month"], f["dow"], f["doy"]] + ([f["hour"]] if s["has_time"] else []))
        gbm = gbm.astype(np.float32)
        gbm[missing] = np.nan
        if missing.any():
            f = _fields(np.where(missing, self.median, ts))
        cycles = {"month": (f["month"] - 1) / 12.0, "dow": f["dow"] / 7.0, "doy": (f["doy"] - 1) / 365.25,
                  "hour": (f["hour"] + f["minute"] / 60.0) / 24.0}
        year, issues = f["year"], {}
        if s.get("year_low") is not None:
            outside = ((year < s["year_low"]) | (year > s["year_high"])) & ~missing
            if outside.any():
                issues["clipped"] = outside
            year = np.clip(year, s["year_low"], s["year_high"])
        cols = [(year - s["year_mean"]) / s["year_std"]]
        for part in parts:
            angle = 2.0 * np.pi * cycles[part]
            cols += [np.sin(angle), np.cos(angle)]
        if s["add_indicator"]:
            cols.append(missing)
        return np.column_stack(cols).astype(np.float32), gbm, issues


class TabularTransform:
    """All columns, in the manifest's order: the three input views of the ONNX graph."""

    def __init__(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "tabular":
            raise DataError(f"bundle preprocessor has kind {state.get('kind')!r}; expected 'tabular'")
        self.columns = [ColumnTransform(c) for c in state["columns"]]

    def __call__(self, columns: dict[str, Any], n: int) -> dict[str, Any]:
        numeric, categorical, gbm = [], [], []
        issues: dict[str, dict[str, np.ndarray]] = {}
        for col in self.columns:
            mlp_view, gbm_view, flags = col(columns[col.name])
            (categorical if col.view == "categorical" else numeric).append(mlp_view)
            gbm.append(gbm_view)
            for issue, mask in flags.items():
                issues.setdefault(issue, {})[col.name] = mask
        return {
            ISSUES: issues,
            "numeric": np.hstack(numeric).astype(np.float32, copy=False) if numeric else np.zeros((n, 0), np.float32),
            "categorical": np.hstack(categorical).astype(np.int64, copy=False) if categorical else np.zeros((n, 0), np.int64),
            "gbm": np.hstack(gbm).astype(np.float32, copy=False) if gbm else np.zeros((n, 0), np.float32),
        }
