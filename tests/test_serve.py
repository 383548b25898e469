"""waypost serve: a real uvicorn server on loopback serving a bundle exported from a real model.

Most tests run uvicorn in a thread of this process (fast, and the app's batcher can be slowed down
to force a full queue); the prediction-log crash test and the --workers test run `waypost serve`'s
function in a subprocess, which is then killed.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
pytest.importorskip("prometheus_client")

from servers import ThreadServer, free_port, metrics_of, running  # noqa: E402

from waypost.errors import DataError  # noqa: E402
from waypost.serve.app import create_app, settings_from_env, settings_to_env  # noqa: E402
from waypost.serve.batcher import Batcher, Overloaded  # noqa: E402
from waypost.serve.predlog import PredictionLog  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers (the penguins bundle the tests serve is conftest's `penguins_bundle`)
# ---------------------------------------------------------------------------------------------
def _records(frame) -> list[dict]:
    from waypost.deploy.bundle import json_records

    return json_records(frame)


@pytest.fixture
def serve(penguins_bundle):
    """serve(**create_app kwargs) -> a running ThreadServer; stopped after the test."""
    started = []

    def start(**kwargs) -> ThreadServer:
        server = ThreadServer(create_app(penguins_bundle[1], **kwargs)).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def _serve_argv(bundle: Path, port: int, **kwargs) -> list[str]:
    """`waypost serve`'s function in a subprocess (settings as JSON), for `servers.running`."""
    args = {"host": "127.0.0.1", "port": port, "log_level": "warning", **kwargs}
    code = "import json, sys; from waypost.serve.cli import serve; " f"serve({str(bundle)!r}, **json.loads(sys.argv[1]))"
    return [sys.executable, "-c", code, json.dumps(args)]


# ---------------------------------------------------------------------------------------------
# /predict
# ---------------------------------------------------------------------------------------------
def test_predict_single_and_list_match_the_predictor(penguins_bundle, serve):
    predictor, _, test = penguins_bundle
    server = serve()
    records = _records(test)
    assert any(v is None for r in records for v in r.values()), "the test slice should hold missing values"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        one = client.post("/predict", json=records[0])
        assert one.status_code == 200, one.text
        body = one.json()
        assert set(body) == {"predictions", "probabilities", "model_version"}
        assert len(body["predictions"]) == 1 and len(body["probabilities"]) == 1
        assert body["model_version"] == server.state.version

        many = client.post("/predict", json=records)
        assert many.status_code == 200, many.text
        body = many.json()
    expected_proba = predictor.predict_proba(test)
    expected = predictor.predict(test)
    assert body["predictions"] == list(expected)
    assert len(body["probabilities"]) == len(test)
    got = np.array([[row[str(c)] for c in expected_proba.columns] for row in body["probabilities"]])
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(got, expected_proba.to_numpy(), atol=1e-4)
    assert list(body["probabilities"][0]) == [str(c) for c in predictor.classes_]


def test_concurrent_requests_are_batched_and_answered_in_order(penguins_bundle, serve):
    predictor, _, test = penguins_bundle
    server = serve(max_batch_size=32, max_latency_ms=20)
    records = _records(test)[:48]
    expected = list(predictor.predict(test.iloc[:48]))

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            return await asyncio.gather(*(client.post("/predict", json=r) for r in records))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * len(records)
    assert [r.json()["predictions"][0] for r in responses] == expected
    with httpx.Client(base_url=server.url) as client:
        m = metrics_of(client)
    n_batches = m[("waypost_batch_size_rows_count", ())]
    assert m[("waypost_batch_size_rows_sum", ())] == len(records)
    assert m[("waypost_rows_predicted_total", ())] == len(records)
    assert n_batches < len(records), "concurrent single-row requests should share model calls"


