"""``waypost serve BUNDLE``: the function behind the command (the Typer app wires its options here)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from waypost.serve.defaults import (MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_IMAGE_PIXELS, MAX_LATENCY_MS, QUEUE_SIZE,
                                    TIMEOUT_MS)
from waypost.errors import ConfigError, ModelFileError
from waypost.serve.predlog import DEFAULT_LOG_PATH

APP_FACTORY = "waypost.serve.app:app_from_env"
API_KEY_ENV = "WAYPOST_API_KEY"
NO_LOG = ("", "none", "off", "false", "0")


def resolve_log_path(log_path: str | os.PathLike | None) -> Path | None:
    """``None`` -> ``./.waypost/predictions.sqlite``; ``""``/``"none"``/``"off"`` -> no log."""
    if log_path is None:
        return DEFAULT_LOG_PATH.resolve()
    if str(log_path).strip().lower() in NO_LOG:
        return None
    return Path(log_path).expanduser().resolve()


def serve(
    bundle: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_latency_ms: float = MAX_LATENCY_MS,
    queue_size: int = QUEUE_SIZE,
    api_key_file: str | os.PathLike | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    log_path: str | os.PathLike | None = None,
    *,
    timeout_ms: float = TIMEOUT_MS,
    metrics_public: bool = False,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    log_durability: str = "answered",
    intra_op_threads: int | None = None,
    log_level: str = "info",
    access_log: bool = False,
    run: bool = True,
) -> dict[str, Any]:
    """Serve a bundle over HTTP with uvicorn until interrupted.

    - The API key comes from ``$WAYPOST_API_KEY`` or ``api_key_file`` (a file holding it), never from
      the command line, where ``ps`` shows it to every user; both at once is an error. With a key,
      /predict, /predict/columns, /info and /metrics need ``X-API-Key`` (``metrics_public`` leaves
      /metrics open for a scraper); /health, /ready and the docs stay open.
    - ``timeout_ms``: a request not in the model this long after it arrived gets 503 + Retry-After
      (0: no deadline). ``max_image_pixels``: larger images get 422 from their header (0: no limit).
    - ``log_path``: the SQLite prediction log; None means ``./.waypost/predictions.sqlite``,
      ``"none"`` (or ``""``) turns logging off. ``log_durability``: ``answered`` (default: a 200 only
      once its rows are committed) or ``async`` (no wait; a crash can lose the last ~200 ms).
    - ``workers > 1``: uvicorn starts N processes, each importing ``waypost.serve.app:app_from_env``;
      the settings travel in ``WAYPOST_SERVE_*`` variables (the key file's path, never the key: a
      key from ``$WAYPOST_API_KEY`` is inherited as it is), metrics are summed over the workers
      through ``PROMETHEUS_MULTIPROC_DIR`` (a temporary folder unless already set).
    - ``intra_op_threads``: onnxruntime threads per worker; None means ``(cpu_count - 1) // workers``
      (at least 1): one core stays free for the event loops, whose HTTP parsing and validation cost
      more than a tabular model call.
    - ``run=False`` checks everything and returns the settings without starting the server.
    """
    bundle_dir = Path(bundle).expanduser().resolve()
    if not bundle_dir.is_dir():
        raise ModelFileError(f"bundle directory {bundle_dir} does not exist")
    from waypost.runtime.bundle import is_bundle

    if not is_bundle(bundle_dir):
        raise ModelFileError(
            f"{bundle_dir} is not a waypost bundle (no waypost.json); export one with `waypost export MODEL -o DIR`"
        )
    for name, value, low in (("workers", workers, 1), ("max_batch_size", max_batch_size, 1),
                             ("queue_size", queue_size, 1), ("max_body_bytes", max_body_bytes, 1),
                             ("port", port, 0)):
        if value < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    from waypost.serve.predlog import DURABILITIES

    if log_durability not in DURABILITIES:
        raise ConfigError(f"--log-durability must be one of {', '.join(DURABILITIES)}, got {log_durability!r}")
    for name, value in (("max_latency_ms", max_latency_ms), ("timeout_ms", timeout_ms),
                        ("max_image_pixels", max_image_pixels)):
        if value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if timeout_ms and max_latency_ms >= timeout_ms:
        raise ConfigError(f"--timeout-ms ({timeout_ms:g}) must be larger than --max-latency-ms ({max_latency_ms:g}), "
                          "or 0 for no deadline: a batch still filling would outlive its requests")
    env_key = os.environ.get(API_KEY_ENV) or None
    if env_key and api_key_file:
        raise ConfigError(f"the API key is given twice (${API_KEY_ENV} and --api-key-file): use one")
    if api_key_file:
        from waypost.serve.app import read_api_key

        api_key_file = Path(api_key_file).expanduser().resolve()
        try:
            read_api_key(api_key_file)  # fail here, naming the file, not in every worker
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    log_file = resolve_log_path(log_path)
    if intra_op_threads is None:  # every core: bulk requests are model-bound (see docs/decisions.md)
        intra_op_threads = max(1, (os.cpu_count() or 1) // workers)
    settings: dict[str, Any] = {
        "bundle_path": bundle_dir, "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms,
        "queue_size": queue_size, "timeout_ms": timeout_ms, "api_key_file": api_key_file,
        "metrics_public": metrics_public, "max_body_bytes": max_body_bytes, "max_image_pixels": max_image_pixels,
        "log_path": log_file, "log_durability": log_durability, "intra_op_threads": intra_op_threads,
    }

    from waypost.serve.app import create_app, settings_to_env

    import uvicorn

    if workers == 1:
        app = create_app(bundle_dir, api_key=env_key, **{k: v for k, v in settings.items() if k != "bundle_path"})
        if run:
            _announce(host, port, workers, log_file, protected=bool(env_key or api_key_file))
            uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                        timeout_graceful_shutdown=10)
        return settings

    # Fail here, once, rather than in every worker (uvicorn would keep restarting them).
    from waypost.serve.app import load_bundle

    load_bundle(bundle_dir, intra_op_threads=1)
    env = settings_to_env(**settings)
    if log_file is None:
        env["WAYPOST_SERVE_LOG_PATH"] = ""
    if run:
        os.environ.update(env)
        own_dir = None
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            own_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="waypost-metrics-")
        _announce(host, port, workers, log_file, protected=bool(env_key or api_key_file))
        try:
            uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                        access_log=access_log, timeout_graceful_shutdown=10)
        finally:
            if own_dir is not None:
                shutil.rmtree(own_dir, ignore_errors=True)
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return settings


def _announce(host: str, port: int, workers: int, log_file: Path | None, protected: bool) -> None:
    print(
        f"waypost serve: http://{host}:{port} (docs at /docs, metrics at /metrics), {workers} worker(s), "
        f"prediction log: {log_file or 'off'}, API key: {'required' if protected else 'none'}",
        file=sys.stderr, flush=True,
    )
