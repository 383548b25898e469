"""The metrics `evaluate` reports, in the original label/target space."""
from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """y_true: class codes 0..k-1; proba: (n, k) in code order; `threshold`: a binary decision
    threshold on the second class's probability (None: the most probable class)."""
    from sklearn import metrics as skm

    k = proba.shape[1]
    pred = proba.argmax(1) if threshold is None else (proba[:, 1] >= threshold).astype(np.int64)
    # float32 softmax rows (ONNX, int8) sum to 1 within ~1e-7; sklearn's log_loss wants float64-exact
    clipped = np.clip(np.asarray(proba, np.float64), 1e-15, 1.0)
    clipped /= clipped.sum(1, keepdims=True)
    out = {
        "accuracy": skm.accuracy_score(y_true, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, pred),
        "f1_macro": skm.f1_score(y_true, pred, average="macro", labels=list(range(k)), zero_division=0),
        "log_loss": skm.log_loss(y_true, clipped, labels=list(range(k))),
    }
    if k == 2:  # reliability of the probabilities (what a threshold leaves untouched)
        out["brier"] = skm.brier_score_loss(y_true, np.clip(proba[:, 1], 0.0, 1.0), pos_label=1)
    present = np.unique(y_true)
    if len(present) < 2:
        out["roc_auc"] = float("nan")  # undefined with one class in the evaluation data
    elif k == 2:
        out["roc_auc"] = skm.roc_auc_score(y_true, proba[:, 1])
    else:
        p = proba[:, present] / np.clip(proba[:, present].sum(1, keepdims=True), 1e-15, None)
        out["roc_auc"] = skm.roc_auc_score(y_true, p, multi_class="ovr", average="macro", labels=present) if len(present) > 2 else skm.roc_auc_score(y_true == present[1], p[:, 1])
    return {k_: float(v) for k_, v in out.items()}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as skm

    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }


def raw_metrics(predictor: Any, raw: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """`evaluate`'s metrics from a model's raw outputs (probabilities, or standardised values) on
    encoded targets: what fitting, pruning and distillation report without predicting again."""
    from waypost.tasks import get_task

    return get_task(predictor.task_).metrics(y, raw, predictor.target_encoder_)
