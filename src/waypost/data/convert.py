"""Column values into numbers the preprocessors use: pandas-side parsing of numbers, dates and
category keys, vectorised over a whole column. Kept apart from the preprocessors (what they learn)
so each file has one job. They only adapt training-time input (formats pandas parses, tz-aware
types): the formulas themselves exist once, in the numpy runtime (`waypost.runtime.features`)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import DataError
from waypost.runtime.features import canonical


def canonical_string(value: Any) -> str:
    """One string per category value, so 1, 1.0 and np.int64(1) are the same category.

    pandas reads an int column with a missing value as float; without this, a category seen as
    "1" in training would be unseen as "1.0" in a prediction chunk. The deployment runtime's
    `canonical` is the same function, so training and serving cannot drift apart.
    """
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    key = canonical(value)
    return "nan" if key is None else key


def _factorize(series: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """Codes per row (-1 = missing) and the canonical string of each distinct value."""
    try:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    except TypeError as exc:
        raise DataError(f"column {name!r} holds unhashable values ({exc}); expected scalar categories") from None
    return codes, [canonical_string(u) for u in np.asarray(uniques, dtype=object)]


def _column_name(name: str | None, series: pd.Series) -> str:
    return str(name if name is not None else series.name)


def _to_float(series: pd.Series, name: str) -> np.ndarray:
    """float64 with NaN for missing and +-inf; non-numeric strings are an error, not a silent NaN."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = series.mask(series.astype(str).str.strip().eq("") & series.notna())
        coerced = pd.to_numeric(values, errors="coerce")
        bad = coerced.isna() & values.notna()
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"row {first}: column {name!r} expected a number, got {values.iloc[first]!r:.80} "
                f"({int(bad.sum())} such rows)"
            )
        arr = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.array(arr, dtype=np.float64, copy=True)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def _to_datetime(series: pd.Series, name: str) -> np.ndarray:
    """datetime64[ns], UTC-naive, NaT for missing or unparseable. Numbers are Unix seconds."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return series.to_numpy("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return pd.to_datetime(series, unit="s", errors="coerce").to_numpy("datetime64[ns]")
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    raw = pd.Index(np.asarray(uniques, dtype=object))
    if len(raw) == 0:
        return np.full(len(series), np.datetime64("NaT"), dtype="datetime64[ns]")
    parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="ISO8601")
    failed = np.asarray(parsed.isna())
    if failed.any():  # slow path only for the distinct values that are not ISO 8601
        retry = pd.to_datetime(raw[failed], errors="coerce", utc=True, format="mixed")
        parsed = parsed.to_series(index=range(len(raw)))
        parsed.iloc[np.flatnonzero(failed)] = retry
        parsed = pd.DatetimeIndex(parsed)
    values = parsed.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]")
    out = np.append(values, np.datetime64("NaT", "ns"))
    return out[codes]  # code -1 picks the trailing NaT
