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

The request path only puts references on an in-memory queue; a background thread builds the
segments and commits them. The database is in WAL mode with ``synchronous=NORMAL``: a committed
segment survives the server being killed (SIGKILL) or crashing; a power cut can lose the last few
commits (``synchronous=FULL`` would fsync each, at a much higher cost). Two durabilities:

- ``answered`` (the default): every entry carries a callback, and the server answers a request only
  after its rows are committed. The writer commits whatever has queued as soon as it can (group
  commit: the requests of a batch, and any that queued while the previous commit ran, share one
  transaction), so no prediction answered 200 is ever missing from the log. A log that cannot take
  the rows (writer failed, ``max_pending`` reached) makes the server answer 503 instead of 200.
- ``async``: no waiting; commits every ``batch_rows`` rows or ``flush_ms`` milliseconds, whichever
  comes first, so the last ``flush_ms`` of answered predictions can be lost to a SIGKILL. Rows the
  log cannot take are dropped and counted (``dropped``, metric ``waypost_predlog_dropped_total``)
  rather than failing the predictions.

Several processes (``waypost serve --workers N``) can append to one file: each commit takes SQLite's
write lock (``BEGIN IMMEDIATE``) before numbering its rows, and ``busy_timeout`` makes writers wait.
Needs pyarrow (an install with ``waypost[serve]`` has it) and pandas for ``read_frame``.
"""
from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from waypost.serve.predlog_format import INPUT, JSON_META, PROBA, _decoded, _encode, _Entry, _groups

DEFAULT_LOG_PATH = Path(".waypost") / "predictions.sqlite"
DURABILITIES = ("answered", "async")

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
_STOP = object()


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    # Readers open read-write (with query_only on): after a crash the first connection has to
    # recover the WAL index, which a ``mode=ro`` connection cannot do.
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


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

    def __init__(self, path: str | os.PathLike, *, durability: str = "answered", batch_rows: int = 10_000,
                 flush_ms: float = 200.0, max_pending: int = 1_000_000):
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        self.durability = durability
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
                    latency_ms: float | None = None, ts: float | None = None,
                    on_commit: Callable[[BaseException | None], None] | None = None) -> int:
        """Queue a columnar request (no per-row work here): ``inputs`` maps each feature to a list or
        array of n values, ``proba`` is (n, classes) in ``labels``' order. Returns rows queued (0:
        dropped, and ``on_commit`` is never called). ``on_commit(error)`` runs on the writer thread
        once the rows are committed (error None) or their commit failed."""
        n = len(prediction)
        bad = [name for name, values in inputs.items() if len(values) != n]
        if bad:
            raise ValueError(f"input columns {bad} do not have the prediction's {n} rows")
        outputs: dict[str, Any] = {"prediction": prediction}
        if proba is not None:
            if labels is None or len(labels) != proba.shape[1]:
                raise ValueError("proba needs one label per column")
            outputs.update({PROBA + str(label): proba[:, j] for j, label in enumerate(labels)})
        return self._put(model_version, n, latency_ms, ts, dict(inputs), outputs, on_commit)

    def _put(self, version: str, n: int, latency_ms: Any, ts: float | None, inputs: dict[str, Any],
             outputs: dict[str, Any], on_commit: Callable[[BaseException | None], None] | None = None) -> int:
        if self._thread is None:
            self.open()
        with self._pending_lock:
            if self._closed or self.error is not None or self._pending + n > self.max_pending:
                self.dropped += n
                return 0
            self._pending += n
        self._queue.put(_Entry(time.time() if ts is None else ts, version, n, latency_ms, inputs, outputs,
                               on_commit))
        return n

    def _writer(self, conn: sqlite3.Connection) -> None:
        """Take entries, commit them in groups, tell their callers. ``answered``: commit whatever has
        queued as soon as the previous commit is done; ``async``: wait up to ``flush_ms`` (or
        ``batch_rows``) to write fewer, larger segments."""
        wait = self.durability == "async"
        stop = False
        entries: list[_Entry] = []
        try:
            while not stop:
                item = self._queue.get()
                taken = 1
                rows = 0
                deadline = time.monotonic() + self.flush_s
                while True:
                    if item is _STOP:
                        stop = True
                    elif item is not None:
                        with self._pending_lock:
                            self._pending -= item.n
                        entries.append(item)
                        rows += item.n
                    if stop or rows >= self.batch_rows:
                        break
                    try:
                        timeout = deadline - time.monotonic() if wait and entries else 0.0
                        item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                        taken += 1
                    except queue.Empty:
                        break
                if entries:
                    self._commit(conn, entries)
                    self.written += rows
                    committed, entries = entries, []
                    _notify(committed, None)
                for _ in range(taken):
                    self._queue.task_done()
        except BaseException as exc:  # noqa: BLE001 - kept for close() to report
            self.error = exc
            logging.getLogger("waypost.serve").error("prediction log %s: writer stopped: %s", self.path, exc)
            _notify(entries, exc)
            self._fail_queued(exc)
        finally:
            conn.close()

    def _fail_queued(self, exc: BaseException) -> None:
        """After the writer failed: everything still queued is reported failed, never left waiting."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _notify([item], exc)
            self._queue.task_done()

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
                data[name] = _decoded(column, f) if f.metadata == JSON_META else column.to_pandas()
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


def _notify(entries: list[_Entry], error: BaseException | None) -> None:
    for entry in entries:
        if entry.on_commit is not None:
            try:
                entry.on_commit(error)
            except Exception:  # noqa: BLE001 - a caller's callback must not stop the writer
                logging.getLogger("waypost.serve").exception("prediction log: commit callback failed")


