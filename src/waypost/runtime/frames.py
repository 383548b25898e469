"""DataFrames into the runtime's columns: pandas is imported only when a caller hands one over
(so a frame exists and pandas is installed); the runtime itself never needs it."""
from __future__ import annotations

from typing import Any


def frame_columns(df: Any, columns: list[str]) -> dict[str, Any]:
    """Column arrays for the runtime: pandas NA/NaT become None, datetimes stay datetime64."""
    import pandas as pd

    out = {}
    for c in columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
            out[c] = s.to_numpy()
        else:
            out[c] = s.astype(object).where(s.notna(), None).to_numpy()
    return out
