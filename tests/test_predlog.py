"""The SQLite prediction log: background writes, reading back, crash safety, several writers."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from waypost.serve.predlog import PredictionLog

OUT = {"prediction": "Adelie", "probabilities": {"Adelie": 0.9, "Gentoo": 0.1}}


def test_round_trip_and_schema(tmp_path):
    path = tmp_path / "sub" / "log.sqlite"
    with PredictionLog(path) as log:
        queued = log.log("m/1", [{"bill": 39.1, "island": "Dream", "sex": None}, {"bill": float("nan"), "island": 1,
                                                                                  "sex": True}],
                         [OUT, {"prediction": "Gentoo", "probabilities": {"Adelie": 0.2, "Gentoo": 0.8}}],
                         latency_ms=[1.5, 2.5])
        assert queued == 2
    rows = PredictionLog(path).read()
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[0]["inputs"] == {"bill": 39.1, "island": "Dream", "sex": None}
    assert rows[1]["inputs"] == {"bill": None, "island": 1, "sex": True}  # NaN is stored as null
    assert rows[0]["outputs"] == OUT and rows[1]["latency_ms"] == 2.5
    assert rows[0]["model_version"] == "m/1" and abs(rows[0]["ts"] - time.time()) < 60
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [(c[1], c[2]) for c in conn.execute("PRAGMA table_info(segments)")]
    assert cols == [("id", "INTEGER"), ("first_id", "INTEGER"), ("n_rows", "INTEGER"), ("ts_min", "REAL"),
                    ("ts_max", "REAL"), ("model_version", "TEXT"), ("data", "BLOB")]
    assert conn.execute("SELECT first_id, n_rows FROM segments").fetchall() == [(1, 2)]  # one segment, 2 rows
    conn.close()


def test_rows_are_committed_in_the_background_without_close(tmp_path):
    log = PredictionLog(tmp_path / "log.sqlite", batch_rows=100, flush_ms=50)
    log.log("v", [{"a": 1}], [{"prediction": 0}])  # far fewer than batch_rows: the timer commits them
    deadline = time.monotonic() + 5
    while PredictionLog(log.path).count() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert PredictionLog(log.path).count() == 1
    t0 = time.perf_counter()
    for i in range(2_000):
        log.log("v", [{"a": i}], [{"prediction": i % 2}], latency_ms=0.1)
    per_row_us = (time.perf_counter() - t0) / 2_000 * 1e6
    log.flush()
    assert PredictionLog(log.path).count() == 2_001
    log.close()
    assert per_row_us < 200, f"enqueueing a row took {per_row_us:.0f} us: the request path must not wait on disk"


def test_read_limit_filters_and_frame(tmp_path):
    path = tmp_path / "log.sqlite"
    with PredictionLog(path) as log:
        log.log("a", [{"x": i} for i in range(5)], [OUT] * 5, latency_ms=1.0, ts=1000.0)
        log.log("b", [{"x": i} for i in range(5, 8)], [OUT] * 3, latency_ms=2.0, ts=2000.0)
    reader = PredictionLog(path)
    assert [r["inputs"]["x"] for r in reader.read(limit=3)] == [5, 6, 7]  # the newest, oldest first
    assert [r["inputs"]["x"] for r in reader.read(model_version="a")] == [0, 1, 2, 3, 4]
    assert len(reader.read(since=1500.0)) == 3
    frame = reader.read_frame()
    assert list(frame.columns) == ["x", "prediction", "proba_Adelie", "proba_Gentoo", "_id", "_ts",
                                   "_model_version", "_latency_ms"]
    assert len(frame) == 8 and str(frame["_ts"].dt.tz) == "UTC"
    assert PredictionLog(tmp_path / "absent.sqlite").read() == []


def test_writer_that_falls_behind_drops_and_counts(tmp_path):
    log = PredictionLog(tmp_path / "log.sqlite", max_pending=10)
    log._thread = threading.Thread()  # pretend the writer is running but stuck: nothing drains the queue
    assert log.log("v", [{"a": i} for i in range(8)], [OUT] * 8) == 8
    assert log.log("v", [{"a": i} for i in range(8)], [OUT] * 8) == 0
    assert log.dropped == 8


def test_mismatched_lengths_are_refused(tmp_path):
    with PredictionLog(tmp_path / "log.sqlite") as log, pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        log.log("v", [{"a": 1}, {"a": 2}], [OUT])


def test_two_writers_share_one_file(tmp_path):
    path = tmp_path / "log.sqlite"
    logs = [PredictionLog(path, batch_rows=7, flush_ms=5) for _ in range(2)]

    def write(log, tag):
        for i in range(300):
            log.log("v", [{"w": tag, "i": i}], [OUT])

    threads = [threading.Thread(target=write, args=(log, n)) for n, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    rows = PredictionLog(path).read()
    assert len(rows) == 600
    for tag in (0, 1):
        assert [r["inputs"]["i"] for r in rows if r["inputs"]["w"] == tag] == list(range(300))


def test_committed_rows_survive_sigkill(tmp_path):
    """A writer process is killed with SIGKILL after its rows were committed: they are all there."""
    path = tmp_path / "log.sqlite"
    code = textwrap.dedent(f"""
        import sys, time
        from waypost.serve.predlog import PredictionLog
        log = PredictionLog({str(path)!r}, batch_rows=50, flush_ms=100)
        for i in range(500):
            log.log("v", [{{"i": i}}], [{{"prediction": i}}], latency_ms=1.0)
        print("queued", flush=True)
        time.sleep(600)   # never closes: killed below
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"queued", proc.stderr.read()
        reader = PredictionLog(path)
        deadline = time.monotonic() + 10
        while reader.count() < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    rows = PredictionLog(path).read()
    assert [r["inputs"]["i"] for r in rows] == list(range(500))
    assert [r["outputs"]["prediction"] for r in rows] == list(range(500))


