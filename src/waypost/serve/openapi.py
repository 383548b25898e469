"""What the server says about itself: the OpenAPI document and the offline /docs and /redoc pages.

The OpenAPI document lists every status code each operation can answer, with its body schema and
headers (a 503 from a prediction carries Retry-After; a 422 lists each value at fault). The 200
schemas are the bundle's: ``predictions`` holds the bundle's labels (an ``enum``) or numbers,
``probabilities`` has one required key per class. schemathesis holds the server to all of it
(tests/test_serve_schema_fuzz.py).

/docs (Swagger UI) and /redoc load their JavaScript and CSS from the ``fastapi-offline`` package
(part of ``waypost[serve]``) under ``/docs/static``, never from a CDN: a server on a network without
internet access, the usual place for a model server, shows its docs.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from waypost.serve.columnar import ARROW_STREAM
from waypost.serve.guard import API_KEY_HEADER

log = logging.getLogger("waypost.serve")

DOCS_STATIC = "/docs/static"
_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_INVALID = {"$ref": "#/components/schemas/ValidationErrorResponse"}
_RETRY = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                          "schema": {"type": "integer", "minimum": 1}}}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def prediction_responses(columns: bool, key: bool) -> dict[int | str, Any]:
    """Every answer of POST /predict (``columns=False``) or /predict/columns."""
    ok = "ColumnsResponse" if columns else "PredictResponse"
    out: dict[int | str, Any] = {
        200: _json({"$ref": f"#/components/schemas/{ok}"},
                   "one prediction per row, in order" + (f"; an Arrow IPC stream ({ARROW_STREAM}) with `prediction` "
                                                        "and `proba_<label>` columns when the request was Arrow"
                                                        if columns else "")),
        400: _json(_ERROR, "invalid Content-Length header"),
        413: _json(_ERROR, "body larger than max_body_bytes"),
        415: _json(_ERROR, "Content-Type is not " + ("application/json or " + ARROW_STREAM if columns
                                                      else "application/json")),
        422: _json(_INVALID, "the body does not fit the schema: a field missing, unknown or of the wrong type, a "
                             "value the feature does not accept, an image that is not base64 of image bytes or has "
                             "more than max_image_pixels pixels, or a row the model refuses; `detail` names each "
                             "one by location (body, row, column)"),
        500: _json(_ERROR, "the model failed; the details are in the server's log"),
        503: _json(_ERROR, "overloaded: the queue is full, the request waited timeout_ms without reaching the "
                           "model, or the server is stopping; retry after Retry-After seconds", _RETRY),
    }
    if columns:
        out[200]["content"][ARROW_STREAM] = {"schema": {"type": "string", "format": "binary"}}
    if key:
        out[401] = _json(_ERROR, f"missing or wrong {API_KEY_HEADER} header")
    return out


def key_responses(key: bool) -> dict[int | str, Any]:
    return {401: _json(_ERROR, f"missing or wrong {API_KEY_HEADER} header")} if key else {}


def label_schema(classes: list[Any] | None) -> dict[str, Any]:
    """One prediction: a class label (in its JSON type) or a regression value."""
    if classes is None:
        return {"type": "number"}
    kinds = {type(c) for c in classes}
    json_type = ("boolean" if kinds == {bool} else "integer" if kinds == {int} else
                 "number" if kinds <= {int, float} else "string" if kinds == {str} else None)
    return {"enum": list(classes), **({"type": json_type} if json_type else {})}


def refine_answers(components: dict[str, Any], classes: list[Any] | None, class_keys: list[str] | None) -> None:
    """The generic PredictResponse / ColumnsResponse schemas made the bundle's own."""
    label = label_schema(classes)
    for name, per_row in (("PredictResponse", True), ("ColumnsResponse", False)):
        schema = components.get(name)
        if schema is None:
            continue
        props = schema["properties"]
        props["predictions"] = {**props["predictions"], "items": label, "minItems": 1}
        if class_keys is None:  # regression: never sent
            props.pop("probabilities", None)
            continue
        number = {"type": "number"}
        value = number if per_row else {"type": "array", "items": number, "minItems": 1}
        probs = {"type": "object", "properties": {k: value for k in class_keys}, "required": list(class_keys),
                 "additionalProperties": False}
        props["probabilities"] = {"description": props["probabilities"].get("description", ""),
                                  **({"type": "array", "items": probs, "minItems": 1} if per_row else probs)}
        schema.setdefault("required", [])
        if "probabilities" not in schema["required"]:
            schema["required"].append("probabilities")


def install_docs(app: Any, title: str) -> bool:
    """Swagger UI at /docs and ReDoc at /redoc with their assets served from the installed
    ``fastapi-offline`` package. False (and no /docs) when it is missing."""
    try:
        from importlib.resources import files

        static = files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        log.warning("fastapi-offline is not installed: /docs and /redoc are off (pip install 'waypost[serve]')")
        return False
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_STATIC, StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json", title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # its default sends the schema to swagger.io
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png", with_google_fonts=False)
    return True
