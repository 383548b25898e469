"""Test environment: offline, no telemetry, HOME and caches in a temp folder, real data sets."""
from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="waypost-test-home-")
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "HOME": _HOME,
        "XDG_CACHE_HOME": os.path.join(_HOME, ".cache"),
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        # Tests run servers, clients and fits side by side on 2 cores: OpenMP threads that spin
        # while waiting (LightGBM, torch) then starve each other (a 0.4 s fit took 95 s).
        "OMP_WAIT_POLICY": "PASSIVE",
    }
)
os.environ.pop("WAYPOST_TRACKING_URI", None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store for the session: creating one runs every migration (seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db"
