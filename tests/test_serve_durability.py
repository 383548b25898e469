"""A prediction answered 200 is in the prediction log, even when the server is killed (SIGKILL)
while requests are in flight; `--log-durability async` trades that away, and says so."""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from servers import free_port, running

from waypost.deploy.bundle import json_records
from waypost.serve.predlog import PredictionLog

ROOT = Path(__file__).resolve().parents[1]


def _argv(bundle: Path, port: int, **kwargs) -> list[str]:
    args = {"host": "127.0.0.1", "port": port, "log_level": "warning", **kwargs}
    code = "import json, sys; from waypost.serve.cli import serve; " f"serve({str(bundle)!r}, **json.loads(sys.argv[1]))"
    return [sys.executable, "-c", code, json.dumps(args)]


async def _flood(url: str, records: list[dict], kill, concurrency: int = 16, kill_after: float = 1.5) -> list[float]:
    """Send records (each with a unique bill_length_mm) until the server dies; returns the unique
    values of the requests answered 200."""
    answered: list[float] = []
    queue = iter(range(10**6))
    start = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        for i in queue:
            if time.monotonic() - start > kill_after and kill():
                return
            record = dict(records[i % len(records)], bill_length_mm=40.0 + i * 1e-3)
            try:
                resp = await client.post("/predict", json=record)
            except httpx.HTTPError:
                return  # the server is gone
            if resp.status_code == 200:
                answered.append(record["bill_length_mm"])

    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return answered


@pytest.mark.parametrize("durability", ["answered", "async"])
def test_every_answered_prediction_survives_sigkill(penguins_bundle, tmp_path, durability):
    _, bundle_dir, test = penguins_bundle
    log_path = tmp_path / "predictions.sqlite"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    records = json_records(test)
    with running(_argv(bundle_dir, port, log_path=str(log_path), log_durability=durability),
                 ready_url=url + "/ready", cwd=ROOT, stop_signal=signal.SIGKILL) as proc:
        killed = []

        def kill() -> bool:  # the first worker past the deadline kills the server mid-flood
            if not killed:
                proc.send_signal(signal.SIGKILL)
                killed.append(time.monotonic())
            return True

        answered = asyncio.run(_flood(url, records, kill))
    assert len(answered) > 100, f"only {len(answered)} answers before the kill: the flood did not run"
    logged = {round(r["inputs"]["bill_length_mm"], 6) for r in PredictionLog(log_path).read()}
    lost = [v for v in answered if round(v, 6) not in logged]
    if durability == "answered":
        assert lost == [], f"{len(lost)} of {len(answered)} answered predictions are missing from the log"
    else:  # async commits every 200 ms: a kill mid-flood loses what was answered since the last commit
        assert lost, "async durability lost nothing: the test did not kill the server mid-flood"


def test_answered_mode_refuses_to_answer_what_it_cannot_log(penguins_bundle, tmp_path):
    """A log that cannot take rows (full) makes the server answer 503, never an unlogged 200."""
    from servers import ThreadServer

    from waypost.serve.app import create_app

    _, bundle_dir, test = penguins_bundle
    app = create_app(bundle_dir, log_path=tmp_path / "log.sqlite")
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        record = json_records(test)[0]
        assert client.post("/predict", json=record).status_code == 200
        server.state.predlog.max_pending = 0  # nothing more fits
        resp = client.post("/predict", json=record)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "prediction log unavailable" in resp.json()["message"]
        columns = {c: [record[c]] for c in record}
        assert client.post("/predict/columns", json={"columns": columns}).status_code == 503
    assert PredictionLog(tmp_path / "log.sqlite").count() == 1
