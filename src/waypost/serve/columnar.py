"""`POST /predict/columns`: the high-throughput request formats, one array per column.

`/predict` validates every record with pydantic, which is right for one row and costs more than
the model for a thousand. Clients that score in bulk (a stream processor, a nightly job calling
the service) send columns instead, in one of two encodings chosen by Content-Type:

- ``application/json``: ``{"columns": {"age": [...], "city": [...]}}``; each array validated by
  the same strict pydantic types as ``/predict``'s fields (``RecordSchema.parse_columns``), the
  answer columnar too (``probabilities`` maps each label to a list).
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

from waypost.serve.answer import Payload, add_warnings, error_payload, finite, infer, log_request, payload
from waypost.serve.batcher import BatchResult
from waypost.serve.schema import ImageTooLarge, RequestError, image_bytes

ARROW_STREAM = "application/vnd.apache.arrow.stream"


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
def parse_columns(body: bytes, schema: Any) -> tuple[dict[str, Any], int]:
    """(columns ready for the runtime, number of rows); RequestError naming the field otherwise.
    The per-column pydantic model of ``RecordSchema``: each item follows its feature's contract,
    exactly as a ``/predict`` field does."""
    return schema.parse_columns(body)


# ---- Arrow --------------------------------------------------------------------------------------
def parse_arrow(body: bytes, schema: Any) -> tuple[dict[str, Any], int]:
    """The Arrow IPC stream's columns, converted for the runtime without a Python object per number,
    held to the same contracts as JSON (``waypost.serve.fields``) by Arrow type."""
    import pyarrow as pa

    features = schema.features
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise RequestError([{"type": "arrow_invalid", "loc": ["body"],
                             "msg": f"not an Arrow IPC stream ({ARROW_STREAM}): {exc}"}]) from None
    _check_names(table.column_names, features)
    if table.num_rows == 0:
        raise RequestError([{"type": "value_error", "loc": ["body", "columns"], "msg": "the Arrow stream has no rows"}])
    return {c: _arrow_column(c, schema.contracts[c], table.column(c), schema.max_image_pixels)
            for c in features}, table.num_rows


def _first_bad(name: str, mask: Any, values: Any, msg: str) -> RequestError:
    i = int(np.flatnonzero(np.asarray(mask))[0])
    value = values[i]
    return RequestError([_err("value_error", [name, i], f"{msg}, got {value!r}")])


def _arrow_column(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    """One Arrow column -> what the runtime takes, checked by its kind's rule (`arrow_<kind>` below)."""
    import pyarrow.types as pt

    from waypost.kinds import get_kind

    t = column.type
    if pt.is_dictionary(t):
        column = column.cast(t.value_type)
    kind = get_kind(c.kind)
    rule = globals().get(f"arrow_{kind.name}")  # one per kind, below: the kinds never import the server
    if rule is None:
        raise RequestError([_err("arrow_type", [name], f"{c.kind} columns cannot be sent as Arrow yet")])
    values = rule(name, c, column, max_pixels)
    if values is None:
        expected = kind.arrow_expected
        if c.choices is not None:
            expected = {bool: "booleans", str: "strings"}.get(type(c.choices[0]), "integers or floats")
        raise RequestError([_err("arrow_type", [name], f"{c.kind} column expects Arrow {expected}, got {column.type}")])
    return values


def _types(t: Any) -> tuple[bool, bool]:
    import pyarrow.types as pt

    return pt.is_string(t) or pt.is_large_string(t), pt.is_integer(t) or pt.is_floating(t) or pt.is_decimal(t)


