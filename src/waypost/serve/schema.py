"""Request/response schemas generated from a bundle's features.

Each feature becomes one required field of a pydantic model (explicit ``null`` allowed) whose Python
type follows the feature type. Column names can be anything ("mean radius", "class", "model_config"),
so the Python attribute is a safe positional name (``f0``, ``f1`` ...) and the column name is the
alias: requests, validation errors and the OpenAPI schema all use the column name.

Parsing does not go through a ``Record | list[Record]`` union: pydantic reports a failed union once
per member, with locations like ``body.Record.x`` and ``body.list[Record]``. The first
non-whitespace byte of the body decides instead (``{`` one record, ``[`` a list), so every error
location is ``body.<column>`` or ``body.<index>.<column>``.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

# feature type -> accepted JSON value types. Missing values are an explicit null.
FEATURE_TYPES: dict[str, Any] = {
    "numeric": Optional[float],
    "category": Union[str, int, float, None],
    "binary": Union[str, bool, int, float, None],
    "datetime": Optional[str],
}

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
        self._attrs = [f"f{i}" for i in range(len(self.columns))]
        fields = {
            attr: (FEATURE_TYPES[features[col]], Field(..., alias=col, description=f"{features[col]} feature"))
            for attr, col in zip(self._attrs, self.columns)
        }
        self.model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            RECORD_MODEL_NAME,
            __config__=ConfigDict(extra="forbid", validate_by_name=False, validate_by_alias=True),
            __doc__="One row: every feature of the bundle is required; null marks a missing value.",
            **fields,
        )
        self._one = TypeAdapter(self.model)
        self._many = TypeAdapter(Annotated[list[self.model], Field(min_length=1)])  # type: ignore[valid-type]

    def parse(self, body: bytes) -> tuple[dict[str, list[Any]], list[dict[str, Any]] | None, bool]:
        """Validate a JSON body: returns (columns, records, single).

        ``records`` are the validated rows as plain dicts (for the prediction log).
        Raises RequestError naming the field at fault.
        """
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
        return columns, models, single

    def record_dicts(self, models: list[BaseModel]) -> list[dict[str, Any]]:
        return [m.model_dump(by_alias=True) for m in models]

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


def _example(ftype: str) -> Any:
    return {"numeric": 0.0, "category": "a", "binary": True, "datetime": "2024-01-31T12:00:00"}[ftype]


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
