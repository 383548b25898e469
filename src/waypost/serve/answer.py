"""What every prediction endpoint shares once its body is parsed: the batcher call with its error
mapping, the prediction log, and the JSON payloads.

`/predict` (records), `/predict/columns` (JSON columns) and its Arrow IPC form differ only in how
the body is parsed and the answer encoded; a 503 when the queue is full, a 422 for data the model
refuses, a 500 that hides the details, and the log row of every prediction are the same code.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

from waypost.errors import DataError
from waypost.serve.batcher import BatchResult, Overloaded
from waypost.serve.schema import RequestError, image_digest

log = logging.getLogger("waypost.serve")

Payload = tuple[int, bytes, list[tuple[bytes, bytes]]]

_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode  # built once, not per call


def payload(code: int, content: Any, extra: tuple = ()) -> Payload:
    body = _ENCODE(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    return code, body, headers


def error_payload(code: int, message: str, detail: Any = None, extra: tuple = ()) -> Payload:
    return payload(code, {"detail": detail if detail is not None else message, "message": message}, extra)


def finite(values: list[Any]) -> list[Any]:
    """NaN/inf are not JSON: null."""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


async def infer(st: Any, columns: dict[str, Any], n: int, loc: list[Any]) -> BatchResult | Payload:
    """The batcher's result, or the error payload to answer instead (never raises). ``loc`` is the
    body location a DataError from the model is reported at."""
    try:
        return await st.batcher.submit(columns, n)
    except Overloaded as exc:
        return error_payload(503, str(exc), extra=((b"retry-after", str(exc.retry_after).encode()),))
    except DataError as exc:
        return error_payload(422, str(exc), [{"type": "data_error", "loc": loc, "msg": str(exc)}])
    except Exception as exc:  # noqa: BLE001 - the details go to the server log, not to the client
        log.error("prediction failed: %r", exc, exc_info=exc)
        return error_payload(500, f"internal error: {type(exc).__name__}")


def log_request(st: Any, columns: dict[str, Any], result: BatchResult) -> None:
    """Append one request's rows to the prediction log (columnar: no per-row work on this thread
    beyond hashing images, which the log keeps as digests rather than bytes)."""
    if st.predlog is None:
        return
    images = st.schema.image_columns
    inputs = {c: [image_digest(b) if isinstance(b, bytes) else None for b in v] if c in images else v
              for c, v in columns.items()}
    proba = result.proba if st.class_keys is not None else None
    if st.predlog.log_columns(st.version, inputs, result.prediction, proba, st.class_keys, result.latency_ms) == 0:
        st.metrics.log_dropped.inc(len(result.prediction))


async def predict_body(st: Any, body: bytes, arrival: Any) -> Payload:
    """POST /predict on a buffered body: (status, JSON bytes, headers). Never raises."""
    try:
        columns, n = st.schema.parse(body)
    except RequestError as exc:
        return error_payload(422, str(exc), exc.errors)
    finally:
        if arrival is not None:
            arrival.done()
    result = await infer(st, columns, n, ["body"])
    if not isinstance(result, BatchResult):
        return result
    content: dict[str, Any] = {"predictions": finite(result.prediction.tolist())}
    if result.proba is not None and st.class_keys is not None:
        keys = st.class_keys
        content["probabilities"] = [dict(zip(keys, row)) for row in result.proba.tolist()]
    content["model_version"] = st.version
    log_request(st, columns, result)
    return payload(200, content)
