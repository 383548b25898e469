"""A table with one encoder column (image or text) and any tabular columns beside it, behind the
interface `Predictor` uses for preprocessors: `transform(df)` -> `ColumnInputs`.

The column's own preprocessor (`ImagePreprocessor`, `TextPreprocessor`) turns the column into the
encoder's arrays (uint8 images; token ids + attention mask); the fitted `TabularPreprocessor`, when
there are tabular columns, gives the views the fusion head takes. Bad images are errors naming row
and path at predict time.
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


def _part_class(kind: str) -> Any:
    if kind == "image":
        from waypost.data.image_preprocess import ImagePreprocessor

        return ImagePreprocessor
    if kind == "text":
        from waypost.data.text_preprocess import TextPreprocessor

        return TextPreprocessor
    raise DataError(f"unknown column preprocessor kind {kind!r}; expected image or text")


class ColumnFramePreprocessor:
    def __init__(self, column: str, part: Any, tabular: Any = None) -> None:
        self.column, self.part, self.tabular = column, part, tabular

    @property
    def kind(self) -> str:
        return f"{self.part.kind}_frame"

    def transform(self, df: pd.DataFrame) -> ColumnInputs:
        """Every row, or a DataError naming the bad one (predict time)."""
        return self.transform_rows(df)[0]

    def transform_rows(self, df: pd.DataFrame, **part_options: Any) -> tuple[ColumnInputs, np.ndarray, list[Any]]:
        """(inputs of the kept rows; their positions; the skipped cells): the fit passes the column's
        bad-cell policy (`on_bad_image`) here; rows it skips are dropped from the tabular views too."""
        if self.column not in df.columns:
            raise DataError(f"missing columns at predict time: [{self.column!r}]")
        arrays, kept, skipped = self.part.transform(df[self.column], **part_options)
        tabular = None
        if self.tabular is not None:
            tabular = self.tabular.transform(df.iloc[kept] if skipped else df)
        return ColumnInputs(arrays, tabular), kept, skipped

    def to_state(self) -> dict[str, Any]:
        state = {"kind": self.kind, "column": self.column, self.part.kind: self.part.to_state()}
        if self.tabular is not None:
            state["tabular"] = self.tabular.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ColumnFramePreprocessor:
        part_kind = str(state.get("kind", "")).removesuffix("_frame")
        tabular = None
        if state.get("tabular") is not None:
            from waypost.data.preprocess import TabularPreprocessor

            tabular = TabularPreprocessor.from_state(state["tabular"])
        return cls(state["column"], _part_class(part_kind).from_state(state[part_kind]), tabular)