def test_validation_errors_are_422_naming_the_field(penguins_bundle, serve):
    _, _, test = penguins_bundle
    server = serve()
    good = _records(test)[0]
    missing = {k: v for k, v in good.items() if k != "bill_depth_mm"}
    cases = {
        "missing": (missing, "bill_depth_mm", "Field required"),
        "wrong type": ({**good, "flipper_length_mm": "long"}, "flipper_length_mm", "expected a finite JSON number"),
        "wrong type (object)": ({**good, "island": {"name": "Biscoe"}}, "island", ""),
        "unknown field": ({**good, "beak_colour": "red"}, "beak_colour", "Extra inputs"),
        "in a list": ([good, missing], "1.bill_depth_mm", "Field required"),
        "empty list": ([], "body", "at least 1"),
    }
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for name, (payload, field, text) in cases.items():
            resp = client.post("/predict", json=payload)
            assert resp.status_code == 422, (name, resp.text)
            body = resp.json()
            assert field in body["message"] and text in body["message"], (name, body)
            assert isinstance(body["detail"], list) and body["detail"], (name, body)
            if field != "body":
                assert field.split(".")[-1] in body["detail"][0]["loc"], (name, body)
        for raw in (b"{not json", b"42", b'"text"'):
            resp = client.post("/predict", content=raw, headers={"content-type": "application/json"})
            assert resp.status_code == 422, (raw, resp.text)
            assert "body" in resp.json()["message"]
        # an explicit null is a missing value, not an error
        assert client.post("/predict", json={k: None for k in good}).status_code == 200
        m = metrics_of(client)
    assert m[("waypost_errors_total", (("kind", "validation"),))] == len(cases) + 3
    assert m[("waypost_requests_total", (("endpoint", "/predict"), ("status", "422")))] == len(cases) + 3


def test_body_over_the_limit_is_413(penguins_bundle, serve):
    _, _, test = penguins_bundle
    server = serve(max_body_bytes=2_000)
    records = _records(test)
    small = records[:2]
    big = records * 3
    assert len(json.dumps(big)) > 2_000
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/predict", json=small).status_code == 200
        declared = client.post("/predict", json=big)  # Content-Length over the limit
        assert declared.status_code == 413, declared.text
        assert "max_body_bytes=2000" in declared.json()["message"]

        def chunks():  # no Content-Length: chunked transfer, counted as it streams
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 500):
                yield payload[i:i + 500]

        streamed = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert "content-length" not in streamed.request.headers
        m = metrics_of(client)
    assert m[("waypost_errors_total", (("kind", "too_large"),))] == 2
    assert m[("waypost_requests_total", (("endpoint", "/predict"), ("status", "413")))] == 2


def test_api_key_guards_predictions_info_and_metrics_not_probes_or_docs(penguins_bundle, serve):
    _, _, test = penguins_bundle
    record = _records(test)[0]
    key = {"X-API-Key": "s3cret"}
    guarded = [("POST", "/predict", record), ("POST", "/predict/columns", {"columns": {k: [v] for k, v in record.items()}}),
               ("GET", "/info", None), ("GET", "/metrics", None)]
    open_paths = ["/health", "/ready", "/docs", "/redoc", "/openapi.json", "/docs/static/swagger-ui-bundle.js"]
    server = serve(api_key="s3cret")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path, body in guarded:
            for headers in ({}, {"X-API-Key": "nope"}):
                resp = client.request(method, path, json=body, headers=headers)
                assert resp.status_code == 401 and "X-API-Key" in resp.json()["message"], (path, headers, resp.text)
            assert client.request(method, path, json=body, headers=key).status_code == 200, path
        for path in open_paths:  # probes carry no secrets; the docs describe the format, not the data
            assert client.get(path).status_code == 200, path
        assert client.get("/no-such-path").status_code == 404
        m = metrics_of(httpx.Client(base_url=server.url, headers=key))
        spec = client.get("/openapi.json").json()
    assert m[("waypost_errors_total", (("kind", "unauthorized"),))] == 2 * len(guarded)
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]
    for path, method in (("/predict", "post"), ("/predict/columns", "post"), ("/info", "get"), ("/metrics", "get")):
        op = spec["paths"][path][method]
        assert op["security"] == [{"APIKeyHeader": []}] and "401" in op["responses"], path
    assert "security" not in spec["paths"]["/health"]["get"] and "security" not in spec["paths"]["/ready"]["get"]

    public = serve(api_key="s3cret", metrics_public=True)  # a scraper without the key
    with httpx.Client(base_url=public.url, timeout=10) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/info").status_code == 401
        assert client.post("/predict", json=record).status_code == 401
        spec = client.get("/openapi.json").json()
    assert "security" not in spec["paths"]["/metrics"]["get"] and "401" not in spec["paths"]["/metrics"]["get"]["responses"]


