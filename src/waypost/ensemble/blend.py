"""GBM + MLP blend: a convex weight fitted on validation data, then keep the best of {GBM, MLP, blend}.

Registered as `blend`, the default for tables. MLPs rarely beat boosted trees alone, but their errors
differ, so a blend often beats both; when it does not, the weight search lands on 0 or 1 and the
selection says which single part won, so the default is never worse than its better part.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.models.registry import register
from waypost.plan import Decision

WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


def validation_loss(task: str, pred: np.ndarray, y: np.ndarray) -> float:
    """The task's validation loss (`waypost.tasks`): log loss for classifiers (rewards calibrated
    probabilities), MSE for regression."""
    from waypost.tasks import get_task

    return get_task(task).validation_loss(pred, y)


def fit_blend_weight(task: str, p_gbm: np.ndarray, p_mlp: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Grid search of w in p = w * gbm + (1 - w) * mlp; returns (w, validation loss)."""
    losses = [validation_loss(task, w * p_gbm + (1.0 - w) * p_mlp, y) for w in WEIGHT_GRID]
    best = int(np.argmin(losses))
    return float(WEIGHT_GRID[best]), float(losses[best])


def select(task: str, scores: dict[str, float], weight: float | None = None) -> Decision:
    """Lowest validation loss wins; ties go to the simpler model (fewer parts to deploy)."""
    order = ["gbm", "mlp", "blend"]
    name = min(scores, key=lambda k: (round(scores[k], 6), order.index(k)))
    from waypost.tasks import get_task

    metric = get_task(task).validation_loss_name
    listed = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    extra = f"; blend weight on GBM = {weight:.2f}" if weight is not None else ""
    return Decision("selection", "selected model", name, f"lowest validation {metric} ({listed}){extra}")


class BlendModel:
    """Weighted average of parts' raw outputs (probabilities or standardised values)."""

    kind = "blend"

    def __init__(self, parts: dict[str, Any], weights: dict[str, float]) -> None:
        self.parts, self.weights = parts, weights

    def predict_raw(self, arrays: Any) -> np.ndarray:
        return self.combine({name: self.parts[name].predict_raw(arrays) for name, w in self.weights.items() if w > 0})

    def combine(self, raws: dict[str, np.ndarray]) -> np.ndarray:
        """The blend of outputs the parts already produced (each part predicts once per batch)."""
        return sum(w * raws[name] for name, w in self.weights.items() if w > 0)


@register(
    "blend",
    data_types={"numeric", "category", "binary", "datetime"},
    requires=("torch", "lightgbm"),
    priority=20,
    tags=("default",),
    reason=(
        "tabular data: GBM + MLP blended with a weight fitted on validation data; the best of "
        "{GBM, MLP, blend} on validation is kept, since MLPs rarely beat boosted trees alone"
    ),
    when="tabular-only tables (the default) when LightGBM is installed",
)
def build_blend(**kwargs: Any) -> BlendModel:
    return BlendModel(**kwargs)
