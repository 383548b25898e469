"""The prediction log: every served prediction, appended to SQLite for monitoring.

Rows are stored in columnar segments, not one SQL row per prediction: table ``segments(id INTEGER
PRIMARY KEY, first_id INTEGER, n_rows INTEGER, ts_min REAL, ts_max REAL, model_version TEXT,
data BLOB)``, where ``data`` is an Arrow IPC stream holding one row per prediction with columns
``_ts`` (Unix seconds), ``_latency_ms``, ``in:<feature>`` for each input, ``prediction`` and
``proba:<label>`` per class (none for regression). Prediction ids run on across segments
(``first_id`` + offset), starting at 1.

Why segments: a bulk request of 10,000 rows must not cost 10,000 JSON documents and SQL inserts.
Serialising one row as JSON and inserting it costs several microseconds in Python, ten times what the
tabular model itself spends on the row; a segment costs one Arrow conversion per column, a few
nanoseconds a value. ``read``/``read_frame`` give the rows back one by one or as a DataFrame, so
readers never see the storage.

A column whose values Arrow cannot hold in one type (a categorical feature sent as ``"Dream"`` by one
client and ``1`` by another) is stored as JSON text per value and decoded on read, so values come
back as they were logged. NaN and infinities are stored as null.

The request path only puts references on an in-memory queue. A background thread builds the segments
and commits every ``batch_rows`` rows or ``flush_ms`` milliseconds, whichever comes first. The
database is in WAL mode with ``synchronous=NORMAL``: a committed segment survives the server being
killed (SIGKILL); only the last ``flush_ms`` of predictions can be lost. If the writer falls behind by
``max_pending`` rows, or has failed (disk full: ``error`` says why), new rows are dropped and counted
(``dropped``, metric ``waypost_predlog_dropped_total``) rather than growing memory or failing the
predictions.

Several processes (``waypost serve --workers N``) can append to one file: each commit takes SQLite's
write lock (``BEGIN IMMEDIATE``) before numbering its rows, and ``busy_timeout`` makes writers wait.
Needs pyarrow (an install with ``waypost[serve]`` has it) and pandas for ``read_frame``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LOG_PATH = Path(".waypost") / "predictions.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    ts_min REAL NOT NULL,
    ts_max REAL NOT NULL,
    model_version TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_ts ON segments(ts_max);
"""
INPUT, PROBA = "in:", "proba:"
_JSON_META = {b"waypost.encoding": b"json"}
_STOP = object()


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    # Readers open read-write (with query_only on): after a crash the first connection has to
    # recover the WAL index, which a ``mode=ro`` connection cannot do.
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


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


@dataclass
class _Entry:
    """One logged request, queued as is: columns (lists or numpy arrays) the writer turns into Arrow."""

    ts: float
    version: str
    n: int
    latency: Any  # float, None or a sequence of n floats
    inputs: dict[str, Any]
    outputs: dict[str, Any]  # "prediction" and "proba:<label>" columns


