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

#: Share of sampled strings that must parse as dates for a datetime column.
DATETIME_MIN_FRACTION = 0.95
#: Category columns above this distinct share get a note about the unknown bucket.
HIGH_CARDINALITY = 0.5


class TabularKind(Kind):
    encoder = False

    def probe_value(self, entry: dict[str, Any]) -> Any:
        return self.example_value(entry)


class NumericKind(TabularKind):
    name = "numeric"
    arrow_expected = "integers or floats"
    column_dtype = "float64"
    recognise_order = 60

    def recognise(self, p: Any) -> str | None:
        if p.form != "numeric":
            return None
        return f"{p.values.dtype}, {p.n_distinct} distinct values, {p.n_missing} missing"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        return list(entry["median"] + entry["std"] * rng.standard_normal(n))

    def example_value(self, entry: dict[str, Any]) -> Any:
        value = float(entry["median"])
        return int(value) if value.is_integer() and abs(value) < 2**53 else value


class CategoryKind(TabularKind):
    name = "category"
    arrow_expected = "strings, integers or floats"
    recognise_order = 50  # after text (free text is strings too), before numbers (ID-named codes)

    def recognise(self, p: Any) -> str | None:
        if p.form == "categorical":
            return f"categorical dtype, {p.n_distinct} distinct values, {p.n_missing} missing"
        if p.form == "numeric" and p.id_name and p.integer_valued:
            # user_id, store_id: repeated integer codes of entities; their size means nothing.
            return f"integer codes with an ID-like name: {p.n_distinct} distinct values, {p.n_missing} missing"
        if p.form != "strings":
            return None
        reason = f"{p.n_distinct} distinct values, {p.n_missing} missing"
        distinct = p.n_distinct / p.n
        if distinct > HIGH_CARDINALITY:
            reason += f"; high cardinality ({distinct:.0%} distinct): rare values share the unknown bucket"
        return reason

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        categories = entry["categories"]
        return [categories[i % len(categories)] if categories else "x" for i in range(n)]

    def example_value(self, entry: dict[str, Any]) -> Any:
        return entry["categories"][0] if entry["categories"] else None


class BinaryKind(TabularKind):
    name = "binary"
    arrow_expected = "the training values' type"
    recognise_order = 8  # two values are a flag whatever they look like (paths, dates, numbers)

    def recognise(self, p: Any) -> str | None:
        if p.form == "objects" or not (p.form == "bool" or p.n_distinct == 2):
            return None
        from waypost.kinds.recognise import short

        shown = ", ".join(repr(short(v, 20)) for v in sorted(p.values.unique(), key=str))
        return f"2 distinct values ({shown}), {p.n_missing} missing"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        return [entry["values"][i % len(entry["values"])] for i in range(n)]

    def example_value(self, entry: dict[str, Any]) -> Any:
        from waypost.runtime.features import binary_choices

        return binary_choices(entry["values"])[0]


class DatetimeKind(TabularKind):
    name = "datetime"
    arrow_expected = "timestamps, dates or ISO 8601 strings"
    recognise_order = 30  # before identifiers: distinct timestamps are not row IDs

    def recognise(self, p: Any) -> str | None:
        if p.form == "datetime":
            return f"{p.values.dtype} values, {p.n_missing} missing"
        if p.form != "strings":
            return None
        from waypost.kinds.recognise import short

        share = p.date_share()
        if share < DATETIME_MIN_FRACTION:
            return None
        return f"strings that parse as dates ({share:.0%} of sampled values), e.g. {short(p.string_sample.iloc[0])!r}"

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        return [entry["median"]] * n

    def example_value(self, entry: dict[str, Any]) -> Any:
        return str(entry["median"])


for _kind in (NumericKind(), CategoryKind(), BinaryKind(), DatetimeKind()):
    register_kind(_kind)
