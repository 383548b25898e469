"""Regression: a standardised target (mean 0, std 1 on the training rows), one output, MSE for
selection, the mean and std in the bundle to answer in the target's own units."""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.errors import DataError
from waypost.tasks import register_task
from waypost.tasks.base import Task, encoder_state, rows_of

#: quantile bins the split stratifies on: on small, noisy tables (sklearn's diabetes: test R2 of one
#: linear model ranges 0.39-0.59 across random splits) an unstratified split measures the split
REGRESSION_BINS = 10


def values_of(raw: Any) -> np.ndarray:
    """Standardised values (n,) float64 from a raw output (n,) or (n, 1)."""
    arr = rows_of(raw, "regression output")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"regression output: expected values of shape (n,) or (n, 1), got {arr.shape}")
    return arr.astype(np.float64)


def destandardise(values: Any, state: dict[str, Any]) -> np.ndarray:
    """Standardised values back in the target's units, with the encoder state's mean and std."""
    return np.asarray(values, dtype=np.float64) * float(state["std"]) + float(state["mean"])


class Regression(Task):
    validation_loss_name = "MSE"

    def __init__(self) -> None:
        self.name = "regression"
        self._freeze()

    def n_outputs(self, n_classes: int) -> int:
        return 1

    def output_activation(self) -> str:
        return "identity"

    def target_dtype(self) -> Any:
        return np.dtype(np.float32)

    def stratify_labels(self, y: Any) -> Any:
        """Deciles of the target (fewer bins on small tables; None when a bin would hold one row)."""
        import pandas as pd

        values = pd.to_numeric(y, errors="coerce")
        n_bins = int(min(REGRESSION_BINS, max(len(values) // 10, 1)))
        if n_bins < 2:
            return None
        bins = pd.qcut(values.rank(method="first"), n_bins, labels=False)
        return bins if bins.value_counts().min() >= 2 else None

    def split_reason(self) -> str:
        return "target deciles"

    def validation_loss(self, raw: np.ndarray, y: np.ndarray) -> float:
        """MSE on the standardised scale (so it reads the same for any target's units)."""
        return float(np.mean((values_of(raw) - np.asarray(y, dtype=np.float64)) ** 2))

    def choose_loss(self, training: Any, y_train: np.ndarray, n_classes: int = 0) -> tuple[Any, str, Any]:
        from waypost.train.losses import regression_loss

        return regression_loss(training.loss)

    def metrics(self, y: np.ndarray, raw: np.ndarray, encoder: Any) -> dict[str, float]:
        from waypost.metrics import regression_metrics

        state = encoder_state(encoder)
        return regression_metrics(destandardise(values_of(y), state), destandardise(values_of(raw), state))

    def headline_metric(self, n_classes: int) -> str:
        return "r2"

    def decode(self, raw: np.ndarray, encoder_state: dict[str, Any]) -> dict[str, Any]:
        """{"prediction": values in the target's units (n,) float64, "proba": None}."""
        return {"prediction": destandardise(values_of(raw), encoder_state), "proba": None}


register_task(Regression())
