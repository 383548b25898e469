"""The binary decision threshold: which probability of the second class makes it the prediction.

Argmax (0.5) maximises accuracy when the probabilities are calibrated; other goals want another
cut: F1 on a rare class, balanced accuracy, or the expected cost of errors when a false negative
(a missed fraud) costs more than a false positive (a blocked card). The threshold is chosen on the
validation outputs (out of fold when bagged, so every training row votes), among the distinct
predicted probabilities, and travels in the target codec's state, so `predict`, the runtime and the
server apply the same cut. Probabilities are untouched: a threshold changes decisions, not their
calibration (the Brier score is reported beside).
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: thresholds tried: the validation probabilities' quantiles (a finer grid only fits noise)
CANDIDATES = 200


def _score(metric: str, y: np.ndarray, pred: np.ndarray, costs: tuple[float, float]) -> float:
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y == 0)))
    fn = float(np.sum((pred == 0) & (y == 1)))
    tn = float(np.sum((pred == 0) & (y == 0)))
    if metric == "f1":
        return 2 * tp / max(2 * tp + fp + fn, 1.0)
    if metric == "balanced_accuracy":
        return 0.5 * (tp / max(tp + fn, 1.0) + tn / max(tn + fp, 1.0))
    if metric == "cost":
        return -(costs[0] * fp + costs[1] * fn) / len(y)
    return (tp + tn) / len(y)


def choose_threshold(y: np.ndarray, p1: np.ndarray, decision: Any) -> tuple[float | None, str]:
    """(threshold, why); (None, "") for `metric: accuracy` (argmax: the calibrated choice)."""
    metric = decision.metric
    if metric == "accuracy":
        return None, ""
    costs = (float(decision.false_positive_cost), float(decision.false_negative_cost))
    grid = np.unique(np.quantile(p1, np.linspace(0.0, 1.0, CANDIDATES)))
    grid = np.unique(np.concatenate([grid, [0.5]]))
    grid = grid[(grid > 0.0) & (grid < 1.0)]
    if len(grid) == 0:
        return None, ""
    scores = np.array([_score(metric, y, (p1 >= t).astype(np.int64), costs) for t in grid])
    best = scores.max()
    tied = grid[scores >= best - 1e-12]
    t = float(tied[np.argmin(np.abs(tied - 0.5))])  # among the best, the one nearest 0.5: the least surprising cut
    base = _score(metric, y, (p1 >= 0.5).astype(np.int64), costs)
    what = {"f1": "F1 of the second class", "balanced_accuracy": "balanced accuracy",
            "cost": f"expected cost (false positive {costs[0]:g}, false negative {costs[1]:g})"}[metric]
    shown = (lambda v: f"{-v:.4f}") if metric == "cost" else (lambda v: f"{v:.4f}")
    return t, (f"decision_metric {metric}: the threshold with the best validation {what} ({shown(best)} against "
               f"{shown(base)} at 0.5), among {len(grid)} candidates")
