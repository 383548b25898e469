"""The prediction log's storage format: queued entries, and the Arrow IPC segments they become
(one per commit group), with the JSON fallback for columns that mix Python types. See
`waypost.serve.predlog` for the table and why segments."""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT, PROBA = "in:", "proba:"
JSON_META = {b"waypost.encoding": b"json"}


@dataclass
class _Entry:
    """One logged request, queued as is: columns (lists or numpy arrays) the writer turns into Arrow."""

    ts: float
    version: str
    n: int
    latency: Any  # float, None or a sequence of n floats
    inputs: dict[str, Any]
    outputs: dict[str, Any]  # "prediction" and "proba:<label>" columns
    on_commit: Callable[[BaseException | None], None] | None = None  # called by the writer thread


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: store them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


# built once: json.dumps with non-default options builds a new encoder on every call
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_json_default).encode


def _dumps(obj: Any) -> str:
    try:
        return _ENCODE(obj)
    except ValueError:  # NaN / inf somewhere
        return _ENCODE(_clean(obj))


def _groups(entries: list[_Entry]) -> Iterator[list[_Entry]]:
    """Consecutive entries with the same model version and columns: one segment each."""
    group: list[_Entry] = []
    for entry in entries:
        if group and (entry.version != group[0].version or entry.inputs.keys() != group[0].inputs.keys()
                      or entry.outputs.keys() != group[0].outputs.keys()):
            yield group
            group = []
        group.append(entry)
    if group:
        yield group


def _encode(group: list[_Entry]) -> tuple[int, float, float, str, bytes]:
    import pyarrow as pa

    n = sum(e.n for e in group)
    ts = np.concatenate([np.full(e.n, e.ts, dtype=np.float64) for e in group])
    latency = np.concatenate([_latencies(e) for e in group])
    names = ["_ts", "_latency_ms"]
    arrays = [pa.array(ts), pa.array(latency, from_pandas=True)]
    fields = [pa.field("_ts", pa.float64()), pa.field("_latency_ms", pa.float64())]
    first = group[0]
    for prefix, source in ((INPUT, "inputs"), ("", "outputs")):
        for name in getattr(first, source):
            values = _concat([getattr(e, source)[name] for e in group])
            array, as_json = _arrow(pa, values)
            names.append(prefix + name)
            arrays.append(array)
            fields.append(pa.field(prefix + name, array.type, metadata=JSON_META if as_json else None))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return n, float(ts.min()), float(ts.max()), first.version, sink.getvalue().to_pybytes()


def _latencies(entry: _Entry) -> np.ndarray:
    if entry.latency is None or isinstance(entry.latency, (int, float)):
        return np.full(entry.n, np.nan if entry.latency is None else float(entry.latency))
    return np.asarray(list(entry.latency), dtype=np.float64)


def _concat(parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, np.ndarray) for p in parts) and len({p.dtype for p in parts}) == 1:
        return np.concatenate(parts)
    out: list[Any] = []
    for p in parts:
        out.extend(p.tolist() if isinstance(p, np.ndarray) else p)
    return out


def _arrow(pa: Any, values: Any) -> tuple[Any, bool]:
    """(Arrow array, stored as JSON?). Numbers: NaN/inf -> null. A list mixing Python types (or
    holding containers) is stored as JSON text so every value reads back as it was."""
    if isinstance(values, np.ndarray):  # one dtype (numbers, or the str labels of an object array)
        if values.dtype.kind == "f":
            values = np.where(np.isfinite(values), values, np.nan)
        try:
            return pa.array(values, from_pandas=True), False
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            values = values.tolist()
    kinds = {type(v) for v in values if v is not None}
    if float in kinds:
        values = [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
    if len(kinds) <= 1 and not kinds & {dict, list, tuple}:
        try:
            return pa.array(values), False
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            pass
    return pa.array([None if v is None else _dumps(v) for v in values], pa.string()), True


def _decoded(column: Any, field: Any) -> list[Any]:
    values = column.to_pylist()
    if field.metadata == JSON_META:
        return [None if v is None else json.loads(v) for v in values]
    return values