def test_full_queue_answers_503_with_retry_after(penguins_bundle, serve):
    _, _, test = penguins_bundle
    server = serve(max_batch_size=1, queue_size=1)
    real_infer = server.state.batcher.infer

    def slow_infer(columns):
        time.sleep(0.2)
        return real_infer(columns)

    server.state.batcher.infer = slow_infer
    record = _records(test)[0]

    async def flood():
        limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
        async with httpx.AsyncClient(base_url=server.url, timeout=15, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", json=record) for _ in range(40)))

    responses = asyncio.run(flood())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) > 0 and codes.count(200) > 0, codes
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert "queue is full" in r.json()["message"]
    with httpx.Client(base_url=server.url) as client:
        m = metrics_of(client)
    assert m[("waypost_errors_total", (("kind", "overloaded"),))] == codes.count(503)
    assert m[("waypost_queue_depth", ())] == 0


def test_runtime_errors_become_422_or_500(penguins_bundle, serve):
    _, _, test = penguins_bundle
    server = serve(max_batch_size=64, max_latency_ms=30)
    real_infer = server.state.batcher.infer

    def picky_infer(columns):
        if "Dream" in columns["island"]:
            raise DataError("column 'island': 'Dream' is not allowed here")
        if "Torgersen" in columns["island"]:
            raise RuntimeError("boom")
        return real_infer(columns)

    server.state.batcher.infer = picky_infer
    base = _records(test)[0]
    payloads = [{**base, "island": "Biscoe"}, {**base, "island": "Dream"}, {**base, "island": "Biscoe"}]

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            return await asyncio.gather(*(client.post("/predict", json=p) for p in payloads))

    # merged into one batch, only the request at fault gets the DataError
    codes = [r.status_code for r in asyncio.run(fire())]
    assert codes == [200, 422, 200]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        bad = client.post("/predict", json={**base, "island": "Dream"})
        assert bad.status_code == 422 and "island" in bad.json()["message"]
        boom = client.post("/predict", json={**base, "island": "Torgersen"})
        assert boom.status_code == 500 and "boom" not in boom.text  # no internals leak
        assert client.get("/health").status_code == 200
        m = metrics_of(client)
    assert m[("waypost_errors_total", (("kind", "internal"),))] == 1
    assert m[("waypost_errors_total", (("kind", "validation"),))] == 2


# ---------------------------------------------------------------------------------------------
# health, readiness, schema, metrics
# ---------------------------------------------------------------------------------------------
def test_health_ready_info_and_openapi(penguins_bundle, serve):
    predictor, bundle_dir, _ = penguins_bundle
    app = create_app(bundle_dir)

    async def before_start():  # the ASGI transport runs no lifespan: bundle loaded, batcher not running
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/health")).status_code, (await client.get("/ready")).status_code

    assert asyncio.run(before_start()) == (200, 503)
    from prometheus_client.parser import text_string_to_metric_families

    errors = {s.labels["kind"]: s.value for f in text_string_to_metric_families(app.state.waypost.metrics.render().decode())
              for s in f.samples if s.name == "waypost_errors_total"}
    assert errors["overloaded"] == 0 and sum(errors.values()) == 0  # "not ready yet" is not an error

    server = serve()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_version"] == server.state.version
        info = client.get("/info").json()
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
        m = metrics_of(client)
    assert info["features"] == server.state.bundle.features
    assert info["classes"] == list(predictor.classes_)
    record = spec["components"]["schemas"]["PredictRecord"]
    assert list(record["properties"]) == list(server.state.bundle.features)
    assert sorted(record["required"]) == sorted(server.state.bundle.features)
    assert record["additionalProperties"] is False
    assert {"type": "null"} in record["properties"]["bill_length_mm"]["anyOf"]
    body_schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["anyOf"][1]["type"] == "array"
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}  # not JSON
    assert set(spec["paths"]["/ready"]["get"]["responses"]) == {"200", "503"}
    assert m[("waypost_requests_total", (("endpoint", "/health"), ("status", "200")))] == 1
    assert m[("waypost_model_info", (("model_version", server.state.version),))] == 1
    assert m[("waypost_request_latency_seconds_count", (("endpoint", "/ready"),))] == 1


def test_two_apps_keep_separate_metrics(penguins_bundle):
    a, b = create_app(penguins_bundle[1]), create_app(penguins_bundle[1])
    a.state.waypost.metrics.rows.inc(5)
    assert b"waypost_rows_predicted_total 5.0" in a.state.waypost.metrics.render()
    assert b"waypost_rows_predicted_total 0.0" in b.state.waypost.metrics.render()