def test_an_unwritable_path_fails_at_open(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        PredictionLog(tmp_path / "taken").open()


def test_columnar_requests_and_records_share_one_numbering(tmp_path):
    """Columns (numpy arrays, as /predict/columns logs them) and records land in segments whose
    rows read back in order, ids running on across segments, filters cutting inside a segment."""
    import numpy as np

    path = tmp_path / "log.sqlite"
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]], dtype=np.float32)
    with PredictionLog(path, flush_ms=10) as log:
        assert log.log_columns("v1", {"bill": np.array([39.1, np.inf, 41.0]), "island": np.array(["Dream", None, "Biscoe"],
                                                                                                 dtype=object)},
                               np.array(["Adelie", "Gentoo", "Adelie"], dtype=object), proba, ["Adelie", "Gentoo"],
                               latency_ms=2.0, ts=1000.0) == 3
        log.flush()
        log.log("v2", [{"bill": 50.5, "island": "Torgersen"}], [OUT], latency_ms=1.0, ts=2000.0)
        with pytest.raises(ValueError, match="do not have the prediction's 3 rows"):
            log.log_columns("v1", {"bill": np.zeros(2)}, np.zeros(3))
    reader = PredictionLog(path)
    rows = reader.read()
    assert [r["id"] for r in rows] == [1, 2, 3, 4] and reader.count() == 4
    assert rows[1]["inputs"] == {"bill": None, "island": None}  # inf and None both read back as null
    assert rows[2]["outputs"] == {"prediction": "Adelie", "probabilities": {"Adelie": 0.5, "Gentoo": 0.5}}
    assert rows[3]["model_version"] == "v2" and rows[3]["inputs"]["island"] == "Torgersen"
    assert [r["id"] for r in reader.read(limit=2)] == [3, 4]  # the cut falls inside the first segment
    assert [r["id"] for r in reader.read(model_version="v1", since=999.0)] == [1, 2, 3]
    frame = reader.read_frame(limit=3)
    assert frame["_id"].tolist() == [2, 3, 4] and frame["proba_Gentoo"].tolist() == pytest.approx([0.7, 0.5, 0.1])
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT first_id, n_rows FROM segments ORDER BY id").fetchall() == [(1, 3), (4, 1)]
    conn.close()
