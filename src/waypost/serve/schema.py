"""Request/response schemas generated from a bundle's features.

Each feature becomes one required field of a pydantic model (explicit ``null`` allowed) whose
accepted JSON values are the feature kind's contract (``waypost.serve.fields``): the model runs in
strict mode, so a string is never read as a number, a boolean never as 0/1, and a binary takes only
its two training values. Column names can be anything ("mean radius", "class", "model_config"), so
the Python attribute is a safe positional name (``f0``, ``f1`` ...) and the column name is the
alias: requests, validation errors and the OpenAPI schema all use the column name.

Parsing does not go through a ``Record | list[Record]`` union: pydantic reports a failed union once
per member, with locations like ``body.Record.x`` and ``body.list[Record]``. The first
non-whitespace byte of the body decides instead (``{`` one record, ``[`` a list), so every error
location is ``body.<column>`` or ``body.<index>.<column>`` (``body.columns.<column>.<index>`` for
``/predict/columns``), with one message per value saying what the field expects.

Image features arrive as base64 strings (standard or URL-safe alphabet, padding optional, optionally
behind a ``data:image/<type>;base64,`` prefix) and are decoded to bytes here, before the bundle
sees them. This is a security boundary, not a convenience: the runtime reads a ``str`` image cell
as a file path, so a string that reached it would let a client make the server open any file it
can name. A string that is not base64 of image bytes (magic bytes checked) is a 422 naming the
field; a file path is never valid base64 (``.`` is not in the alphabet) or decodes to non-image bytes.
The image's header is read too (not its pixels): more than ``max_image_pixels`` pixels is a 422, so
a 27 KB PNG claiming 13000x13000 pixels (a decompression bomb) is never decoded.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from typing import Annotated, Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from waypost.serve.defaults import MAX_IMAGE_PIXELS
from waypost.serve.fields import IMAGE_EXPECTED, FieldContract, column_states, contract

_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
_URLSAFE = str.maketrans("-_", "+/")
# errors about the shape of the body or a column, kept as pydantic words them; every other error at
# a value's location is a wrong value, worded by the feature's contract
_STRUCTURAL = frozenset({"missing", "extra_forbidden", "too_short", "list_type", "model_type", "json_invalid",
                         "model_attributes_type", "dict_type", "duplicate"})

RECORD_MODEL_NAME = "PredictRecord"
COLUMNS_MODEL_NAME = "PredictColumns"


class ImageTooLarge(ValueError):
    """An image declaring more than ``max_image_pixels`` pixels (its header read, nothing decoded)."""


class RequestError(Exception):
    """A request body that does not fit the schema: ``errors`` are FastAPI-style error dicts."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(error_message(errors))
        self.errors = errors


def error_message(errors: list[dict[str, Any]], limit: int = 5) -> str:
    """One line naming each field at fault: ``body.bill_length_mm: Field required; ...``."""
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:limit]]
    if len(errors) > limit:
        parts.append(f"... and {len(errors) - limit} more")
    return "; ".join(parts)


def _shown(value: Any) -> str:
    import json

    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number beyond the float64 range (+-1.8e308)"
    if isinstance(value, str) and len(value) > 60:
        value = value[:57] + "..."
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return type(value).__name__