def _row_columns(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> tuple[dict, dict]:
    """Records ({feature: value}, {"prediction", "probabilities": {label: p}}) -> columns."""
    names = list(dict.fromkeys(k for rec in inputs for k in rec))
    cols = {name: [rec.get(name) for rec in inputs] for name in names}
    out: dict[str, Any] = {"prediction": [o.get("prediction") for o in outputs]}
    labels = list(dict.fromkeys(k for o in outputs for k in (o.get("probabilities") or {})))
    for label in labels:
        out[PROBA + str(label)] = [(o.get("probabilities") or {}).get(label) for o in outputs]
    return cols, out


class PredictionLog:
    """Append-only SQLite log of predictions; ``read``/``read_frame`` for monitoring.

    ``PredictionLog(path)`` opens (and creates) the file. Writing starts its writer thread on the
    first ``log``; ``close()`` (or the context manager) flushes and stops it.
    """

    def __init__(self, path: str | os.PathLike, *, batch_rows: int = 10_000, flush_ms: float = 200.0,
                 max_pending: int = 1_000_000):
        self.path = Path(path)
        self.batch_rows = int(batch_rows)
        self.flush_s = float(flush_ms) / 1000.0
        self.max_pending = int(max_pending)
        self.dropped = 0
        self.written = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0  # rows queued but not yet taken by the writer
        self._pending_lock = threading.Lock()
        self._closed = False

    # -- writing -----------------------------------------------------------------------------
    def _init_db(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        return conn

    def open(self) -> PredictionLog:
        """Create the file and start the writer (also done lazily by ``log``)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"prediction log {self.path} is closed")
            if self._thread is None:
                conn = self._init_db()  # errors (unwritable path) surface here, in the caller
                self._thread = threading.Thread(
                    target=self._writer, args=(conn,), name="waypost-predlog", daemon=True
                )
                self._thread.start()
        return self

    def log(self, model_version: str, inputs: Iterable[dict[str, Any]], outputs: Iterable[dict[str, Any]],
            latency_ms: float | Iterable[float] | None = None, ts: float | None = None) -> int:
        """Queue one row per (input, output) record pair; returns how many were queued (the rest
        dropped). Outputs are ``{"prediction": p, "probabilities": {label: p}}``."""
        inputs, outputs = list(inputs), list(outputs)
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        return self._put(model_version, len(inputs), latency_ms, ts, *_row_columns(inputs, outputs))

    def log_columns(self, model_version: str, inputs: dict[str, Any], prediction: Any,
                    proba: np.ndarray | None = None, labels: list[str] | None = None,
                    latency_ms: float | None = None, ts: float | None = None) -> int:
        """Queue a columnar request (no per-row work here): ``inputs`` maps each feature to a list or
        array of n values, ``proba`` is (n, classes) in ``labels``' order. Returns rows queued."""
        n = len(prediction)
        bad = [name for name, values in inputs.items() if len(values) != n]
        if bad:
            raise ValueError(f"input columns {bad} do not have the prediction's {n} rows")
        outputs: dict[str, Any] = {"prediction": prediction}
        if proba is not None:
            if labels is None or len(labels) != proba.shape[1]:
                raise ValueError("proba needs one label per column")
            outputs.update({PROBA + str(label): proba[:, j] for j, label in enumerate(labels)})
        return self._put(model_version, n, latency_ms, ts, dict(inputs), outputs)

    def _put(self, version: str, n: int, latency_ms: Any, ts: float | None, inputs: dict[str, Any],
             outputs: dict[str, Any]) -> int:
        if self._thread is None:
            self.open()
        with self._pending_lock:
            if self.error is not None or self._pending + n > self.max_pending:
                self.dropped += n
                return 0
            self._pending += n
        self._queue.put(_Entry(time.time() if ts is None else ts, version, n, latency_ms, inputs, outputs))
        return n

    def _writer(self, conn: sqlite3.Connection) -> None:
        entries: list[_Entry] = []
        rows = taken = 0  # rows buffered; queue items behind them (marked done once committed)
        deadline = None
        stop = False
        try:
            while not stop:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                    taken += 1
                except queue.Empty:
                    item = None
                if item is _STOP:
                    stop = True
                elif item is not None:
                    with self._pending_lock:
                        self._pending -= item.n
                    entries.append(item)
                    rows += item.n
                    if deadline is None:
                        deadline = time.monotonic() + self.flush_s
                if entries and (stop or rows >= self.batch_rows or time.monotonic() >= deadline):
                    self._commit(conn, entries)
                    self.written += rows
                    entries, rows, deadline = [], 0, None
                if not entries:
                    for _ in range(taken):
                        self._queue.task_done()
                    taken = 0
        except BaseException as exc:  # noqa: BLE001 - kept for close() to report
            self.error = exc
            logging.getLogger("waypost.serve").error("prediction log %s: writer stopped: %s", self.path, exc)
        finally:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, entries: list[_Entry]) -> None:
        segments = [_encode(group) for group in _groups(entries)]
        conn.execute("BEGIN IMMEDIATE")  # numbering and inserting under the write lock
        try:
            last = conn.execute("SELECT first_id + n_rows FROM segments ORDER BY id DESC LIMIT 1").fetchone()
            first = last[0] if last else 1
            for n, ts_min, ts_max, version, blob in segments:
                conn.execute("INSERT INTO segments(first_id, n_rows, ts_min, ts_max, model_version, data) "
                             "VALUES (?,?,?,?,?,?)", (first, n, ts_min, ts_max, version, blob))
                first += n
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued row is committed (test helper; the writer flushes by itself)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"prediction log writer failed: {self.error}") from self.error

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    def _tables(self, limit: int | None, since: float | None, model_version: str | None) -> list[tuple]:
        """(row ids, model_version, Arrow table) per segment, oldest first, rows filtered by
        ``since`` and cut to the newest ``limit`` rows."""
        if not self.path.exists():
            return []
        import pyarrow as pa
        import pyarrow.compute as pc

        where, params = [], []
        if since is not None:
            where.append("ts_max >= ?")
            params.append(float(since))
        if model_version is not None:
            where.append("model_version = ?")
            params.append(model_version)
        sql = "SELECT first_id, model_version, data FROM segments"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        conn = _connect(self.path, readonly=True)
        out, rows = [], 0
        try:
            for first, version, blob in conn.execute(sql, params):
                table = pa.ipc.open_stream(blob).read_all()
                ids = np.arange(first, first + table.num_rows, dtype=np.int64)
                if since is not None:
                    keep = pc.greater_equal(table["_ts"], float(since))
                    ids, table = ids[keep.to_numpy(zero_copy_only=False)], table.filter(keep)
                if limit is not None and rows + table.num_rows > limit:
                    cut = table.num_rows - (limit - rows)
                    ids, table = ids[cut:], table.slice(cut)
                out.append((ids, version, table))
                rows += table.num_rows
                if limit is not None and rows >= limit:
                    break
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()
        return out[::-1]

    def read(self, limit: int | None = None, *, since: float | None = None,
             model_version: str | None = None) -> list[dict[str, Any]]:
        """Committed rows, oldest first: dicts with id, ts, model_version, latency_ms, inputs, outputs
        (``outputs``: prediction and, for classifiers, probabilities). ``limit`` keeps the newest
        ``limit`` rows."""
        rows: list[dict[str, Any]] = []
        for ids, version, table in self._tables(limit, since, model_version):
            cols = {f.name: _decoded(table.column(f.name), f) for f in table.schema}
            inputs = [name for name in cols if name.startswith(INPUT)]
            probas = [name for name in cols if name.startswith(PROBA)]
            for i, row_id in enumerate(ids.tolist()):
                out: dict[str, Any] = {"prediction": cols["prediction"][i]}
                if probas:
                    out["probabilities"] = {name[len(PROBA):]: cols[name][i] for name in probas}
                rows.append({"id": row_id, "ts": cols["_ts"][i], "model_version": version,
                             "latency_ms": cols["_latency_ms"][i],
                             "inputs": {name[len(INPUT):]: cols[name][i] for name in inputs}, "outputs": out})
        return rows

    def read_frame(self, limit: int | None = None, *, since: float | None = None,
                   model_version: str | None = None):
        """``read``'s rows as a pandas DataFrame: one column per input feature, then ``prediction``,
        ``proba_<label>`` per class, and ``_id``, ``_ts`` (datetime, UTC), ``_model_version``,
        ``_latency_ms``."""
        import pandas as pd

        frames = []
        for ids, version, table in self._tables(limit, since, model_version):
            data: dict[str, Any] = {}
            for f in table.schema:
                name = f.name[len(INPUT):] if f.name.startswith(INPUT) else (
                    "proba_" + f.name[len(PROBA):] if f.name.startswith(PROBA) else f.name)
                column = table.column(f.name)
                data[name] = _decoded(column, f) if f.metadata == _JSON_META else column.to_pandas()
            frame = pd.DataFrame(data)
            frame["_id"], frame["_model_version"] = ids, version
            frames.append(frame)
        if not frames:
            return pd.DataFrame()
        frame = pd.concat(frames, ignore_index=True)
        meta = ["_id", "_ts", "_model_version", "_latency_ms"]
        frame = frame[[c for c in frame.columns if c not in meta] + meta]
        frame["_ts"] = pd.to_datetime(frame["_ts"], unit="s", utc=True)
        return frame

    def count(self) -> int:
        if not self.path.exists():
            return 0
        conn = _connect(self.path, readonly=True)
        try:
            return int(conn.execute("SELECT COALESCE(SUM(n_rows), 0) FROM segments").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()


# -- segments ---------------------------------------------------------------------------------
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
            fields.append(pa.field(prefix + name, array.type, metadata=_JSON_META if as_json else None))
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
    if field.metadata == _JSON_META:
        return [None if v is None else json.loads(v) for v in values]
    return values
