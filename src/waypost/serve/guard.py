"""The server's front door: one pure ASGI middleware in front of FastAPI.

For every request, in this order: metrics, the arrival time (the start of the ``timeout_ms``
deadline), the API key, the Content-Type of a prediction, the body-size limit, and the
``/predict`` + ``/predict/columns`` hot paths. Why here and not in FastAPI dependencies: a refusal
must cost next to nothing (a flood of bad requests is the case it exists for), and FastAPI's router
costs about as much CPU per request as everything else the server does for a single-row
prediction. The FastAPI routes (same functions) stay for the OpenAPI schema and other mounts.

Which paths need the key (``X-API-Key``) when one is set: ``/predict``, ``/predict/columns``,
``/info`` (the model's features and classes) and ``/metrics`` (unless ``metrics_public``, for a
scraper without the key). Open: ``/health`` and ``/ready`` (probes from an orchestrator carry no
secrets), ``/docs``, ``/redoc``, ``/openapi.json`` and the docs' assets (the schema describes the
request format, which clients need before they hold a key; it holds no data). Anything else is a
404 whether or not a key is sent.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any

from fastapi.responses import Response

from waypost.serve.answer import predict_body
from waypost.serve.batcher import REQUEST_ARRIVAL
from waypost.serve.columnar import ARROW_STREAM, predict_columns_body

API_KEY_HEADER = "X-API-Key"
ENDPOINTS = frozenset({"/predict", "/predict/columns", "/health", "/ready", "/metrics", "/info", "/docs", "/redoc",
                       "/openapi.json"})
JSON = "application/json"
# what each prediction endpoint accepts as Content-Type (the media type; parameters such as charset ignored)
ACCEPTED_TYPES = {"/predict": (JSON,), "/predict/columns": (JSON, ARROW_STREAM)}


def protected_paths(metrics_public: bool) -> frozenset[str]:
    """The paths that need ``X-API-Key`` when a key is set (see the module docstring)."""
    paths = {"/predict", "/predict/columns", "/info", "/metrics"}
    if metrics_public:
        paths.discard("/metrics")
    return frozenset(paths)


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(content, separators=(",", ":"), default=str, allow_nan=False), status_code=status,
                    media_type=JSON, headers=headers)


def error_response(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"detail": detail if detail is not None else message, "message": message}, headers)


def media_type(content_type: bytes | str | None) -> str:
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return (content_type or "").split(";")[0].strip().lower()


class Guard:
    """Pure ASGI middleware (see the module docstring). The body is read here, counting bytes as they
    stream in; a declared Content-Length over the limit is refused before reading anything, and a
    chunked body is cut off at the first chunk past the limit."""

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

        predicting = path in ACCEPTED_TYPES and scope["method"] == "POST"
        if predicting:  # the deadline counts from here: body reading and validation are waiting too
            REQUEST_ARRIVAL.set(asyncio.get_running_loop().time())
        arrival = st.batcher.expect() if path == "/predict" else None
        try:
            if st.api_key is not None and path in st.protected and not self._authorised(scope):
                await error_response(401, f"missing or wrong {API_KEY_HEADER} header")(scope, receive, send_status)
                return
            content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
            if predicting and media_type(content_type) not in ACCEPTED_TYPES[path]:
                await self._unsupported(scope, receive, send_status, path, content_type)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive, send_status)
                if body is None:
                    return
                receive = _replay(body, receive)
            # the routed /predict must close this request's arrival too, or the batcher waits for it
            scope["waypost.arrival"] = arrival
            if predicting and st.fast_path:
                if path == "/predict":  # the FastAPI route (docs, other mounts) calls the same code
                    code, payload, headers = await predict_body(st, body, arrival)
                else:
                    code, payload, headers = await predict_columns_body(st, body, content_type)
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

    async def _unsupported(self, scope: dict, receive: Any, send: Any, path: str, content_type: Any) -> None:
        accepted = ACCEPTED_TYPES[path]
        got = "no Content-Type" if content_type is None else f"Content-Type {media_type(content_type)!r}"
        msg = f"unsupported media type: POST {path} takes {' or '.join(accepted)}, got {got}"
        resp = error_response(415, msg, headers={"Accept-Post": ", ".join(accepted)})
        await resp(scope, receive, send)

    async def _read_body(self, scope: dict, receive: Any, send: Any) -> bytes | None:
        limit = self.state.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "invalid Content-Length header")(scope, receive, send)
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
        resp = error_response(413, msg)
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
