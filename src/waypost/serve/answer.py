"""What every prediction endpoint shares once its body is parsed: the batcher call with its error
mapping, the prediction log, and the JSON payloads.

`/predict` (records), `/predict/columns` (JSON columns) and its Arrow IPC form differ only in how
the body is parsed and the answer encoded; a 503 when the queue is full, a 422 for data the model
refuses, a 500 that hides the details, and the log row of every prediction are the same code.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from waypost.errors import DataError
from waypost.serve.batcher import REQUEST_ARRIVAL, BatchResult, Overloaded
from waypost.serve.schema import RequestError, image_digest

log = logging.getLogger("waypost.serve")

Payload = tuple[int, bytes, list[tuple[bytes, bytes]]]

# built once, not per call; allow_nan=False: a NaN can never leave as the bare `NaN` that is not JSON
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False).encode


def payload(code: int, content: Any, extra: tuple = ()) -> Payload:
    body = _ENCODE(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    return code, body, headers


def error_payload(code: int, message: str, detail: Any = None, extra: tuple = ()) -> Payload:
    return payload(code, {"detail": detail if detail is not None else message, "message": message}, extra)


def finite(values: list[Any]) -> list[Any]:
    """NaN/inf are not JSON: null. (The runtime never answers them; a label can be a float NaN only
    if the training labels held one.)"""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


def add_warnings(st: Any, content: dict[str, Any], result: BatchResult) -> None:
    """The request's input warnings into the answer (only when there are some) and /metrics."""
    if result.issues:
        content["input_warnings"] = result.issues
        st.metrics.count_issues(result.issues)


async def infer(st: Any, columns: dict[str, Any], n: int, loc: list[Any]) -> BatchResult | Payload:
    """The batcher's result, or the error payload to answer instead (never raises). ``loc`` is the
    body location a DataError from the model is reported at. The deadline (``timeout_ms``) counts
    from ``REQUEST_ARRIVAL``, set by the server's middleware when the request came in, so reading and
    validating the body count too."""
    try:
        return await st.batcher.submit(columns, n, REQUEST_ARRIVAL.get())
    except Overloaded as exc:
        return error_payload(503, str(exc), extra=((b"retry-after", str(exc.retry_after).encode()),))
    except DataError as exc:
        return error_payload(422, str(exc), [{"type": "data_error", "loc": loc, "msg": str(exc)}])
    except Exception as exc:  # noqa: BLE001 - the details go to the server log, not to the client
        log.error("prediction failed: %r", exc, exc_info=exc)
        return error_payload(500, f"internal error: {type(exc).__name__}")


async def log_request(st: Any, columns: dict[str, Any], result: BatchResult) -> Payload | None:
    """Append one request's rows to the prediction log (columnar: no per-row work on this thread
    beyond hashing images, which the log keeps as digests rather than bytes).

    With ``durability="answered"`` this returns only once the rows are committed, and returns the
    503 to answer instead of the prediction when they could not be (a 200 is always in the log);
    ``async`` returns at once and counts rows the log had to drop."""
    log = st.predlog
    if log is None:
        return None
    images = st.schema.media_columns
    inputs = {c: [image_digest(b) if isinstance(b, bytes) else None for b in v] if c in images else v
              for c, v in columns.items()}
    proba = result.proba if st.class_keys is not None else None
    if log.durability != "answered":
        if log.log_columns(st.version, inputs, result.prediction, proba, st.class_keys, result.latency_ms) == 0:
            st.metrics.log_dropped.inc(len(result.prediction))
        return None
    loop = asyncio.get_running_loop()
    committed = loop.create_future()

    def on_commit(error: BaseException | None) -> None:  # the writer thread
        loop.call_soon_threadsafe(_settle, committed, error)

    queued = log.log_columns(st.version, inputs, result.prediction, proba, st.class_keys, result.latency_ms,
                             on_commit=on_commit)
    error = await committed if queued else (log.error or RuntimeError("the log is full"))
    if error is None:
        return None
    st.metrics.log_dropped.inc(len(result.prediction))
    log_error = f"prediction log unavailable ({error}); the prediction was not answered because it could not be logged"
    return error_payload(503, log_error, extra=((b"retry-after", b"1"),))


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)


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
    add_warnings(st, content, result)
    failed = await log_request(st, columns, result)
    return failed or payload(200, content)
