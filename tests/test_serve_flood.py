"""`waypost serve` under a flood: every answer is a correct 200 or a 503 with Retry-After, and no
request waits longer than `--timeout-ms` (plus one model call) for its answer.

Where the 8 s p99 of issue #10 came from: measured with httpx at concurrency 200 on 2 shared cores,
the server answered every request within 0.25 s of receiving it (its own latency histogram), while
httpx reported p99 6-9 s; httpx against /health, which does no work, reported p99 5.5 s. The client
spent ~5 ms of CPU per request, so most of that latency was httpx's own backlog. The floods here use
`waypost.serve.loadgen.raw_flood`, a real HTTP/1.1 client on bare sockets (~20 us a request), so the latency they
see is the server's. The deadline is what bounds it when the backlog is in the server: the second
test makes the model slow for real (large images, one per model call) and compares the same flood
with and without `--timeout-ms`.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servers import free_port, metrics_of, percentile, running  # noqa: E402

from waypost.serve.loadgen import raw_flood  # noqa: E402

from waypost.deploy.bundle import json_records  # noqa: E402

WAYPOST = str(Path(sys.executable).with_name("waypost"))


def _serve(bundle: Path, port: int, *options: str) -> list[str]:
    return [WAYPOST, "serve", str(bundle), "--port", str(port), "--log-path", "none", *options]


def _check(results, expected: list[dict], timeout_s: float) -> tuple[list[float], int]:
    """Every answer is a 200 equal to the bundle's own answer for its body, or a 503 with
    Retry-After; returns (latencies, number of 503s)."""
    overloaded = 0
    for status, headers, payload, _, index in results:
        body = json.loads(payload)
        assert status in (200, 503), (status, body)
        if status == 503:
            overloaded += 1
            assert int(headers["retry-after"]) >= 1 and "overloaded" in body["message"], (headers, body)
            continue
        want = expected[index]
        assert body["predictions"] == want["predictions"], (index, body)
        got = np.array([[p[k] for k in sorted(p)] for p in body["probabilities"]])
        np.testing.assert_allclose(got, want["proba"], atol=1e-6)
    return [r[3] for r in results], overloaded


def _expected(bundle: Path, records: list) -> list[dict]:
    import waypost.runtime as rt

    b = rt.load(bundle)
    keys = sorted(str(c) if isinstance(c, str) else json.dumps(c) for c in b.classes)
    order = [[str(c) if isinstance(c, str) else json.dumps(c) for c in b.classes].index(k) for k in keys]
    out = []
    for rec in records:
        res = b.infer([rec] if isinstance(rec, dict) else rec)
        out.append({"predictions": res["prediction"].tolist(), "proba": res["proba"][:, order]})
    return out


@pytest.mark.slow
def test_a_flood_gets_correct_200s_or_503s_with_bounded_latency(penguins_bundle, tmp_path):
    """Issue #10's flood: 2,000 requests at concurrency 200, --queue-size 16, here with
    --timeout-ms 100. Bound: p99 under 1 s (the deadline plus one model call, with room for 2 cores
    shared by the client, the server and other tests; measured 0.17-0.19 s with the machine busy)."""
    _, bundle, test = penguins_bundle
    records = json_records(test.head(5))
    expected = _expected(bundle, records)
    bodies = [json.dumps(r).encode() for r in records]
    port = free_port()
    argv = _serve(bundle, port, "--queue-size", "16", "--timeout-ms", "100")
    with running(argv, ready_url=f"http://127.0.0.1:{port}/ready", cwd=tmp_path):
        results = asyncio.run(raw_flood(port, bodies, 2000, 200))
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            m = metrics_of(client)
    assert len(results) == 2000
    latencies, overloaded = _check(results, expected, 0.1)
    assert 0 < overloaded < 2000, overloaded  # a flood past a 16-request queue: some refused, some served
    assert percentile(latencies, 0.99) < 1.0, percentile(latencies, 0.99)
    assert m[("waypost_errors_total", (("kind", "overloaded"),))] == overloaded
    assert m[("waypost_requests_total", (("endpoint", "/predict"), ("status", "200")))] == 2000 - overloaded


def _big_png(side: int) -> str:
    """A real 3000 x 3000 photo-sized PNG (a smooth gradient: 13 KB on the wire, ~30 ms to decode
    and resize): a request whose preprocessing is slow."""
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side]
    buf = io.BytesIO()
    Image.fromarray(((x + y) % 256).astype(np.uint8), "L").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_the_deadline_bounds_the_wait_behind_a_slow_model(image_bundle, tmp_path):
    """60 concurrent requests, each a large image, one per model call (--max-batch-size 1): without
    a deadline the last waits for the 59 before it (~1.6 s on a quiet machine); with --timeout-ms 150
    no answer takes more than the deadline plus one model call (bound: 0.15 s + 0.6 s of room), and
    the requests it cut get 503 + Retry-After."""
    bundle = image_bundle["bundle"]
    record = {"image": _big_png(3000)}
    expected = _expected(bundle, [{"image": base64.b64decode(record["image"])}])
    body = json.dumps(record).encode()
    worst = {}
    for timeout_ms in ("0", "150"):
        port = free_port()
        argv = _serve(bundle, port, "--max-batch-size", "1", "--timeout-ms", timeout_ms)
        with running(argv, ready_url=f"http://127.0.0.1:{port}/ready", cwd=tmp_path):
            asyncio.run(raw_flood(port, [body], 2, 1))  # warm-up: the first call pays for onnxruntime's set-up
            results = asyncio.run(raw_flood(port, [body], 60, 60))
        latencies, overloaded = _check(results, expected, float(timeout_ms) / 1000)
        worst[timeout_ms] = (max(latencies), overloaded)
    assert worst["0"][1] == 0 and worst["0"][0] > 0.75, worst  # no deadline: the backlog is the latency
    assert worst["150"][1] > 0 and worst["150"][0] < 0.75, worst
