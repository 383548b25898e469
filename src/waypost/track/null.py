"""The tracker for `--no-track`, and figure clean-up shared with the MLflow tracker.

Kept free of heavy imports: the CLI imports the tracker module at start-up.
"""
from __future__ import annotations

import sys
from typing import Any


def _close_figure(fig: Any) -> None:
    """Release a pyplot-managed figure. Bare `Figure`s (waypost.track.plots) need nothing, and
    pyplot is not imported just for this: importing it may pick a GUI backend."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and fig is not None:
        pyplot.close(fig)


class NullTracker:
    """The tracker for `--no-track`: MlflowTracker's methods as no-ops, so callers never branch.

    `log_figure` still closes the figure (callers rely on it to free memory); `log_model` returns
    the same keys as MlflowTracker.log_model, all None.
    """

    run_id: str | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None
    continued = False
    continued_metrics: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _noop(self, *args: Any, **kwargs: Any) -> None:
        return None

    end = log_params = log_metrics = flush = set_tags = log_dict = log_text = _noop
    log_artifacts = log_artifact = register_model = set_alias = _noop

    def start(self) -> NullTracker:
        return self

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        _close_figure(fig)

    def log_model(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict.fromkeys(("model_uri", "model_id", "run_id", "registered_model", "version"))
