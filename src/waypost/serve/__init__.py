"""Online serving: FastAPI app, dynamic batcher, Prometheus metrics, SQLite prediction log.

    from waypost.serve import create_app, PredictionLog
    app = create_app("bundle/", max_batch_size=64, max_latency_ms=5, log_path="preds.sqlite")
    PredictionLog("preds.sqlite").read_frame()      # what was served, for monitoring

Names are imported lazily: ``PredictionLog`` needs only the standard library (and pandas for
``read_frame``), so monitoring code can read the log without FastAPI installed.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "create_app": "waypost.serve.app",
    "app_from_env": "waypost.serve.app",
    "Batcher": "waypost.serve.batcher",
    "Overloaded": "waypost.serve.batcher",
    "ServeMetrics": "waypost.serve.metrics",
    "PredictionLog": "waypost.serve.predlog",
    "DEFAULT_LOG_PATH": "waypost.serve.predlog",
    "RecordSchema": "waypost.serve.schema",
    "serve": "waypost.serve.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'waypost.serve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