# ---------------------------------------------------------------------------------------------
# the batcher on its own
# ---------------------------------------------------------------------------------------------
def _echo_infer(calls):
    def infer(columns):
        x = np.asarray(columns["x"], dtype=float)
        calls.append(len(x))
        if np.isnan(x).any():
            raise DataError("column 'x': NaN is not allowed")
        return {"prediction": x * 2, "proba": None}

    return infer


def test_batcher_merges_up_to_max_batch_size_and_runs_big_requests_alone():
    calls: list[int] = []

    async def main():
        b = Batcher(_echo_infer(calls), max_batch_size=8, max_latency_ms=50, queue_size=100)
        await b.start()
        with b.arriving():  # a request "on its way" keeps the batch open until max_latency_ms
            small = [asyncio.create_task(b.submit({"x": [float(i)] * 3}, 3)) for i in range(5)]
            big = asyncio.create_task(b.submit({"x": [1.0] * 20}, 20))
            await asyncio.sleep(0)
        out = await asyncio.gather(*small, big)
        await b.stop()
        return out

    results = asyncio.run(main())
    assert [r.prediction.tolist() for r in results[:5]] == [[2.0 * i] * 3 for i in range(5)]
    assert results[5].prediction.tolist() == [2.0] * 20
    assert 20 in calls and all(c <= 8 for c in calls if c != 20)
    assert sum(calls) == 35


def test_batcher_isolates_a_bad_request_and_rejects_when_full():
    calls: list[int] = []

    async def main():
        b = Batcher(_echo_infer(calls), max_batch_size=16, max_latency_ms=20, queue_size=3)
        await b.start()
        with b.arriving():
            tasks = [asyncio.create_task(b.submit({"x": [v]}, 1)) for v in (1.0, float("nan"), 3.0)]
            await asyncio.sleep(0)
            with pytest.raises(Overloaded):  # 3 queued, queue_size 3
                await b.submit({"x": [4.0]}, 1)
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return out

    ok1, bad, ok3 = asyncio.run(main())
    assert ok1.prediction.tolist() == [2.0] and ok3.prediction.tolist() == [6.0]
    assert isinstance(bad, DataError) and "x" in str(bad)


def test_batcher_deadline_fails_waiting_requests_and_answers_started_ones():
    """timeout_ms counts from arrival: a request still queued behind a slow batch at its deadline
    fails with DeadlineExceeded (an Overloaded: 503 + Retry-After); one whose batch already runs is
    answered; one that arrives already late never reaches the queue."""
    import time as _time

    from waypost.serve.batcher import DeadlineExceeded

    def slow(columns):
        _time.sleep(0.3)
        return {"prediction": np.asarray(columns["x"], dtype=float) * 2, "proba": None}

    async def main():
        b = Batcher(slow, max_batch_size=1, max_latency_ms=0, queue_size=100, timeout_ms=150)
        await b.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = [asyncio.create_task(b.submit({"x": [float(i)]}, 1)) for i in range(4)]
        out = await asyncio.gather(*tasks, return_exceptions=True)
        waited = loop.time() - t0
        with pytest.raises(DeadlineExceeded, match="timeout_ms=150"):
            await b.submit({"x": [9.0]}, 1, arrived=loop.time() - 0.2)
        await b.stop()
        return out, waited

    (first, *rest), waited = asyncio.run(main())
    assert first.prediction.tolist() == [0.0]  # in the model when the deadline passed: answered
    assert all(isinstance(r, DeadlineExceeded) and r.retry_after >= 1 for r in rest), rest
    assert waited < 0.3 + 0.15 + 0.3  # not 4 x 0.3 s: the queue behind the slow call was cut at 150 ms
    with pytest.raises(ValueError, match="larger than max_latency_ms"):
        Batcher(slow, max_latency_ms=50, timeout_ms=50)


