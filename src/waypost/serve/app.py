"""The online prediction server: FastAPI + the dynamic batcher + Prometheus metrics + prediction log.

``create_app(bundle_path, ...)`` loads an exported bundle with ``waypost.runtime`` (numpy +
onnxruntime, no torch) and returns a FastAPI app:

- ``POST /predict``  one record (JSON object) or a non-empty list of records; every feature of the
  bundle is a required field (``null`` = missing) holding exactly what its kind accepts
  (``waypost.serve.fields``). Returns ``predictions``, ``probabilities`` (classification) and
  ``model_version``. ``POST /predict/columns`` takes the same rows as one array per column (JSON or
  an Arrow IPC stream).
- Answers other than 200: 422 names the field and row at fault; 415 for a Content-Type other than
  JSON (or Arrow on /predict/columns); 413 for a body over ``max_body_bytes``; 401 for a wrong or
  missing ``X-API-Key`` when a key is set; 503 + Retry-After when the queue is full or the request
  waited ``timeout_ms`` without reaching the model. OpenAPI lists each with its schema.
- ``GET /health`` liveness (200 while the process runs); ``GET /ready`` 200 once the bundle is loaded
  and the batcher runs, else 503; ``GET /metrics`` Prometheus text; ``GET /info`` the model's
  features, classes, version and serving limits; ``/docs`` and ``/redoc`` work offline.
- With an API key, /predict, /predict/columns, /info and /metrics need it (/metrics not with
  ``metrics_public``); /health, /ready, /docs, /redoc and /openapi.json stay open (``guard``).

Uvicorn with ``--workers N`` imports ``waypost.serve.app:app_from_env`` (a factory) in each worker;
settings travel in ``WAYPOST_SERVE_*`` environment variables (see ``ENV``). The API key never
does: a worker reads it from ``$WAYPOST_API_KEY`` (inherited) or from the file named by
``WAYPOST_SERVE_API_KEY_FILE``, so it appears in no command line and no copied variable.

The server never opens a path sent by a client: records carry values only. Image features are
base64 strings, decoded to bytes by the schema before the bundle sees them (the runtime would read
a string as a file path); the prediction log keeps their SHA-256 and size, not the image.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from waypost.serve.answer import predict_body
from waypost.serve.batcher import Batcher
from waypost.serve.columnar import ARROW_STREAM, predict_columns_body
from waypost.serve.defaults import (MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_IMAGE_PIXELS, MAX_LATENCY_MS, QUEUE_SIZE,
                                    TIMEOUT_MS)
from waypost.serve.guard import API_KEY_HEADER, Guard, json_response, protected_paths
from waypost.serve.metrics import ServeMetrics, multiprocess_dir
from waypost.serve.openapi import install_docs, key_responses, prediction_responses, refine_answers
from waypost.serve.predlog import PredictionLog
from waypost.serve.schema import (ColumnsResponse, ErrorResponse, PredictResponse, RecordSchema,
                                  ValidationErrorResponse)

log = logging.getLogger("waypost.serve")

API_KEY_ENV = "WAYPOST_API_KEY"
# create_app keyword -> environment variable read by app_from_env (the --workers path)
ENV = {
    "bundle_path": "WAYPOST_SERVE_BUNDLE",
    "max_batch_size": "WAYPOST_SERVE_MAX_BATCH_SIZE",
    "max_latency_ms": "WAYPOST_SERVE_MAX_LATENCY_MS",
    "queue_size": "WAYPOST_SERVE_QUEUE_SIZE",
    "timeout_ms": "WAYPOST_SERVE_TIMEOUT_MS",
    "api_key_file": "WAYPOST_SERVE_API_KEY_FILE",
    "metrics_public": "WAYPOST_SERVE_METRICS_PUBLIC",
    "max_body_bytes": "WAYPOST_SERVE_MAX_BODY_BYTES",
    "max_image_pixels": "WAYPOST_SERVE_MAX_IMAGE_PIXELS",
    "log_path": "WAYPOST_SERVE_LOG_PATH",
    "log_durability": "WAYPOST_SERVE_LOG_DURABILITY",
    "intra_op_threads": "WAYPOST_SERVE_THREADS",
}
_CASTS: dict[str, Any] = {"max_batch_size": int, "queue_size": int, "max_body_bytes": int, "max_latency_ms": float,
                          "timeout_ms": float, "max_image_pixels": int, "intra_op_threads": int,
                          "metrics_public": lambda v: {"1": True, "true": True, "0": False, "false": False}[v.lower()]}


def load_bundle(path: str | os.PathLike, intra_op_threads: int | None = None) -> Any:
    import waypost.runtime as rt

    return rt.load(path, intra_op_threads=intra_op_threads)


def read_api_key(path: str | os.PathLike) -> str:
    """The key in a file (surrounding whitespace and the final newline stripped). A file anyone on
    the machine can read gets a warning: the point of a file is that only the server can."""
    file = Path(path).expanduser()
    try:
        key = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the API key file {file}: {exc.strerror or exc}") from None
    if not key:
        raise ValueError(f"the API key file {file} is empty")
    if os.name == "posix" and file.stat().st_mode & 0o004:
        log.warning("the API key file %s is readable by every user (chmod 600 it)", file)
    return key


def _label_key(label: Any) -> str:
    return label if isinstance(label, str) else json.dumps(label)


class _State:
    """Everything one app owns (kept off module globals so several apps can live in one process)."""

    def __init__(self) -> None:
        self.ready = False


class InfoResponse(BaseModel):
    model_version: str
    task: str
    target: str
    features: dict[str, str]
    classes: Optional[list[Any]]
    max_batch_size: int
    max_latency_ms: float
    queue_size: int
    timeout_ms: Optional[float]
    max_body_bytes: int
    max_image_pixels: Optional[int]
    prediction_log: bool


class ReadyResponse(BaseModel):
    status: str
    model_version: str


def create_app(
    bundle_path: str | os.PathLike | Any,
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_latency_ms: float = MAX_LATENCY_MS,
    queue_size: int = QUEUE_SIZE,
    timeout_ms: float | None = TIMEOUT_MS,
    api_key: str | None = None,
    api_key_file: str | os.PathLike | None = None,
    metrics_public: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_image_pixels: int | None = MAX_IMAGE_PIXELS,
    log_path: str | os.PathLike | None = None,
    log_durability: str = "answered",
    intra_op_threads: int | None = None,
) -> FastAPI:
    """Build the serving app for one bundle.

    ``bundle_path`` is a bundle directory (or an already loaded ``waypost.runtime`` bundle).
    ``log_path``: SQLite prediction log; ``None`` logs nothing (``waypost serve`` defaults to
    ``./.waypost/predictions.sqlite``). ``log_durability``: ``answered`` (a 200 is sent only once its
    rows are committed) or ``async`` (faster; a crash loses the last ~200 ms).
    ``api_key`` (or ``api_key_file``, a file holding it): when set, /predict, /predict/columns, /info
    and /metrics need the ``X-API-Key`` header (/metrics not with ``metrics_public``).
    ``timeout_ms``: a request not in the model this long after it arrived gets 503 + Retry-After
    (0 or None: no deadline). ``max_image_pixels``: images declaring more are refused with 422 from
    their header, never decoded (0 or None: no server-side limit; the runtime's own still applies).
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
    if api_key and api_key_file:
        raise ValueError("give the API key once: api_key or api_key_file, not both")
    if api_key_file:
        api_key = read_api_key(api_key_file)
    bundle = bundle_path if hasattr(bundle_path, "infer") else load_bundle(bundle_path, intra_op_threads)
    st = _State()
    st.bundle = bundle
    st.version = str(bundle.version)
    manifest = getattr(bundle, "manifest", None) or {}
    st.schema = RecordSchema(dict(bundle.features), manifest.get("preprocessor"),
                             max_image_pixels=max_image_pixels or None)
    st.classes = list(bundle.classes) if bundle.classes is not None else None
    st.class_keys = [_label_key(c) for c in st.classes] if st.classes is not None else None
    st.api_key = api_key or None
    st.protected = protected_paths(metrics_public)
    st.max_body_bytes = int(max_body_bytes)
    st.metrics = ServeMetrics(max_batch_size=max_batch_size, model_version=st.version)
    st.batcher = Batcher(
        bundle.infer, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
        queue_size=queue_size, timeout_ms=timeout_ms, metrics=st.metrics,
    )
    st.predlog = PredictionLog(log_path, durability=log_durability) if log_path else None
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

    title = "waypost model server"
    app = FastAPI(title=title, version=st.version, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"task: {bundle.task}; target: {bundle.target}; model version: {st.version}")
    app.state.waypost = st
    app.add_middleware(Guard, state=st)
    install_docs(app, title)
    _routes(app, st)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(st.schema.openapi_components())
            for model in (PredictResponse, ColumnsResponse, ErrorResponse, ValidationErrorResponse):
                extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(extra.pop("$defs", {}))
                components[model.__name__] = extra
            refine_answers(components, st.classes, st.class_keys)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _routes(app: FastAPI, st: Any) -> None:
    """The FastAPI routes: the schema's view of the server (the Guard answers the hot paths itself)."""
    key = st.api_key is not None
    api_key_doc = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)  # documents the header; Guard checks it
    deps = [Security(api_key_doc)] if key else []

    def guarded(path: str) -> list[Any]:
        return deps if path in st.protected else []

    @app.post("/predict", response_model=None, dependencies=deps, summary="Predict one record or a list of records",
              openapi_extra={"requestBody": st.schema.request_body()},
              responses=prediction_responses(columns=False, key=key))
    async def predict(request: Request) -> Response:
        code, payload, headers = await predict_body(st, await request.body(), request.scope.get("waypost.arrival"))
        return Response(payload, status_code=code, headers={k.decode(): v.decode() for k, v in headers})

    @app.post(
        "/predict/columns", response_model=None, dependencies=deps,
        summary="Predict many rows sent as one array per column (high throughput)",
        description='JSON body: {"columns": {"<column>": [values...], ...}}: every feature is a required array, '
                    "all of the same length (JSON Schema cannot state that last rule; a body breaking it gets "
                    "422), each value following the feature's rule in PredictRecord. Answer: predictions and, "
                    "for classifiers, probabilities as {label: [p, ...]}. Or an Arrow IPC stream "
                    f"(Content-Type: {ARROW_STREAM}) with one column per feature; answer: an Arrow IPC "
                    "stream with `prediction` and `proba_<label>` columns, the model version in the "
                    "x-model-version header. Errors are JSON.",
        openapi_extra={"requestBody": st.schema.columns_request_body(ARROW_STREAM)},
        responses=prediction_responses(columns=True, key=key),
    )
    async def predict_columns(request: Request) -> Response:
        code, payload, headers = await predict_columns_body(st, await request.body(),
                                                            request.headers.get("content-type"))
        return Response(payload, status_code=code, headers={k.decode(): v.decode() for k, v in headers})

    @app.get("/health", summary="Liveness: 200 while the process runs")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: 200 once the bundle is loaded and the batcher runs",
             response_model=None,
             responses={200: {"model": ReadyResponse, "description": "ready"},
                        503: {"model": ReadyResponse, "description": "starting or stopping"}})
    async def ready() -> Response:
        if st.ready and st.batcher.running:
            return json_response(200, {"status": "ready", "model_version": st.version})
        return json_response(503, {"status": "not ready", "model_version": st.version})

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)", response_model=None,
             response_class=PlainTextResponse, dependencies=guarded("/metrics"),
             responses={200: {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **(key_responses(key) if "/metrics" in st.protected else {})})
    async def metrics() -> Response:
        st.metrics.queue_depth.set(st.batcher.depth())
        return Response(st.metrics.render(), media_type=st.metrics.content_type)

    @app.get("/info", summary="The model: task, features, classes, version, serving limits",
             response_model=InfoResponse, dependencies=guarded("/info"), responses=key_responses(key))
    async def info() -> dict[str, Any]:
        batcher = st.batcher
        return {  # no file paths: where the server keeps its log is none of a client's business
            "model_version": st.version, "task": st.bundle.task, "target": st.bundle.target,
            "features": st.schema.features, "classes": st.classes, "max_batch_size": batcher.max_batch_size,
            "max_latency_ms": batcher.max_latency * 1000.0, "queue_size": batcher.queue_size,
            "timeout_ms": batcher.timeout_ms, "max_body_bytes": st.max_body_bytes,
            "max_image_pixels": st.schema.max_image_pixels, "prediction_log": st.predlog is not None,
        }