class _Cleaner:
    """pydantic errors -> one error per value at ``body...<column>[.<row>]``, worded by the contract."""

    def __init__(self, contracts: dict[str, FieldContract]):
        self.contracts = contracts

    def __call__(self, errors: list[Any], layout: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[tuple] = set()
        for e in errors:
            loc = list(e["loc"])
            column, cut = self._column(loc, layout)
            if column is not None and e["type"] not in _STRUCTURAL:
                loc = loc[:cut]
                key = tuple(loc)
                if key in seen:  # a union reports each member's refusal: one error per value
                    continue
                seen.add(key)
                c = self.contracts[column]
                item = {"type": "value_error", "loc": ["body", *loc],
                        "msg": f"{c.kind} feature: expected {c.expected}, got {_shown(e.get('input'))}"}
            else:
                item = {"type": e["type"], "loc": ["body", *loc], "msg": e["msg"]}
            value = e.get("input")
            if (isinstance(value, (int, bool)) or (isinstance(value, float) and math.isfinite(value))
                    or (isinstance(value, str) and len(value) <= 200)):
                item["input"] = value  # echo short scalars only, never whole records or raw bytes
            out.append(item)
        return out

    def _column(self, loc: list[Any], layout: str) -> tuple[str | None, int]:
        """The feature a value error is about, and where its location ends (the union member's
        name pydantic appends is cut off)."""
        if layout == "record" and loc and loc[0] in self.contracts:
            return loc[0], 1
        if layout == "records" and len(loc) >= 2 and isinstance(loc[0], int) and loc[1] in self.contracts:
            return loc[1], 2
        if (layout == "columns" and len(loc) >= 3 and loc[0] == "columns" and loc[1] in self.contracts
                and isinstance(loc[2], int)):
            return loc[1], 3
        return None, 0


def decode_image(value: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> bytes:
    """The image bytes in a base64 string; ValueError saying why otherwise (never touches the disk)."""
    data = value
    prefix = _DATA_URL.match(data)
    if prefix:
        data = data[prefix.end():]
    elif data[:5].lower() == "data:":
        raise ValueError("a data URL must look like data:image/<type>;base64,<data>")
    if any(c in data for c in " \t\r\n"):
        data = "".join(data.split())  # MIME base64 wraps lines at 76 characters
    if not data:
        raise ValueError("empty string")
    data = data.translate(_URLSAFE) + "=" * (-len(data) % 4)
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    return image_bytes(blob, f"the {len(blob)} decoded bytes", max_pixels)


def image_bytes(blob: Any, what: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> bytes:
    """`blob` when it starts like an image file the runtime decodes and declares at most
    `max_pixels` pixels; ValueError naming `what` otherwise. The one check of every image a client
    sends (base64 in JSON, binary in Arrow). Only the header is read: a bomb is refused undecoded."""
    from waypost.runtime.images import image_size, sniff_image_bytes  # Pillow: only image bundles pay for it

    if not isinstance(blob, bytes) or sniff_image_bytes(blob) is None:
        raise ValueError(f"{what}: not a PNG, JPEG, GIF, BMP, WEBP or TIFF image")
    if max_pixels:
        size = image_size(blob)
        if size is not None and size[0] * size[1] > max_pixels:
            raise ImageTooLarge(f"{what}: the image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, more than "
                                f"max_image_pixels={max_pixels:,} (refused undecoded: a decompression bomb or an "
                                "image far larger than the model's input)")
    return blob


def image_digest(blob: bytes) -> str:
    """What the prediction log keeps of an image: its SHA-256 and size, not megabytes of base64."""
    return f"sha256:{hashlib.sha256(blob).hexdigest()};bytes={len(blob)}"


def decode_images(values: list[Any], loc: Any, max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[bytes]:
    """Decode one image column; RequestError naming every bad cell (``loc(i)`` is its location)."""
    out: list[bytes] = []
    errors: list[dict[str, Any]] = []
    for i, v in enumerate(values):
        try:
            if not isinstance(v, str):
                raise ValueError(f"got {'null' if v is None else type(v).__name__}")
            out.append(decode_image(v, max_pixels))
        except ImageTooLarge as exc:
            errors.append({"type": "image_too_large", "loc": loc(i), "msg": f"image feature: {exc}"})
        except ValueError as exc:
            errors.append({"type": "image_base64", "loc": loc(i),
                           "msg": f"{IMAGE_EXPECTED}: {exc} (the server never opens file paths or URLs)"})
    if errors:
        raise RequestError(errors)
    return out


_STRICT = ConfigDict(strict=True, extra="forbid", validate_by_name=False, validate_by_alias=True)


class RecordSchema:
    """The request schema of one bundle: a pydantic model per record (``/predict``) and one of
    per-column arrays (``/predict/columns``), both strict, built from the same field contracts.

    ``preprocessor`` is the bundle's ``manifest["preprocessor"]``: it holds each binary's two
    values (the schema's ``enum``) and the fitted state the examples come from."""

    def __init__(self, features: dict[str, str], preprocessor: dict[str, Any] | None = None, *,
                 max_image_pixels: int | None = MAX_IMAGE_PIXELS):
        from waypost.kinds import get_kind, is_registered

        unknown = {c: t for c, t in features.items() if not is_registered(t)}
        if unknown:
            raise ValueError(f"waypost serve handles the registered column kinds; the bundle has {unknown}")
        if not features:
            raise ValueError("the bundle has no input features")
        self.features = dict(features)
        self.columns = list(features)
        # base64 file bytes (images): decoded and checked here; logged as digests
        self.media_columns = [c for c, t in features.items() if get_kind(t).media]
        self.dtypes = {c: get_kind(t).column_dtype for c, t in features.items() if get_kind(t).column_dtype}
        self.max_image_pixels = max_image_pixels
        states = column_states(preprocessor)
        self.contracts = {c: contract(t, states.get(c)) for c, t in features.items()}
        self._clean = _Cleaner(self.contracts)
        self._attrs = [f"f{i}" for i in range(len(self.columns))]
        fields = {attr: (self.contracts[col].annotation, _field(col, self.contracts[col]))
                  for attr, col in zip(self._attrs, self.columns)}
        self.model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            RECORD_MODEL_NAME, __config__=_STRICT,
            __doc__="One row: every feature of the bundle is required; null marks a missing value.",
            **fields,
        )
        self._one = TypeAdapter(self.model)
        self._many = TypeAdapter(Annotated[list[self.model], Field(min_length=1)])  # type: ignore[valid-type]
        arrays = {attr: (Annotated[list[self.contracts[col].annotation], Field(min_length=1)],  # type: ignore[name-defined]
                         Field(..., alias=col, title=col,
                               description=f"{self.contracts[col].kind} feature: one value per row"))
                  for attr, col in zip(self._attrs, self.columns)}
        data = create_model(f"{COLUMNS_MODEL_NAME}Data", __config__=_STRICT,  # type: ignore[call-overload]
                            __doc__="One array per feature, all of one length (one value per row).", **arrays)
        self.columns_model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            COLUMNS_MODEL_NAME, __config__=_STRICT, columns=(data, Field(...)),
            __doc__="Rows as columns: every feature is a required array; all arrays have the same length.",
        )
        self._columns = TypeAdapter(self.columns_model)

    # ---- /predict ----------------------------------------------------------------------------
    def parse(self, body: bytes) -> tuple[dict[str, list[Any]], int]:
        """Validate a JSON body (one record or a list): returns (columns, number of rows), image
        columns decoded to bytes. Raises RequestError naming the field at fault."""
        start = body.lstrip()[:1]
        try:
            if start == b"{":
                models = [self._one.validate_json(body)]
                single = True
            elif start == b"[":
                models = self._many.validate_json(body)
                single = False
            else:
                raise RequestError(
                    [{"type": "model_type", "loc": ["body"], "msg": "expected a JSON object (one record) "
                      "or a non-empty JSON list of records"}]
                )
        except ValidationError as exc:
            layout = "record" if start == b"{" else "records"
            raise RequestError(self._clean(exc.errors(include_url=False), layout)) from None
        attrs = self._attrs
        columns = {col: [getattr(m, a) for m in models] for a, col in zip(attrs, self.columns)}
        if self.media_columns:  # base64 -> bytes here, always: a str would reach the runtime as a path
            errors: list[dict[str, Any]] = []
            for col in self.media_columns:
                where = (lambda i, c=col: ["body", c]) if single else (lambda i, c=col: ["body", i, c])
                try:
                    columns[col] = decode_images(columns[col], where, self.max_image_pixels)
                except RequestError as exc:
                    errors += exc.errors
            if errors:
                raise RequestError(errors)
        return columns, len(models)

    # ---- /predict/columns (JSON) -------------------------------------------------------------
    def parse_columns(self, body: bytes) -> tuple[dict[str, Any], int]:
        """Validate ``{"columns": {...}}``: (columns ready for the runtime, number of rows).
        Numeric columns become float64 arrays (null -> NaN), images bytes."""
        try:
            data = self._columns.validate_json(body).columns
        except ValidationError as exc:
            raise RequestError(self._clean(exc.errors(include_url=False), "columns")) from None
        columns = {col: getattr(data, a) for a, col in zip(self._attrs, self.columns)}
        lengths = {c: len(v) for c, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise RequestError([{"type": "value_error", "loc": ["body", "columns"],
                                 "msg": f"columns must be arrays of one length; got {lengths}"}])
        errors: list[dict[str, Any]] = []
        for col in self.media_columns:
            try:
                columns[col] = decode_images(columns[col], lambda i, c=col: ["body", "columns", c, i],
                                             self.max_image_pixels)
            except RequestError as exc:
                errors += exc.errors
        if errors:
            raise RequestError(errors[:20])
        for col, dtype in self.dtypes.items():  # one C loop instead of a float object per value downstream
            columns[col] = np.asarray(columns[col], dtype=dtype)
        return columns, next(iter(lengths.values()))

    # ---- OpenAPI -----------------------------------------------------------------------------
    def openapi_components(self) -> dict[str, Any]:
        """JSON schemas to add under ``components.schemas``."""
        out: dict[str, Any] = {}
        for model in (self.model, self.columns_model):
            schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            out.update(schema.pop("$defs", {}))
            out[model.__name__] = schema
        return out

    def example(self) -> dict[str, Any]:
        """A record every field of which is valid (values from the fitted state where the bundle has it)."""
        return {col: c.example for col, c in self.contracts.items()}

    def request_body(self) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{RECORD_MODEL_NAME}"}
        return {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [ref, {"type": "array", "items": ref, "minItems": 1}],
                        "title": "One record or a non-empty list of records",
                    },
                    "example": self.example(),
                }
            },
        }

    def columns_request_body(self, arrow_type: str) -> dict[str, Any]:
        example = {"columns": {col: [v, v] for col, v in self.example().items()}}
        return {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{COLUMNS_MODEL_NAME}"}, "example": example},
            arrow_type: {"schema": {"type": "string", "format": "binary",
                                    "description": "an Arrow IPC stream with one column per feature"}}}}


