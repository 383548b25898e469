"""The prediction log: every served prediction, appended to SQLite for monitoring.

Table ``predictions(id INTEGER PRIMARY KEY, ts REAL, model_version TEXT, latency_ms REAL,
inputs TEXT, outputs TEXT)``: ``ts`` is Unix time in seconds, ``inputs`` the record as JSON,
``outputs`` ``{"prediction": ..., "probabilities": {label: p}}`` as JSON (no probabilities for
regression).

The request path only puts rows on an in-memory queue. A background thread serialises them and
commits in small transactions (every ``batch_rows`` rows or ``flush_ms`` milliseconds, whichever
comes first). The database is in WAL mode with ``synchronous=NORMAL``: a committed transaction
survives the server being killed (SIGKILL); only the last ``flush_ms`` of predictions can be lost.
If the writer falls behind by ``max_pending`` rows, or has failed (disk full: ``error`` says why),
new rows are dropped and counted (``dropped``, metric ``waypost_predlog_dropped_total``) rather
than growing memory or failing the predictions.

Several processes (``waypost serve --workers N``) can append to one file: SQLite serialises the
writers and ``busy_timeout`` makes them wait for each other.
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_LOG_PATH = Path(".waypost") / "predictions.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    model_version TEXT,
    latency_ms REAL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions(ts);
"""

_STOP = object()


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    # Readers open read-write (with query_only on): after a crash the first connection has to
    # recover the WAL index, which a ``mode=ro`` connection cannot do.
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
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


class PredictionLog:
    """Append-only SQLite log of predictions; ``read``/``read_frame`` for monitoring.

    ``PredictionLog(path)`` opens (and creates) the file. Writing starts its writer thread on the
    first ``log``; ``close()`` (or the context manager) flushes and stops it.
    """

    def __init__(self, path: str | os.PathLike, *, batch_rows: int = 100, flush_ms: float = 200.0,
                 max_pending: int = 100_000):
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
        conn.commit()
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
        """Queue one row per (input, output) pair; returns how many were queued (the rest dropped)."""
        if self._thread is None:
            self.open()
        ts = time.time() if ts is None else ts
        inputs, outputs = list(inputs), list(outputs)
        if len(inputs) != len(outputs):
            raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs")
        if latency_ms is None or isinstance(latency_ms, (int, float)):
            lat = [latency_ms] * len(inputs)
        else:
            lat = list(latency_ms)
        with self._pending_lock:
            if self.error is not None or self._pending + len(inputs) > self.max_pending:
                self.dropped += len(inputs)
                return 0
            self._pending += len(inputs)
        self._queue.put((ts, model_version, lat, inputs, outputs))
        return len(inputs)

    def _writer(self, conn: sqlite3.Connection) -> None:
        sql = "INSERT INTO predictions(ts, model_version, latency_ms, inputs, outputs) VALUES (?,?,?,?,?)"
        rows: list[tuple] = []
        taken = 0  # queue items behind ``rows``: marked done once committed
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
                    ts, version, lat, inputs, outputs = item
                    with self._pending_lock:
                        self._pending -= len(inputs)
                    rows.extend(
                        (ts, version, lt, _dumps(i), _dumps(o)) for i, o, lt in zip(inputs, outputs, lat)
                    )
                    if deadline is None:
                        deadline = time.monotonic() + self.flush_s
                if rows and (stop or len(rows) >= self.batch_rows or time.monotonic() >= deadline):
                    conn.executemany(sql, rows)
                    conn.commit()
                    self.written += len(rows)
                    rows = []
                    deadline = None
                if not rows:
                    for _ in range(taken):
                        self._queue.task_done()
                    taken = 0
        except BaseException as exc:  # noqa: BLE001 - kept for close() to report
            self.error = exc
            logging.getLogger("waypost.serve").error("prediction log %s: writer stopped: %s", self.path, exc)
        finally:
            conn.close()

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
    def read(self, limit: int | None = None, *, since: float | None = None,
             model_version: str | None = None) -> list[dict[str, Any]]:
        """Committed rows, oldest first: dicts with id, ts, model_version, latency_ms, inputs, outputs
        (``inputs``/``outputs`` decoded from JSON). ``limit`` keeps the newest ``limit`` rows."""
        if not self.path.exists():
            return []
        where, params = [], []
        if since is not None:
            where.append("ts >= ?")
            params.append(float(since))
        if model_version is not None:
            where.append("model_version = ?")
            params.append(model_version)
        sql = "SELECT id, ts, model_version, latency_ms, inputs, outputs FROM predictions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id"
            params.append(int(limit))
        else:
            sql += " ORDER BY id"
        conn = _connect(self.path, readonly=True)
        try:
            cur = conn.execute(sql, params)
            return [
                {"id": r[0], "ts": r[1], "model_version": r[2], "latency_ms": r[3],
                 "inputs": json.loads(r[4]), "outputs": json.loads(r[5])}
                for r in cur
            ]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def read_frame(self, limit: int | None = None, **kwargs: Any):
        """A pandas DataFrame: one column per input feature, then ``prediction``, ``proba_<label>``
        per class, and ``_id``, ``_ts`` (datetime, UTC), ``_model_version``, ``_latency_ms``."""
        import pandas as pd

        rows = self.read(limit, **kwargs)
        records = []
        for r in rows:
            rec = dict(r["inputs"])
            out = r["outputs"]
            rec["prediction"] = out.get("prediction")
            for label, p in (out.get("probabilities") or {}).items():
                rec[f"proba_{label}"] = p
            rec.update(_id=r["id"], _ts=r["ts"], _model_version=r["model_version"], _latency_ms=r["latency_ms"])
            records.append(rec)
        frame = pd.DataFrame.from_records(records)
        if "_ts" in frame:
            frame["_ts"] = pd.to_datetime(frame["_ts"], unit="s", utc=True)
        return frame

    def count(self) -> int:
        if not self.path.exists():
            return 0
        conn = _connect(self.path, readonly=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()
