"""The request contract of one feature: which JSON values it accepts, its OpenAPI schema, and what
a refusal says.

Why strict: lax parsing turned ``"year": false`` into 0.0, ``"46.1"`` into 46.1 and a binary
``"sex": "yes"`` into a silently missing value; the client never learnt that its data was wrong, and
the answer was a prediction on values nobody sent. Each kind now takes exactly what its OpenAPI
schema says, in the JSON type the training data had, and nothing else:

| kind | accepted | OpenAPI |
|---|---|---|
| numeric | a JSON number (integer or decimal; not a string, not a boolean), finite, or null | ``number`` |
| category | a string or a number (not a boolean), or null | ``string`` / ``number`` |
| binary | one of the two training values in their JSON type, or null | ``enum`` |
| datetime | an ISO 8601 date or date-time string (``DATETIME_PATTERN``), or null | ``string`` + ``pattern`` |
| text | a string, or null (an empty text) | ``string`` |
| image | a base64 string of image bytes (never null, never a path) | ``string``, base64 |

A binary's two values are stored in the bundle as canonical strings (``manifest["preprocessor"]``):
"True"/"False" are JSON booleans, two numbers are those numbers, anything else the two strings.
Datetimes are what the runtime parses (``waypost.runtime.features._parse_one``) within numpy's
nanosecond range (years 1678-2261); the pattern checks the calendar (no 31 April, 29 February in
leap years only), so a value the schema allows is a value the runtime reads, and every refused
string is one it would have read as missing. The same definitions validate ``/predict`` records,
``/predict/columns`` JSON arrays (item by item) and, through ``columnar``, Arrow columns.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, Field, WithJsonSchema

from waypost.runtime.features import binary_choices

# ---- datetimes ----------------------------------------------------------------------------------
# [0-9], never \d: in Python and in pydantic's Rust regex \d matches any Unicode digit, in JSON
# Schema (ECMA-262) only ASCII ones.
_YEAR = r"(?:16(?:7[89]|[89][0-9])|1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9]|226[01])"  # 1678-2261
_LEAP = (r"(?:16(?:8[048]|9[26])|(?:1[7-9]|2[01])(?:0[48]|[2468][048]|[13579][26])|2000"
         r"|22(?:0[48]|[24][048]|[135][26]|60))")  # leap years in 1678-2261
_MONTH_DAY = (r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")
_TIME = r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
DATETIME_PATTERN = rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP}-02-29)(?:{_TIME})?$"
DATETIME_EXPECTED = ("an ISO 8601 date or date-time string: YYYY-MM-DD, optionally followed by THH:MM[:SS[.fraction]] "
                     "(T or a space) and Z or +HH:MM; years 1678-2261")
_DATETIME_RE = re.compile(DATETIME_PATTERN)

IMAGE_FORMAT = "base64-image"  # an OpenAPI format name: clients and fuzzers can plug in real images
IMAGE_EXPECTED = ("expected a base64-encoded image (standard or URL-safe base64, optionally "
                  "prefixed with data:image/<type>;base64,)")


def _datetime(value: str) -> str:
    """Pydantic has matched the pattern; the runtime must read it too (belt and braces: a value the
    schema accepts and the runtime turns into NaT would be a silent missing value)."""
    from waypost.runtime.features import _parse_one  # numpy only
    import numpy as np

    if np.isnat(_parse_one(value)):
        raise ValueError("not a date the runtime reads")
    return value


def is_datetime(value: str) -> bool:
    """The same rule as the pydantic field, for Arrow string columns."""
    if not isinstance(value, str) or not _DATETIME_RE.match(value) or value.endswith("\n"):
        return False
    try:
        _datetime(value)
    except ValueError:
        return False
    return True


# ---- binaries -----------------------------------------------------------------------------------
def _one_of(choices: list[Any]) -> Any:
    allowed = frozenset(choices)  # 1.0 == 1: a number is found whatever its JSON spelling

    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError("not one of the two training values")
        return value

    return check


def _show(values: list[Any]) -> str:
    import json

    return " or ".join(json.dumps(v) for v in values)


# ---- one feature --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldContract:
    """What one feature accepts: ``annotation`` for pydantic (the model runs in strict mode),
    ``schema`` for OpenAPI, ``expected`` for error messages, ``choices`` for binaries."""

    kind: str
    annotation: Any
    schema: dict[str, Any]
    expected: str
    example: Any
    choices: tuple[Any, ...] | None = None


_FINITE = Annotated[float, Field(allow_inf_nan=False)]
_NULL = {"type": "null"}
# a 1x1 white PNG: the /docs example must be a real image, or "Try it out" answers 422
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR42mP4DwABAQEAHLCMmQAAAABJRU5ErkJggg=="


def contract(kind: str, state: dict[str, Any] | None = None) -> FieldContract:
    """The contract of a feature of `kind` (`<kind>_contract` below: one per registered kind, here
    beside the server so the kinds never import it); `state` is its fitted preprocessor state
    (binary values, medians and categories for the examples), None when the bundle carries none."""
    from waypost.kinds import get_kind

    get_kind(kind)  # an unregistered kind: the registry's error, naming the known ones
    build = globals().get(f"{kind}_contract")
    if build is None:
        raise ValueError(f"waypost serve has no request field for column kind {kind!r} yet "
                         f"(add {kind}_contract to waypost.serve.fields)")
    return build(state or {})


def numeric_contract(state: dict[str, Any]) -> FieldContract:
    schema = {"anyOf": [{"type": "number"}, _NULL]}
    median = state.get("median")
    example = median if isinstance(median, (int, float)) and math.isfinite(median) else 0.0
    return FieldContract("numeric", Annotated[Optional[_FINITE], WithJsonSchema(schema)], schema,
                         "a finite JSON number (integer or decimal, not a string or a boolean) or null",
                         int(example) if float(example).is_integer() else example)


def category_contract(state: dict[str, Any]) -> FieldContract:
    schema = {"anyOf": [{"type": "string"}, {"type": "number"}, _NULL]}
    categories = state.get("categories") or ["a"]
    return FieldContract("category", Annotated[Union[str, int, _FINITE, None], WithJsonSchema(schema)], schema,
                         "a string, a number (not a boolean) or null", categories[0])


def binary_contract(state: dict[str, Any]) -> FieldContract:
    values = state.get("values")
    if not values or len(values) > 2:
        schema = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, _NULL]}
        return FieldContract("binary", Annotated[Union[bool, str, int, _FINITE, None], WithJsonSchema(schema)],
                             schema, "a string, a number, a boolean or null", True)
    choices = binary_choices(list(values))
    if all(isinstance(c, bool) for c in choices):
        schema = {"anyOf": [{"type": "boolean", "enum": choices}, _NULL]}
        annotation: Any = Optional[bool]
    elif all(isinstance(c, str) for c in choices):
        schema = {"anyOf": [{"type": "string", "enum": choices}, _NULL]}
        annotation = Optional[Literal[tuple(choices)]]  # type: ignore[valid-type]
    else:  # numbers: strict int/float first (no booleans), then membership
        schema = {"anyOf": [{"type": "number", "enum": choices}, _NULL]}
        annotation = Optional[Annotated[Union[int, _FINITE], AfterValidator(_one_of(choices))]]
    return FieldContract("binary", Annotated[annotation, WithJsonSchema(schema)], schema,
                         f"{_show(choices)} (the training values) or null", choices[0], tuple(choices))


def datetime_contract(state: dict[str, Any]) -> FieldContract:
    schema = {"anyOf": [{"type": "string", "pattern": DATETIME_PATTERN}, _NULL]}
    median = state.get("median")
    example = median if isinstance(median, str) and is_datetime(median) else "2024-01-31T12:00:00"
    annotation = Optional[Annotated[str, Field(pattern=DATETIME_PATTERN), AfterValidator(_datetime)]]
    return FieldContract("datetime", Annotated[annotation, WithJsonSchema(schema)], schema,
                         f"{DATETIME_EXPECTED}, or null", example)


def text_contract(state: dict[str, Any]) -> FieldContract:
    schema = {"anyOf": [{"type": "string"}, _NULL]}
    return FieldContract("text", Annotated[Optional[str], WithJsonSchema(schema)], schema,
                         "a string or null (null is an empty text)", "a short text")


def image_contract(state: dict[str, Any]) -> FieldContract:
    schema = {"type": "string", "format": IMAGE_FORMAT, "contentEncoding": "base64", "contentMediaType": "image/*"}
    return FieldContract("image", Annotated[str, WithJsonSchema(schema)], schema,
                         IMAGE_EXPECTED[len("expected "):], PNG_1PX)


def column_states(preprocessor: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Column name -> fitted state, from a bundle's ``manifest["preprocessor"]`` (every column, by kind)."""
    if not isinstance(preprocessor, dict):
        return {}
    from waypost.kinds.frame import encoder_columns, tabular_columns

    columns = encoder_columns(preprocessor) + tabular_columns(preprocessor)
    return {str(c["name"]): c for c in columns if isinstance(c, dict) and "name" in c}
