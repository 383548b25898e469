"""The tabular kinds: numeric, category, binary and datetime columns.

Their fitted states live together in the tabular preprocessor (`waypost.data.preprocess`) and the
numpy runtime (`waypost.runtime.features`), which build one set of views for the MLP and the GBM;
what differs per kind beyond that (synthetic values, the example a client sees, the request field)
is here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.kinds import register_kind
from waypost.kinds.base import Kind


class TabularKind(Kind):
    encoder = False

    def probe_value(self, entry: dict[str, Any]) -> Any:
        return self.example_value(entry)


class NumericKind(TabularKind):
    name = "numeric"
    arrow_expected = "integers or floats"
    column_dtype = "float64"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        return list(entry["median"] + entry["std"] * rng.standard_normal(n))

    def example_value(self, entry: dict[str, Any]) -> Any:
        value = float(entry["median"])
        return int(value) if value.is_integer() and abs(value) < 2**53 else value


class CategoryKind(TabularKind):
    name = "category"
    arrow_expected = "strings, integers or floats"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        categories = entry["categories"]
        return [categories[i % len(categories)] if categories else "x" for i in range(n)]

    def example_value(self, entry: dict[str, Any]) -> Any:
        return entry["categories"][0] if entry["categories"] else None


class BinaryKind(TabularKind):
    name = "binary"
    arrow_expected = "the training values' type"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        return [entry["values"][i % len(entry["values"])] for i in range(n)]

    def example_value(self, entry: dict[str, Any]) -> Any:
        from waypost.runtime.features import binary_choices

        return binary_choices(entry["values"])[0]


class DatetimeKind(TabularKind):
    name = "datetime"
    arrow_expected = "timestamps, dates or ISO 8601 strings"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        return [entry["median"]] * n

    def example_value(self, entry: dict[str, Any]) -> Any:
        return str(entry["median"])


for _kind in (NumericKind(), CategoryKind(), BinaryKind(), DatetimeKind()):
    register_kind(_kind)
