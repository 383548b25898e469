"""Binary and multiclass classification: class codes 0..k-1, softmax probabilities, log loss for
selection, the label map in the bundle. One class, two registered instances.

The label codec's numpy half lives here (`label_array`): `TargetEncoder.inverse_transform`, the
runtime and the server all turn codes into labels through it, so a model trained on labels 0/1
answers int64 0/1 everywhere, bools answer bools, strings answer strings.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.errors import DataError
from waypost.tasks import register_task
from waypost.tasks.base import Task, rows_of

#: label maps whose label array is kept (a server answers with the same one on every request)
_CACHE_LIMIT = 64


def label_array(classes: list[Any]) -> np.ndarray:
    """The classes as an array of their own type: int64 for ints, bool for bools, float64 for
    numbers with a fraction among ints, object (Python str) otherwise. Index it with class codes."""
    kinds = {type(c) for c in classes}
    dtype: Any = object
    if kinds == {int}:
        dtype = np.int64
    elif kinds == {bool}:
        dtype = bool
    elif kinds <= {int, float}:
        dtype = np.float64
    return np.asarray(classes, dtype=dtype)


class Classification(Task):
    is_classification = True
    validation_loss_name = "log loss"

    def __init__(self, name: str) -> None:
        self.name = name
        self._labels: dict[tuple[tuple[str, Any], ...], np.ndarray] = {}  # label map -> its label array (a cache)
        self._freeze()

    def n_outputs(self, n_classes: int) -> int:
        return int(n_classes)

    def output_activation(self) -> str:
        return "softmax"

    def target_dtype(self) -> Any:
        return np.dtype(np.int64)

    def stratify_labels(self, y: Any) -> Any:
        """The class itself, when every class has two rows or more (else a random split)."""
        counts = y.value_counts()
        return y if len(counts) > 1 and counts.min() >= 2 else None

    def split_reason(self) -> str:
        return "the class"

    def validation_loss(self, raw: np.ndarray, y: np.ndarray) -> float:
        """Log loss: rewards calibrated probabilities."""
        proba = self._proba(raw, None)
        codes = np.asarray(y, dtype=np.int64)
        p = np.clip(proba[np.arange(len(codes)), codes], 1e-15, 1.0)
        return float(-np.mean(np.log(p)))

    def choose_loss(self, training: Any, y_train: np.ndarray, n_classes: int = 0) -> tuple[Any, str, Any]:
        from waypost.train.losses import classification_loss

        counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=int(n_classes))
        return classification_loss(training.loss, training.imbalance, training.focal_gamma, counts)

    def metrics(self, y: np.ndarray, raw: np.ndarray, encoder: Any) -> dict[str, float]:
        """Label metrics of the predictions `decode` gives (the decision threshold, when one was
        chosen), probability metrics of the probabilities."""
        from waypost.metrics import classification_metrics

        # `encoder` may be a TargetEncoder or None (label-free callers): no threshold then
        return classification_metrics(np.asarray(y, dtype=np.int64), self._proba(raw, None),
                                      getattr(encoder, "threshold_", None))

    def choose_threshold(self, y: np.ndarray, raw: np.ndarray, decision: Any) -> tuple[float | None, str]:
        """(the probability of the second class above which it is predicted, why); None keeps the
        most probable class. Binary targets only, from validation (or out-of-fold) outputs."""
        from waypost.tasks.decision import choose_threshold

        proba = self._proba(raw, None)
        if proba.shape[1] != 2:
            return None, ""
        return choose_threshold(np.asarray(y, dtype=np.int64), proba[:, 1], decision)

    def headline_metric(self, n_classes: int) -> str:
        """ROC AUC for binary (threshold-free, fair under imbalance), accuracy for multiclass."""
        return "roc_auc" if n_classes == 2 else "accuracy"

    def decode(self, raw: np.ndarray, encoder_state: dict[str, Any]) -> dict[str, Any]:
        """{"prediction": the most probable label per row (the classes' dtype; for a binary target
        with a decision threshold, the second class where its probability reaches it), "proba": `raw`}."""
        classes = encoder_state["classes"]
        proba = self._proba(raw, len(classes))
        # typed key: (False, True) == (0, 1) in Python, but their labels are bools, not ints
        key = tuple((type(c).__name__, c) for c in classes)
        labels = self._labels.get(key)
        if labels is None:  # one label array per label map, not per call
            if len(self._labels) >= _CACHE_LIMIT:
                self._labels.clear()
            labels = self._labels[key] = label_array(list(classes))
        threshold = encoder_state.get("threshold")
        codes = proba.argmax(1) if threshold is None else (proba[:, 1] >= threshold).astype(np.int64)
        return {"prediction": labels[codes], "proba": proba}

    def _proba(self, raw: Any, k: int | None) -> np.ndarray:
        proba = rows_of(raw, f"{self.name} output")
        if proba.ndim != 2 or (k is not None and proba.shape[1] != k):
            want = f"(n, {k})" if k is not None else "(n, k)"
            raise DataError(f"{self.name} output: expected probabilities of shape {want}, got {proba.shape}")
        return proba


register_task(Classification("binary"))
register_task(Classification("multiclass"))