def test_settings_round_trip_through_the_environment(tmp_path):
    env = settings_to_env(bundle_path=tmp_path, max_batch_size=16, max_latency_ms=2.5, api_key="k",
                          api_key_file=tmp_path / "key", metrics_public=True, timeout_ms=250.0,
                          max_image_pixels=1000, log_path=tmp_path / "p.sqlite", queue_size=None)
    assert env["WAYPOST_SERVE_BUNDLE"] == str(tmp_path.resolve())
    assert "k" not in env.values()  # a key value never goes into a variable the server sets
    back = settings_from_env(env)
    assert back == {"bundle_path": str(tmp_path.resolve()), "max_batch_size": 16, "max_latency_ms": 2.5,
                    "api_key_file": str((tmp_path / "key").resolve()), "metrics_public": True,
                    "timeout_ms": 250.0, "max_image_pixels": 1000, "log_path": str((tmp_path / "p.sqlite").resolve())}
    # the key a worker inherits in $WAYPOST_API_KEY (what `waypost serve` reads) when no file is named
    assert settings_from_env({"WAYPOST_SERVE_BUNDLE": "b", "WAYPOST_API_KEY": "k"})["api_key"] == "k"
    with pytest.raises(RuntimeError, match="WAYPOST_SERVE_BUNDLE"):
        settings_from_env({})
    with pytest.raises(RuntimeError, match="WAYPOST_SERVE_MAX_BATCH_SIZE"):
        settings_from_env({"WAYPOST_SERVE_BUNDLE": "b", "WAYPOST_SERVE_MAX_BATCH_SIZE": "many"})


def test_serve_checks_its_arguments(tmp_path, penguins_bundle):
    from waypost.errors import ConfigError, ModelFileError
    from waypost.serve.cli import serve

    with pytest.raises(ModelFileError, match="not a waypost bundle"):
        serve(tmp_path, run=False)
    with pytest.raises(ConfigError, match="--max-batch-size"):
        serve(penguins_bundle[1], max_batch_size=0, run=False)
    with pytest.raises(ConfigError, match="--timeout-ms .* must be larger than --max-latency-ms"):
        serve(penguins_bundle[1], max_latency_ms=50, timeout_ms=20, run=False)
    assert serve(penguins_bundle[1], timeout_ms=0, run=False)["timeout_ms"] == 0  # 0: no deadline
    settings = serve(penguins_bundle[1], log_path="none", run=False)
    assert settings["log_path"] is None
    settings = serve(penguins_bundle[1], run=False)
    assert settings["log_path"] == (Path.cwd() / ".waypost" / "predictions.sqlite").resolve()


# ---------------------------------------------------------------------------------------------
# processes: prediction log across SIGKILL, --workers
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_prediction_log_survives_sigkill(penguins_bundle, tmp_path):
    predictor, bundle_dir, test = penguins_bundle
    log_path = tmp_path / "logs" / "predictions.sqlite"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = _serve_argv(bundle_dir, port, log_path=str(log_path))
    with running(argv, ready_url=url + "/ready", cwd=ROOT, stop_signal=signal.SIGKILL) as proc:
        records = _records(test)[:30]
        with httpx.Client(base_url=url, timeout=10) as client:
            for r in records[:10]:
                assert client.post("/predict", json=r).status_code == 200
            batch = client.post("/predict", json=records[10:])
            assert batch.status_code == 200
            served = client.post("/predict", json=records).json()
        log = PredictionLog(log_path)
        deadline = time.monotonic() + 10
        while log.count() < 60 and time.monotonic() < deadline:  # the writer commits every 200 ms
            time.sleep(0.05)
        assert log.count() == 60
    assert proc.returncode == -signal.SIGKILL
    rows = PredictionLog(log_path).read()
    assert len(rows) == 60
    assert [r["inputs"] for r in rows[:30]] == records
    assert [r["inputs"] for r in rows[30:]] == records
    version = served["model_version"]
    assert {r["model_version"] for r in rows} == {version}
    assert [r["outputs"]["prediction"] for r in rows[30:]] == served["predictions"]
    assert [r["outputs"]["probabilities"] for r in rows[30:]] == served["probabilities"]
    assert all(r["latency_ms"] > 0 for r in rows)
    frame = PredictionLog(log_path).read_frame()
    assert len(frame) == 60 and {"island", "prediction", "proba_Adelie", "_ts"} <= set(frame.columns)


