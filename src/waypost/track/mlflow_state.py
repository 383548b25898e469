"""The two places where MLflow reads process-wide state (the global tracking URI, a logger), pinned
for one call and restored, so a library using MLflow leaves the user's own MLflow setup alone."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_GLOBAL_URI_LOCK = threading.Lock()


@contextmanager
def pinned_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `uri` for one call, then restore exactly what was there.

    The previous value and MLFLOW_TRACKING_URI (which `set_tracking_uri` rewrites) come back, so
    the user's MLflow setup is untouched. The lock serialises trackers of this process; another
    thread using fluent MLflow at that moment could still see our URI (MLflow has no per-call URI).
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _GLOBAL_URI_LOCK:
        old_uri = getattr(tracking_utils, "_tracking_uri", None)
        old_env = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_uri)
            if old_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old_env


@contextmanager
def quiet_signature_warning(enabled: bool) -> Iterator[None]:
    """Hide MLflow's "Failed to infer model signature" warning when no example was given on purpose."""
    logger = logging.getLogger("mlflow.pyfunc")
    old = logger.level
    if enabled:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)