# Each returns the column's values, or None when the Arrow type is not one the kind takes.
def arrow_numeric(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    import pyarrow as pa
    import pyarrow.types as pt

    _, numbers = _types(column.type)
    if not (numbers or pt.is_null(column.type)):
        return None
    x = column.cast(pa.float64()).to_numpy()  # null -> NaN (NaN itself is a missing value, as null)
    if np.isinf(x).any():
        raise _first_bad(name, np.isinf(x), x, "numeric feature: expected a finite number or null")
    return x


def arrow_category(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    import pyarrow.types as pt

    t = column.type
    strings, numbers = _types(t)
    if not (strings or numbers or pt.is_null(t)):
        return None
    values = column.to_numpy(zero_copy_only=False)
    if pt.is_floating(t) and np.isinf(values.astype(np.float64)).any():
        x = values.astype(np.float64)
        raise _first_bad(name, np.isinf(x), x, "category feature: expected a string, a finite number or null")
    return values


def arrow_binary(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    t = column.type
    strings, numbers = _types(t)
    if c.choices is None:  # a bundle without the two values stored
        ok = strings or numbers or pt.is_boolean(t) or pt.is_null(t)
        return column.to_numpy(zero_copy_only=False) if ok else None
    kinds = {type(v) for v in c.choices}
    if not ((pt.is_boolean(t) if kinds == {bool} else strings if kinds == {str} else numbers) or pt.is_null(t)):
        return None
    present = pc.is_valid(column)
    if pt.is_null(t):
        inside = present
    elif numbers:  # 2 == 2.0: compared as float64, whatever the integer or decimal type
        inside = pc.is_in(column.cast(pa.float64()), value_set=pa.array([float(v) for v in c.choices]))
    else:
        inside = pc.is_in(column, value_set=pa.array(list(c.choices), type=t))
    outside = pc.and_(present, pc.invert(pc.fill_null(inside, False)))
    if pc.any(outside).as_py():
        raise _first_bad(name, outside.to_numpy(zero_copy_only=False), column.to_pylist(),
                         f"binary feature: expected {c.expected}")
    return column.to_numpy(zero_copy_only=False)


def arrow_datetime(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    import pyarrow as pa
    import pyarrow.types as pt

    t = column.type
    if pt.is_timestamp(t) or pt.is_date(t):
        try:
            return column.cast(pa.timestamp("ns", tz=getattr(t, "tz", None))).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid as exc:  # outside numpy's nanosecond range (years 1678-2261)
            raise RequestError([_err("value_error", [name], f"datetime feature: {exc}")]) from None
    strings, _ = _types(t)
    if not (strings or pt.is_null(t)):
        return None
    from waypost.serve.fields import is_datetime

    values = column.to_pylist()
    bad = [v is not None and not is_datetime(v) for v in values]
    if any(bad):
        raise _first_bad(name, bad, values, f"datetime feature: expected {c.expected}")
    return values


def arrow_text(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    import pyarrow.types as pt

    strings, _ = _types(column.type)
    return column.to_pylist() if strings or pt.is_null(column.type) else None


def arrow_image(name: str, c: Any, column: Any, max_pixels: int | None) -> Any:
    import pyarrow.types as pt

    if not (pt.is_binary(column.type) or pt.is_large_binary(column.type)):
        return None
    blobs, errors = column.to_pylist(), []
    for i, blob in enumerate(blobs):
        try:
            image_bytes(blob, "null" if blob is None else f"the {len(blob)} bytes", max_pixels)
        except ImageTooLarge as exc:
            errors.append(_err("image_too_large", [name, i], f"image feature: {exc}"))
        except ValueError as exc:
            errors.append(_err("image_bytes", [name, i], f"{exc} (the server never opens file paths or URLs)"))
    if errors:
        raise RequestError(errors[:20])
    return blobs


def arrow_payload(st: Any, result: BatchResult) -> Payload:
    import pyarrow as pa

    try:  # labels are one type; a mixed object array (never made by a bundle) goes through lists
        prediction = pa.array(result.prediction, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        prediction = pa.array([str(v) for v in result.prediction.tolist()])
    arrays = {"prediction": prediction}
    if result.proba is not None and st.class_keys is not None:
        arrays.update({f"proba_{key}": result.proba[:, j] for j, key in enumerate(st.class_keys)})
    meta = {"waypost.model_version": st.version}
    if result.issues:
        meta["waypost.input_warnings"] = json.dumps(result.issues)
        st.metrics.count_issues(result.issues)
    table = pa.table(arrays).replace_schema_metadata(meta)
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
        columns, n = parse_arrow(body, st.schema) if arrow else parse_columns(body, st.schema)
    except RequestError as exc:
        return error_payload(422, str(exc), exc.errors)
    result = await infer(st, columns, n, ["body", "columns"])
    if not isinstance(result, BatchResult):
        return result
    failed = await log_request(st, columns, result)
    if failed is not None:
        return failed
    if arrow:
        return arrow_payload(st, result)
    content: dict[str, Any] = {"predictions": finite(result.prediction.tolist())}
    if result.proba is not None and st.class_keys is not None:
        content["probabilities"] = dict(zip(st.class_keys, result.proba.T.tolist()))
    content["model_version"] = st.version
    add_warnings(st, content, result)
    return payload(200, content)