def settings_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """create_app keyword arguments from ``WAYPOST_SERVE_*`` variables (see ``ENV``) and the API key
    from ``$WAYPOST_API_KEY`` unless a key file is named."""
    env = os.environ if environ is None else environ
    if not env.get(ENV["bundle_path"]):
        raise RuntimeError(f"{ENV['bundle_path']} is not set: it names the bundle directory to serve")
    out: dict[str, Any] = {}
    for key, var in ENV.items():
        value = env.get(var)
        if value is None or (value == "" and key != "log_path"):
            continue
        if key == "log_path" and value == "":
            continue
        try:
            out[key] = _CASTS.get(key, str)(value)
        except (ValueError, KeyError):
            raise RuntimeError(f"{var}={value!r} is not a valid {key.replace('_', ' ')}") from None
    if "api_key_file" not in out and env.get(API_KEY_ENV):
        out["api_key"] = env[API_KEY_ENV]
    return out


def settings_to_env(**settings: Any) -> dict[str, str]:
    """The inverse of ``settings_from_env``: None values are left out, and so is ``api_key``: a key
    value never goes into a variable this process sets (workers read ``$WAYPOST_API_KEY``, which
    they inherit, or the key file)."""
    out = {}
    for key, value in settings.items():
        if key == "api_key":
            continue
        if key not in ENV:
            raise TypeError(f"unknown serve setting {key!r}")
        if value is not None:
            if key in ("bundle_path", "log_path", "api_key_file"):
                out[ENV[key]] = str(Path(value).expanduser().resolve())
            else:
                out[ENV[key]] = str(int(value)) if isinstance(value, bool) else str(value)
    return out


def app_from_env() -> FastAPI:
    """Uvicorn factory for ``--workers N``: ``uvicorn --factory waypost.serve.app:app_from_env``."""
    settings = settings_from_env()
    bundle = settings.pop("bundle_path")
    return create_app(bundle, **settings)


__all__ = ["create_app", "app_from_env", "predict_body", "read_api_key", "settings_from_env", "settings_to_env", "ENV"]
