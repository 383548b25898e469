"""Every column of a table through its kind, behind one preprocessor: `transform(df)` gives what the
model parts take.

Encoder columns (image, text, ...) each have the preprocessor their kind fits (`waypost.kinds`):
uint8 images, token ids + attention masks. The tabular columns share one fitted
`TabularPreprocessor` (the MLP's numeric/categorical views, the GBM's matrix). A table without
encoder columns gets the tabular views themselves (`TabularArrays`), which is what the tabular parts
take; a table with encoder columns gets `FrameInputs`. Bad images are errors naming row and path at
predict time; at fit time a kind's policy may skip them (`on_bad_image: skip`), and the rows skipped in
any column are dropped from every view at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import DataError


@dataclass
class ColumnInputs:
    """What a one-column encoder model takes: the encoder's arrays and, for a fused table, the
    tabular views (`waypost.data.preprocess.TabularArrays`)."""

    arrays: tuple[np.ndarray, ...]
    tabular: Any = None

    def __len__(self) -> int:
        return len(self.arrays[0])


@dataclass
class FrameInputs:
    """What a model over several encoder columns takes: each encoder column's arrays by column name
    (an image column: (uint8 images,); a text column: (input_ids, attention_mask)), in the frame's
    column order, and the tabular views (`waypost.data.preprocess.TabularArrays`) or None."""

    columns: dict[str, tuple[np.ndarray, ...]]
    tabular: Any = None

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), None)
        return len(first[0]) if first is not None else len(self.tabular.numeric)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The one encoder column's arrays (what a one-column model reads)."""
        if len(self.columns) != 1:
            raise DataError(f"a one-column model was given {len(self.columns)} encoder columns")
        return next(iter(self.columns.values()))


class FramePreprocessor:
    kind = "frame"

    def __init__(self, columns: dict[str, Any] | None = None, tabular: Any = None,
                 inputs: dict[str, list[str]] | None = None) -> None:
        """`columns`: encoder column -> its fitted preprocessor (with `.kind`); `tabular`: the fitted
        TabularPreprocessor or None; `inputs`: encoder column -> the graph input names it feeds
        (default: the kind's own names for one column, "<column>/<input>" beside others)."""
        from waypost.kinds import get_kind

        self.columns = dict(columns or {})
        self.tabular = tabular
        if inputs is None:
            one = len(self.columns) == 1
            inputs = {name: [base if one else f"{name}/{base}" for base in get_kind(pre.kind).input_types]
                      for name, pre in self.columns.items()}
        self.inputs = inputs

    @property
    def category_cardinalities_(self) -> list[int]:
        return list(self.tabular.category_cardinalities_) if self.tabular is not None else []

    @property
    def input_issues_(self) -> dict[str, dict[str, int]]:
        return self.tabular.input_issues_ if self.tabular is not None else {}

    def transform(self, df: pd.DataFrame) -> Any:
        """Every row, or a DataError naming the bad one (predict time)."""
        return self.transform_rows(df)[0]

    def transform_rows(self, df: pd.DataFrame, policies: dict[str, dict[str, Any]] | None = None
                       ) -> tuple[Any, np.ndarray, list[Any]]:
        """(inputs of the kept rows; their positions; the skipped cells). `policies`: per encoder
        column, its kind's bad-cell options at fit time (`on_bad_image`)."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise DataError(f"missing columns at predict time: {missing}")
        policies = policies or {}
        per_column, kept, skipped = {}, np.arange(len(df)), []
        for name, pre in self.columns.items():
            arrays, rows, bad = pre.transform(df[name], **policies.get(name, {}))
            per_column[name] = (arrays, np.asarray(rows))
            skipped += [{**cell, "column": name} for cell in bad]
            kept = np.intersect1d(kept, rows) if bad else kept
        columns = {}
        for name, (arrays, rows) in per_column.items():
            if len(rows) != len(kept):  # another column skipped rows this one kept
                arrays = tuple(a[np.searchsorted(rows, kept)] for a in arrays)
            columns[name] = arrays
        tabular = None
        if self.tabular is not None:
            tabular = self.tabular.transform(df.iloc[kept] if len(kept) != len(df) else df)
        if not columns:
            return tabular, kept, skipped
        return FrameInputs(columns, tabular), kept, skipped

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind,
                "columns": [{**pre.to_state(), "name": name, "kind": pre.kind, "inputs": list(self.inputs[name])}
                            for name, pre in self.columns.items()],
                "tabular": self.tabular.to_state() if self.tabular is not None else None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FramePreprocessor:
        """Any layout `waypost.kinds.frame.frame_state` reads (format 1 included)."""
        from waypost.data.preprocess import TabularPreprocessor
        from waypost.kinds import get_kind
        from waypost.kinds.frame import frame_state

        state = frame_state(state)
        if state.get("kind") != cls.kind:
            raise DataError(f"preprocessor state has kind {state.get('kind')!r}; expected 'frame'")
        columns, inputs = {}, {}
        for entry in state["columns"]:
            columns[entry["name"]] = get_kind(entry["kind"]).preprocessor_from_state(entry)
            inputs[entry["name"]] = list(entry["inputs"])
        tabular = TabularPreprocessor.from_state(state["tabular"]) if state.get("tabular") else None
        return cls(columns, tabular, inputs)