def _field(col: str, c: FieldContract) -> Any:
    return Field(..., alias=col, title=col, description=f"{c.kind} feature: {c.expected}")


class PredictResponse(BaseModel):
    """What POST /predict returns: one entry per input record, in order."""

    predictions: list[Any] = Field(description="predicted label (classification) or value (regression)")
    probabilities: Optional[list[dict[str, float]]] = Field(
        default=None, description="classification only: one {label: probability} per record"
    )
    model_version: str
    input_warnings: Optional[dict[str, dict[str, int]]] = Field(
        default=None, description="present when some of the request's values were not taken as sent: "
        '{"unseen": {column: count}} for categories outside the training vocabulary (predicted as the '
        'unknown bucket), {"clipped": {column: count}} for numbers outside the training range (clipped to it)')


class ErrorResponse(BaseModel):
    detail: Any
    message: str


class ErrorItem(BaseModel):
    """One thing wrong with a request: where (``loc``: ``body``, then the row index and/or column),
    what kind (``type``) and what was expected (``msg``)."""

    type: str
    loc: list[Any]
    msg: str
    input: Any = None


class ValidationErrorResponse(BaseModel):
    """A 422: ``detail`` lists each value or field at fault; ``message`` is the first few as one line."""

    detail: list[ErrorItem]
    message: str


class ColumnsResponse(BaseModel):
    """What POST /predict/columns answers in JSON: one array per output, in row order."""

    predictions: list[Any] = Field(description="predicted label (classification) or value (regression) per row")
    probabilities: Optional[dict[str, list[float]]] = Field(
        default=None, description="classification only: {label: [probability per row]}")
    model_version: str
    input_warnings: Optional[dict[str, dict[str, int]]] = Field(
        default=None, description="as in PredictResponse: counts of values not taken as sent, by issue and column")