def _group_processes(pgid: int) -> list[int]:
    """The pids of a process group (the server and its uvicorn workers), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_workers_share_settings_and_metrics_and_the_key_is_in_no_argv(penguins_bundle, tmp_path):
    _, bundle_dir, test = penguins_bundle
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = "k2-" + "x" * 20
    key_file = tmp_path / "api.key"
    key_file.write_text(secret + "\n")
    key_file.chmod(0o600)
    waypost = str(Path(sys.executable).with_name("waypost"))
    argv = [waypost, "serve", str(bundle_dir), "--port", str(port), "--workers", "2", "--api-key-file", str(key_file),
            "--log-path", "none", "--max-batch-size", "8"]
    with running(argv, ready_url=url + "/health", cwd=tmp_path) as proc:
        record = _records(test)[0]
        with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": secret}) as client:
            codes = [client.post("/predict", json=record).status_code for _ in range(20)]
            assert codes == [200] * 20
            assert httpx.post(url + "/predict", json=record).status_code == 401
            info = client.get("/info").json()
            assert info["max_batch_size"] == 8 and info["prediction_log"] is False
            m = metrics_of(client)  # whichever worker answers, the counters add up both
            assert m[("waypost_rows_predicted_total", ())] == 20
            assert m[("waypost_errors_total", (("kind", "unauthorized"),))] == 1
            pids = _group_processes(proc.pid)
            assert len(pids) >= 3, pids  # the supervisor and two workers
            for pid in pids:  # `ps` shows argv to every user; /proc/PID/environ only to the owner
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert secret.encode() not in cmdline, (pid, cmdline)
                assert secret.encode() not in Path(f"/proc/{pid}/environ").read_bytes(), pid


def test_the_fastapi_route_gives_the_same_answers_as_the_hot_path(penguins_bundle):
    """POST /predict is answered in the middleware; the FastAPI route (kept for the OpenAPI schema)
    runs the same code."""
    _, bundle_dir, test = penguins_bundle
    # a lone request must not wait for the batch to fill: with 2 s of max latency, a path that left
    # its arrival open would take 2 s
    app = create_app(bundle_dir, max_latency_ms=2000.0, timeout_ms=10_000)
    st = app.state.waypost
    record = _records(test)[0]

    async def main():
        await st.batcher.start()
        try:
            results = []
            for fast in (True, False):  # answered in the middleware, then by the FastAPI route
                st.fast_path = fast
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    t0 = time.perf_counter()
                    ok = await client.post("/predict", json=[record, record])
                    assert time.perf_counter() - t0 < 1.0, f"fast_path={fast} waited for the batch window"
                    bad = await client.post("/predict", json={**record, "bill_length_mm": "x"})
                results.append((ok.status_code, ok.json(), bad.status_code, bad.json()["message"]))
            return results
        finally:
            await st.batcher.stop()

    fast, routed = asyncio.run(main())
    assert fast == routed
    assert fast[0] == 200 and fast[2] == 422 and "bill_length_mm" in fast[3]


def test_columnar_endpoint_matches_the_predictor_and_names_bad_fields(penguins_bundle, serve, tmp_path):
    predictor, _, test = penguins_bundle
    server = serve(log_path=tmp_path / "log.sqlite")
    records = _records(test)
    columns = {c: [r[c] for r in records] for c in records[0]}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        resp = client.post("/predict/columns", json={"columns": columns})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        bad = client.post("/predict/columns", json={"columns": {**columns, "bill_length_mm": ["long"] + columns["bill_length_mm"][1:]}})
        unknown = client.post("/predict/columns", json={"columns": {**columns, "colour": columns["island"]}})
        ragged = client.post("/predict/columns", json={"columns": {**columns, "island": columns["island"][:3]}})
        shape = client.post("/predict/columns", json=records[:2])
        metrics = metrics_of(client)
    assert body["predictions"] == list(predictor.predict(test))
    expected = predictor.predict_proba(test)
    got = np.array([body["probabilities"][str(c)] for c in expected.columns]).T
    np.testing.assert_allclose(got, expected.to_numpy(), atol=1e-4)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "columns", "bill_length_mm", 0]
    assert unknown.status_code == 422 and "body.columns.colour: Extra inputs are not permitted" in unknown.json()["message"]
    assert ragged.status_code == 422 and "one length" in ragged.json()["message"]
    assert shape.status_code == 422
    assert metrics[("waypost_requests_total", (("endpoint", "/predict/columns"), ("status", "422")))] == 4
    server.state.predlog.flush()
    from waypost.serve.predlog import PredictionLog

    assert PredictionLog(tmp_path / "log.sqlite").count() == len(test)
