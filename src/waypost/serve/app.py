"""The online prediction server: FastAPI + the dynamic batcher + Prometheus metrics + prediction log.

``create_app(bundle_path, ...)`` loads an exported bundle with ``waypost.runtime`` (numpy +
onnxruntime, no torch) and returns a FastAPI app:

- ``POST /predict``  one record (JSON object) or a non-empty list of records; every feature of the
  bundle is a required field (``null`` = missing). Returns ``predictions``, ``probabilities``
  (classification) and ``model_version``. 422 names the field at fault, 413 for a body over
  ``max_body_bytes``, 401 for a wrong/missing ``X-API-Key`` when a key is set, 503 + Retry-After
  when the batcher's queue is full.
- ``GET /health`` liveness (200 while the process runs); ``GET /ready`` 200 once the bundle is loaded
  and the batcher runs, else 503; ``GET /metrics`` Prometheus text; ``GET /info`` the model's
  features, classes and version; ``/docs`` OpenAPI with one field per column.

Uvicorn with ``--workers N`` imports ``waypost.serve.app:app_from_env`` (a factory) in each worker;
settings travel in ``WAYPOST_SERVE_*`` environment variables (see ``ENV``).

The server never opens a path sent by a client: records carry values only. Image features are
base64 strings, decoded to bytes by the schema before the bundle sees them (the runtime would read
a string as a file path); the prediction log keeps their SHA-256 and size, not the image.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import APIKeyHeader

from waypost.serve.defaults import MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_LATENCY_MS, QUEUE_SIZE
from waypost.serve.answer import predict_body
from waypost.serve.batcher import Batcher
from waypost.serve.columnar import ARROW_STREAM, predict_columns_body
from waypost.serve.metrics import ServeMetrics, multiprocess_dir
from waypost.serve.predlog import PredictionLog
from waypost.serve.schema import ErrorResponse, PredictResponse, RecordSchema

log = logging.getLogger("waypost.serve")

API_KEY_HEADER = "X-API-Key"
PROTECTED = frozenset({"/predict", "/predict/columns"})
ENDPOINTS = frozenset({"/predict", "/predict/columns", "/health", "/ready", "/metrics", "/info", "/docs", "/openapi.json"})

# create_app keyword -> environment variable read by app_from_env (the --workers path)
ENV = {
    "bundle_path": "WAYPOST_SERVE_BUNDLE",
    "max_batch_size": "WAYPOST_SERVE_MAX_BATCH_SIZE",
    "max_latency_ms": "WAYPOST_SERVE_MAX_LATENCY_MS",
    "queue_size": "WAYPOST_SERVE_QUEUE_SIZE",
    "api_key": "WAYPOST_SERVE_API_KEY",
    "max_body_bytes": "WAYPOST_SERVE_MAX_BODY_BYTES",
    "log_path": "WAYPOST_SERVE_LOG_PATH",
    "intra_op_threads": "WAYPOST_SERVE_THREADS",
}


def load_bundle(path: str | os.PathLike, intra_op_threads: int | None = None) -> Any:
    import waypost.runtime as rt

    return rt.load(path, intra_op_threads=intra_op_threads)


def _label_key(label: Any) -> str:
    return label if isinstance(label, str) else json.dumps(label)


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(content, separators=(",", ":"), default=str), status_code=status,
        media_type="application/json", headers=headers,
    )


def _error(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"detail": detail if detail is not None else message, "message": message}, headers)


class _Guard:
    """Pure ASGI middleware: metrics for every request, API key, the body-size limit, and the
    /predict hot path.

    The body of a request is read here, counting bytes as they stream in; a declared
    Content-Length over the limit is refused before reading anything, and a chunked body is cut
    off at the first chunk past the limit. ``POST /predict`` is then answered here by
    ``predict_body`` without going through FastAPI's router, which costs about as much CPU per
    request as everything else the server does for a single-row prediction; the FastAPI route
    (same function) stays for the OpenAPI schema. Other paths go on to FastAPI with the body replayed.
    """

    def __init__(self, app: Any, state: Any):
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        arrival = st.batcher.expect() if path == "/predict" else None
        try:
            if st.api_key is not None and path in PROTECTED and not self._authorised(scope):
                await _error(401, f"missing or wrong {API_KEY_HEADER} header")(scope, receive, send_status)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive, send_status)
                if body is None:
                    return
                receive = _replay(body, receive)
            # the routed /predict must close this request's arrival too, or the batcher waits for it
            scope["waypost.arrival"] = arrival
            if path == "/predict/columns" and st.fast_path and scope["method"] == "POST":
                content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
                code, payload, headers = await predict_columns_body(st, body, content_type)
                status[0] = code
                await send({"type": "http.response.start", "status": code, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
                return
            if arrival is not None and st.fast_path and scope["method"] == "POST":
                # the hot path skips FastAPI's routing; the /predict route (docs, other mounts) calls the same code
                code, payload, headers = await predict_body(st, body, arrival)
                status[0] = code
                await send({"type": "http.response.start", "status": code, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
                return
            await self.app(scope, receive, send_status)
        finally:
            if arrival is not None:
                arrival.done()
            st.metrics.observe_request(endpoint, status[0], time.perf_counter() - t0)

    def _authorised(self, scope: dict) -> bool:
        want = self.state.api_key.encode()
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                return hmac.compare_digest(value, want)
        return False

    async def _read_body(self, scope: dict, receive: Any, send: Any) -> bytes | None:
        limit = self.state.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _error(400, "invalid Content-Length header")(scope, receive, send)
                    return None
                if declared > limit:
                    await self._too_large(scope, receive, send, declared)
                    return None
                break
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, size)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: dict, receive: Any, send: Any, size: int) -> None:
        msg = f"request body too large: {size} bytes > max_body_bytes={self.state.max_body_bytes}"
        resp = _error(413, msg)
        resp.headers["Connection"] = "close"  # the rest of the body is never read
        await resp(scope, receive, send)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _State:
    """Everything one app owns (kept off module globals so several apps can live in one process)."""

    def __init__(self) -> None:
        self.ready = False


def create_app(
    bundle_path: str | os.PathLike | Any,
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_latency_ms: float = MAX_LATENCY_MS,
    queue_size: int = QUEUE_SIZE,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    log_path: str | os.PathLike | None = None,
    intra_op_threads: int | None = None,
) -> FastAPI:
    """Build the serving app for one bundle.

    ``bundle_path`` is a bundle directory (or an already loaded ``waypost.runtime`` bundle).
    ``log_path``: SQLite prediction log; ``None`` logs nothing (``waypost serve`` defaults to
    ``./.waypost/predictions.sqlite``). ``api_key``: when set, /predict needs the ``X-API-Key`` header.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    bundle = bundle_path if hasattr(bundle_path, "infer") else load_bundle(bundle_path, intra_op_threads)
    st = _State()
    st.bundle = bundle
    st.version = str(bundle.version)
    st.schema = RecordSchema(dict(bundle.features))
    st.classes = list(bundle.classes) if bundle.classes is not None else None
    st.class_keys = [_label_key(c) for c in st.classes] if st.classes is not None else None
    st.api_key = api_key or None
    st.max_body_bytes = int(max_body_bytes)
    st.metrics = ServeMetrics(max_batch_size=max_batch_size, model_version=st.version)
    st.batcher = Batcher(
        bundle.infer, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
        queue_size=queue_size, metrics=st.metrics,
    )
    st.predlog = PredictionLog(log_path) if log_path else None
    st.fast_path = True  # False routes POST /predict through FastAPI (same answers, more CPU per request)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if st.predlog is not None:
            st.predlog.open()
        await st.batcher.start()
        st.ready = True
        log.info("serving %s (%s), %d features", st.version, bundle.task, len(st.schema.columns))
        try:
            yield
        finally:
            st.ready = False
            await st.batcher.stop()
            if st.predlog is not None:
                st.predlog.close()
            if multiprocess_dir():
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(
        title="waypost model server",
        version=st.version,
        description=f"task: {bundle.task}; target: {bundle.target}; model version: {st.version}",
        lifespan=lifespan,
    )
    app.state.waypost = st
    app.add_middleware(_Guard, state=st)

    api_key_doc = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)  # documents the header; _Guard checks it
    deps = [Security(api_key_doc)] if st.api_key else []

    @app.post(
        "/predict",
        response_model=None,
        dependencies=deps,
        openapi_extra={"requestBody": st.schema.request_body()},
        responses={
            200: {"model": PredictResponse, "description": "one prediction per record, in order"},
            401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key"},
            413: {"model": ErrorResponse, "description": "body larger than max_body_bytes"},
            422: {"model": ErrorResponse, "description": "a field is missing, unknown or of the wrong "
                                                     "type, or an image is not base64 of image bytes"},
            503: {"model": ErrorResponse, "description": "queue full, retry after Retry-After seconds"},
        },
        summary="Predict one record or a list of records",
    )
    async def predict(request: Request) -> Response:
        code, payload, headers = await predict_body(st, await request.body(), request.scope.get("waypost.arrival"))
        return Response(payload, status_code=code, headers={k.decode(): v.decode() for k, v in headers})

    @app.post(
        "/predict/columns",
        summary="Predict many rows sent as one array per column (high throughput)",
        description='JSON body: {"columns": {"<column>": [values...], ...}}; answer: predictions and, for '
                    "classifiers, probabilities as {label: [p, ...]}. Or an Arrow IPC stream "
                    f"(Content-Type: {ARROW_STREAM}) with one column per feature; answer: an Arrow IPC "
                    "stream with `prediction` and `proba_<label>` columns, the model version in the "
                    "x-model-version header. Errors are JSON.",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "required": ["columns"], "properties": {
                "columns": {"type": "object", "additionalProperties": {"type": "array"}}}}},
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def predict_columns(request: Request) -> Response:
        code, payload, headers = await predict_columns_body(st, await request.body(),
                                                            request.headers.get("content-type"))
        return Response(payload, status_code=code, headers={k.decode(): v.decode() for k, v in headers})

    @app.get("/health", summary="Liveness: 200 while the process runs")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: 200 once the bundle is loaded and the batcher runs")
    async def ready() -> Response:
        if st.ready and st.batcher.running:
            return _json(200, {"status": "ready", "model_version": st.version})
        return _json(503, {"status": "not ready", "model_version": st.version})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        st.metrics.queue_depth.set(st.batcher.depth())
        return Response(st.metrics.render(), media_type=st.metrics.content_type)

    @app.get("/info", summary="The model: task, features, classes, version, batching settings")
    async def info() -> dict[str, Any]:
        return {
            "model_version": st.version,
            "task": bundle.task,
            "target": bundle.target,
            "features": st.schema.features,
            "classes": st.classes,
            "max_batch_size": st.batcher.max_batch_size,
            "max_latency_ms": st.batcher.max_latency * 1000.0,
            "queue_size": st.batcher.queue_size,
            "max_body_bytes": st.max_body_bytes,
            "prediction_log": str(st.predlog.path) if st.predlog is not None else None,
        }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(st.schema.openapi_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def settings_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """create_app keyword arguments from ``WAYPOST_SERVE_*`` variables (see ``ENV``)."""
    env = os.environ if environ is None else environ
    if not env.get(ENV["bundle_path"]):
        raise RuntimeError(f"{ENV['bundle_path']} is not set: it names the bundle directory to serve")
    casts = {"max_batch_size": int, "queue_size": int, "max_body_bytes": int, "max_latency_ms": float,
             "intra_op_threads": int}
    out: dict[str, Any] = {}
    for key, var in ENV.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        try:
            out[key] = casts.get(key, str)(value)
        except ValueError:
            raise RuntimeError(f"{var}={value!r} is not a valid {casts[key].__name__}") from None
    return out


def settings_to_env(**settings: Any) -> dict[str, str]:
    """The inverse of ``settings_from_env``: None values are left out."""
    out = {}
    for key, value in settings.items():
        if key not in ENV:
            raise TypeError(f"unknown serve setting {key!r}")
        if value is not None:
            out[ENV[key]] = str(Path(value).resolve()) if key in ("bundle_path", "log_path") else str(value)
    return out


def app_from_env() -> FastAPI:
    """Uvicorn factory for ``--workers N``: ``uvicorn --factory waypost.serve.app:app_from_env``."""
    settings = settings_from_env()
    bundle = settings.pop("bundle_path")
    return create_app(bundle, **settings)


__all__ = ["create_app", "app_from_env", "predict_body", "settings_from_env", "settings_to_env", "ENV"]
