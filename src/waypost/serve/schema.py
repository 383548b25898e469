"""Request/response schemas generated from a bundle's features.

Each feature becomes one required field of a pydantic model (explicit ``null`` allowed) whose Python
type follows the feature type. Column names can be anything ("mean radius", "class", "model_config"),
so the Python attribute is a safe positional name (``f0``, ``f1`` ...) and the column name is the
alias: requests, validation errors and the OpenAPI schema all use the column name.

Parsing does not go through a ``Record | list[Record]`` union: pydantic reports a failed union once
per member, with locations like ``body.Record.x`` and ``body.list[Record]``. The first
non-whitespace byte of the body decides instead (``{`` one record, ``[`` a list), so every error
location is ``body.<column>`` or ``body.<index>.<column>``.

Image features arrive as base64 strings (standard or URL-safe alphabet, padding optional, optionally
behind a ``data:image/<type>;base64,`` prefix) and are decoded to bytes here, before the bundle
sees them. This is a security boundary, not a convenience: the runtime reads a ``str`` image cell
as a file path, so a string that reached it would let a client make the server open any file it
can name. A string that is not base64 of image bytes (magic bytes checked) is a 422 naming the
field; a file path is never valid base64 (``.`` is not in the alphabet) or decodes to non-image bytes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

# feature type -> accepted JSON value types. Missing values are an explicit null.
FEATURE_TYPES: dict[str, Any] = {
    "numeric": Optional[float],
    "category": Union[str, int, float, None],
    "binary": Union[str, bool, int, float, None],
    "datetime": Optional[str],
    "image": str,  # base64; null is refused here (a missing image cannot be predicted)
    "text": Optional[str],  # null is an empty text, as at training time
}
IMAGE_EXPECTED = ("expected a base64-encoded image (standard or URL-safe base64, optionally "
                  "prefixed with data:image/<type>;base64,)")
_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
_URLSAFE = str.maketrans("-_", "+/")

RECORD_MODEL_NAME = "PredictRecord"


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


def _clean(errors: list[Any], prefix: tuple[Any, ...]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        item = {"type": e["type"], "loc": [*prefix, *e["loc"]], "msg": e["msg"]}
        value = e.get("input")
        if isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 200):
            item["input"] = value  # echo short scalars only, never whole records or raw bytes
        out.append(item)
    return out


def decode_image(value: str) -> bytes:
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
    return image_bytes(blob, f"the {len(blob)} decoded bytes")


def image_bytes(blob: Any, what: str) -> bytes:
    """`blob` when it starts like an image file the runtime decodes; ValueError naming `what` otherwise.
    The one check of every image a client sends (base64 in JSON, binary in Arrow)."""
    from waypost.runtime.images import sniff_image_bytes  # Pillow: only image bundles pay for it

    if not isinstance(blob, bytes) or sniff_image_bytes(blob) is None:
        raise ValueError(f"{what}: not a PNG, JPEG, GIF, BMP, WEBP or TIFF image")
    return blob


def image_digest(blob: bytes) -> str:
    """What the prediction log keeps of an image: its SHA-256 and size, not megabytes of base64."""
    return f"sha256:{hashlib.sha256(blob).hexdigest()};bytes={len(blob)}"


def decode_images(values: list[Any], loc: Any) -> list[bytes]:
    """Decode one image column; RequestError naming every bad cell (``loc(i)`` is its location)."""
    out: list[bytes] = []
    errors: list[dict[str, Any]] = []
    for i, v in enumerate(values):
        try:
            if not isinstance(v, str):
                raise ValueError(f"got {'null' if v is None else type(v).__name__}")
            out.append(decode_image(v))
        except ValueError as exc:
            errors.append({"type": "image_base64", "loc": loc(i),
                           "msg": f"{IMAGE_EXPECTED}: {exc} (the server never opens file paths or URLs)"})
    if errors:
        raise RequestError(errors)
    return out


class RecordSchema:
    """The request schema of one bundle: a pydantic model per record plus fast JSON parsing."""

    def __init__(self, features: dict[str, str]):
        unknown = {c: t for c, t in features.items() if t not in FEATURE_TYPES}
        if unknown:
            raise ValueError(
                f"waypost serve handles {sorted(FEATURE_TYPES)} features; the bundle has {unknown}"
            )
        if not features:
            raise ValueError("the bundle has no input features")
        self.features = dict(features)
        self.columns = list(features)
        self.image_columns = [c for c, t in features.items() if t == "image"]
        self._attrs = [f"f{i}" for i in range(len(self.columns))]
        fields = {attr: (FEATURE_TYPES[features[col]], _field(col, features[col]))
                  for attr, col in zip(self._attrs, self.columns)}
        self.model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            RECORD_MODEL_NAME,
            __config__=ConfigDict(extra="forbid", validate_by_name=False, validate_by_alias=True),
            __doc__="One row: every feature of the bundle is required; null marks a missing value.",
            **fields,
        )
        self._one = TypeAdapter(self.model)
        self._many = TypeAdapter(Annotated[list[self.model], Field(min_length=1)])  # type: ignore[valid-type]

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
            raise RequestError(_clean(exc.errors(include_url=False), ("body",))) from None
        attrs = self._attrs
        columns = {col: [getattr(m, a) for m in models] for a, col in zip(attrs, self.columns)}
        if self.image_columns:  # base64 -> bytes here, always: a str would reach the runtime as a path
            errors: list[dict[str, Any]] = []
            for col in self.image_columns:
                where = (lambda i, c=col: ["body", c]) if single else (lambda i, c=col: ["body", i, c])
                try:
                    columns[col] = decode_images(columns[col], where)
                except RequestError as exc:
                    errors += exc.errors
            if errors:
                raise RequestError(errors)
        return columns, len(models)

    def openapi_components(self) -> dict[str, Any]:
        """JSON schemas to add under ``components.schemas``."""
        schema = self.model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        defs = schema.pop("$defs", {})
        return {RECORD_MODEL_NAME: schema, **defs}

    def request_body(self) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{RECORD_MODEL_NAME}"}
        example = {col: _example(t) for col, t in self.features.items()}
        return {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [ref, {"type": "array", "items": ref, "minItems": 1}],
                        "title": "One record or a non-empty list of records",
                    },
                    "example": example,
                }
            },
        }


def _field(col: str, ftype: str) -> Any:
    if ftype == "image":
        return Field(..., alias=col, description=f"image feature: {IMAGE_EXPECTED[len('expected '):]}",
                     json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/*"})
    return Field(..., alias=col, description=f"{ftype} feature")


# a 1x1 white PNG: the /docs example must be a real image, or "Try it out" answers 422
_PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR42mP4DwABAQEAHLCMmQAAAABJRU5ErkJggg=="


def _example(ftype: str) -> Any:
    return {"numeric": 0.0, "category": "a", "binary": True, "datetime": "2024-01-31T12:00:00",
            "image": _PNG_1PX, "text": "a short text"}[ftype]


class PredictResponse(BaseModel):
    """What POST /predict returns: one entry per input record, in order."""

    predictions: list[Any] = Field(description="predicted label (classification) or value (regression)")
    probabilities: Optional[list[dict[str, float]]] = Field(
        default=None, description="classification only: one {label: probability} per record"
    )
    model_version: str


class ErrorResponse(BaseModel):
    detail: Any
    message: str
