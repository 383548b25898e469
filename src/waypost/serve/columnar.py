"""`POST /predict/columns`: the high-throughput request formats, one array per column.

`/predict` validates every record with pydantic, which is right for one row and costs more than
the model for a thousand. Clients that score in bulk (a stream processor, a nightly job calling
the service) send columns instead, in one of two encodings chosen by Content-Type:

- ``application/json``: ``{"columns": {"age": [...], "city": [...]}}``; numbers parsed by numpy,
  the answer columnar too (``probabilities`` maps each label to a list).
- ``application/vnd.apache.arrow.stream``: an Arrow IPC stream whose columns are the features; the
  answer is an Arrow IPC stream with ``prediction`` and ``proba_<label>`` per class (the column names
  of `waypost predict`'s output files), the model version in the ``x-model-version`` header and in
  the schema metadata. Numbers arrive as machine floats, so parsing costs nothing per value: on the
  tabular benchmark model the server's per-row cost is then the model's, where JSON's number parsing
  alone costs more than the model (`benchmarks/serve_bench.py`).

Each column is validated in one pass; errors name the column and, where one value is at fault, the
row, like `/predict`'s. Image columns are base64 strings in JSON and raw bytes (Arrow ``binary``)
in Arrow; either way their magic bytes are checked and they are never read as paths. Errors are
always JSON. The same batcher, metrics and prediction log serve every format.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from waypost.serve.answer import Payload, error_payload, finite, infer, log_request, payload
from waypost.serve.batcher import BatchResult
from waypost.serve.schema import RequestError, decode_images, image_bytes

ARROW_STREAM = "application/vnd.apache.arrow.stream"
_SCALARS = (str, int, float, bool, type(None))


def _err(kind: str, loc: list[Any], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", "columns", *loc], "msg": msg}


def _check_names(given: list[str], features: dict[str, str]) -> None:
    errors = [_err("extra_forbidden", [c], "unknown column") for c in given if c not in features]
    errors += [_err("missing", [c], "Field required") for c in features if c not in given]
    errors += [_err("duplicate", [c], "column given more than once") for c in dict.fromkeys(given)
               if given.count(c) > 1]
    if errors:
        raise RequestError(errors)


# ---- JSON ---------------------------------------------------------------------------------------
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
    _check_names(list(given), features)
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


# ---- Arrow --------------------------------------------------------------------------------------
def parse_arrow(body: bytes, features: dict[str, str]) -> tuple[dict[str, Any], int]:
    """The Arrow IPC stream's columns, converted for the runtime without a Python object per number."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise RequestError([{"type": "arrow_invalid", "loc": ["body"],
                             "msg": f"not an Arrow IPC stream ({ARROW_STREAM}): {exc}"}]) from None
    _check_names(table.column_names, features)
    if table.num_rows == 0:
        raise RequestError([{"type": "value_error", "loc": ["body", "columns"], "msg": "the Arrow stream has no rows"}])
    return {c: _arrow_column(c, features[c], table.column(c)) for c in features}, table.num_rows


def _arrow_column(name: str, ftype: str, column: Any) -> Any:
    import pyarrow as pa
    import pyarrow.types as pt

    t = column.type
    if pt.is_dictionary(t):
        column, t = column.cast(t.value_type), t.value_type
    strings = pt.is_string(t) or pt.is_large_string(t)
    if ftype == "numeric" and (pt.is_integer(t) or pt.is_floating(t) or pt.is_decimal(t) or pt.is_null(t)):
        return column.cast(pa.float64()).to_numpy()  # null -> NaN
    if ftype in ("category", "binary") and (strings or pt.is_integer(t) or pt.is_floating(t)
                                             or pt.is_boolean(t) or pt.is_null(t)):
        return column.to_numpy(zero_copy_only=False)
    if ftype == "datetime" and (pt.is_timestamp(t) or pt.is_date(t)):
        return column.cast(pa.timestamp("ns", tz=getattr(t, "tz", None))).to_numpy(zero_copy_only=False)
    if ftype in ("datetime", "text") and (strings or pt.is_null(t)):
        return column.to_pylist()
    if ftype == "image" and (pt.is_binary(t) or pt.is_large_binary(t)):
        blobs, errors = column.to_pylist(), []
        for i, blob in enumerate(blobs):
            try:
                image_bytes(blob, "null" if blob is None else f"the {len(blob)} bytes")
            except ValueError as exc:
                errors.append(_err("image_bytes", [name, i], f"{exc} (the server never opens file paths or URLs)"))
        if errors:
            raise RequestError(errors[:20])
        return blobs
    expected = {"numeric": "integers or floats", "category": "strings, integers, floats or booleans",
                "binary": "strings, integers, floats or booleans", "datetime": "timestamps, dates or ISO strings",
                "text": "strings", "image": "binary (the image bytes)"}[ftype]
    raise RequestError([_err("arrow_type", [name], f"{ftype} column expects Arrow {expected}, got {t}")])


def arrow_payload(st: Any, result: BatchResult) -> Payload:
    import pyarrow as pa

    try:  # labels are one type; a mixed object array (never made by a bundle) goes through lists
        prediction = pa.array(result.prediction, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        prediction = pa.array([str(v) for v in result.prediction.tolist()])
    arrays = {"prediction": prediction}
    if result.proba is not None and st.class_keys is not None:
        arrays.update({f"proba_{key}": result.proba[:, j] for j, key in enumerate(st.class_keys)})
    table = pa.table(arrays).replace_schema_metadata({"waypost.model_version": st.version})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body = sink.getvalue().to_pybytes()
    return 200, body, [(b"content-type", ARROW_STREAM.encode()), (b"content-length", str(len(body)).encode()),
                       (b"x-model-version", st.version.encode())]


# ---- the endpoint -------------------------------------------------------------------------------
def is_arrow(content_type: str | bytes | None) -> bool:
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return (content_type or "").split(";")[0].strip().lower() == ARROW_STREAM


async def predict_columns_body(st: Any, body: bytes, content_type: str | bytes | None = None) -> Payload:
    """Status, body bytes and headers for one columnar request, JSON or Arrow. Never raises."""
    arrow = is_arrow(content_type)
    try:
        columns, n = parse_arrow(body, st.schema.features) if arrow else parse_columns(body, st.schema.features)
    except RequestError as exc:
        return error_payload(422, str(exc), exc.errors)
    result = await infer(st, columns, n, ["body", "columns"])
    if not isinstance(result, BatchResult):
        return result
    log_request(st, columns, result)
    if arrow:
        return arrow_payload(st, result)
    content: dict[str, Any] = {"predictions": finite(result.prediction.tolist())}
    if result.proba is not None and st.class_keys is not None:
        content["probabilities"] = dict(zip(st.class_keys, result.proba.T.tolist()))
    content["model_version"] = st.version
    return payload(200, content)
