"""`POST /predict/columns`: the high-throughput request format, one JSON array per column.

`/predict` validates every record with pydantic, which is right for one row and costs more than
the model for a thousand. Clients that score in bulk (a stream processor, a nightly job calling
the service) send `{"columns": {"age": [...], "city": [...]}}` instead: each column is validated in
one pass (numbers parsed by numpy), the answer is columnar too (`probabilities` maps each label to
a list), and the same batcher, metrics and prediction log serve both endpoints. Errors name the
column and the row, like `/predict`'s. Image columns are arrays of base64 strings, decoded to bytes
by the same function as `/predict`'s (never read as paths).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from waypost.errors import DataError
from waypost.serve.batcher import Overloaded
from waypost.serve.schema import RequestError, decode_images, image_digest

_SCALARS = (str, int, float, bool, type(None))


def _err(kind: str, loc: list[Any], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", "columns", *loc], "msg": msg}


def parse_columns(body: bytes, features: dict[str, str]) -> tuple[dict[str, Any], int]:
    """(columns ready for the runtime, number of rows); RequestError naming the field otherwise."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError([{"type": "json_invalid", "loc": ["body"], "msg": f"invalid JSON: {exc}"}]) from None
    if not isinstance(doc, dict) or set(doc) != {"columns"} or not isinstance(doc["columns"], dict):
        raise RequestError([{"type": "model_type", "loc": ["body"],
                             "msg": 'expected {"columns": {"<column>": [values, ...], ...}}'}])
    given = doc["columns"]
    errors = [_err("extra_forbidden", [c], "unknown column") for c in given if c not in features]
    errors += [_err("missing", [c], "Field required") for c in features if c not in given]
    if errors:
        raise RequestError(errors)
    lengths = {c: len(v) if isinstance(v, list) else -1 for c, v in given.items()}
    bad = [c for c, n in lengths.items() if n < 0]
    if bad:
        raise RequestError([_err("list_type", [c], "expected a JSON array of values") for c in bad])
    n = next(iter(lengths.values()))
    if n == 0 or any(v != n for v in lengths.values()):
        raise RequestError([{"type": "value_error", "loc": ["body", "columns"],
                             "msg": f"columns must be non-empty arrays of one length; got {lengths}"}])
    columns = {c: _column(c, features[c], given[c]) for c in features}
    return columns, n


def _column(name: str, ftype: str, values: list[Any]) -> Any:
    if ftype == "numeric":
        try:
            return np.asarray(values, dtype=np.float64)  # null -> NaN; "1.5" parses like /predict's
        except (TypeError, ValueError):
            i = next(i for i, v in enumerate(values) if not _is_number(v))
            raise RequestError([_err("float_parsing", [name, i], f"Input should be a valid number, got {values[i]!r}")]) from None
    if ftype == "image":
        return decode_images(values, lambda i: ["body", "columns", name, i])
    strings = ftype in ("datetime", "text")  # as /predict's schema: a string or null
    allowed = (str, type(None)) if strings else _SCALARS
    for i, v in enumerate(values):
        if not isinstance(v, allowed):
            what = "a string or null" if strings else "a scalar value"
            raise RequestError([_err("type_error", [name, i], f"{ftype} column expects {what}, got {v!r}")])
    return values


def _is_number(v: Any) -> bool:
    if v is None:
        return True
    try:
        float(v)
        return not isinstance(v, (list, dict))
    except (TypeError, ValueError):
        return False


async def predict_columns_body(st: Any, body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON bytes and headers for one columnar request. Never raises."""
    from waypost.serve.app import _error_payload, _finite, _payload, log

    try:
        columns, n = parse_columns(body, st.schema.features)
    except RequestError as exc:
        return _error_payload(422, str(exc), exc.errors)
    try:
        result = await st.batcher.submit(columns, n)
    except Overloaded as exc:
        return _error_payload(503, str(exc), extra=((b"retry-after", str(exc.retry_after).encode()),))
    except DataError as exc:
        return _error_payload(422, str(exc), [{"type": "data_error", "loc": ["body", "columns"], "msg": str(exc)}])
    except Exception as exc:  # noqa: BLE001 - details go to the server log, not to the client
        log.error("prediction failed: %r", exc, exc_info=exc)
        return _error_payload(500, f"internal error: {type(exc).__name__}")
    predictions = _finite(result.prediction.tolist())
    content: dict[str, Any] = {"predictions": predictions}
    if result.proba is not None and st.class_keys is not None:
        content["probabilities"] = dict(zip(st.class_keys, result.proba.T.tolist()))
    content["model_version"] = st.version
    if st.predlog is not None:
        _log(st, columns, content, n, result.latency_ms)
    return _payload(200, content)


def _log(st: Any, columns: dict[str, Any], content: dict[str, Any], n: int, latency_ms: float) -> None:
    names = list(columns)
    images = set(st.schema.image_columns)
    values = [[image_digest(b) for b in c] if name in images else c.tolist() if isinstance(c, np.ndarray) else c
              for name, c in columns.items()]  # NaN -> null in the log writer; images as digests
    records = [dict(zip(names, row)) for row in zip(*values)]
    probs = content.get("probabilities")
    if probs is not None:
        labels = list(probs)
        rows = list(zip(*probs.values()))
        outputs = [{"prediction": p, "probabilities": dict(zip(labels, r))} for p, r in zip(content["predictions"], rows)]
    else:
        outputs = [{"prediction": p} for p in content["predictions"]]
    if st.predlog.log(st.version, records, outputs, latency_ms) == 0:
        st.metrics.log_dropped.inc(n)
