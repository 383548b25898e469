"""Batch scoring of DataFrame chunks by a bundle (onnxruntime) or a model directory (torch).

Both give the same output columns: `prediction`, then `proba_<label>` per class, after any kept
input columns, so downstream jobs do not care which one produced the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import ModelFileError


class BundleScorer:
    kind = "bundle, onnxruntime"

    def __init__(self, path: Path) -> None:
        import waypost.runtime as rt

        self.bundle = rt.load(path)
        self.classes = self.bundle.classes

    def _infer(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        from waypost.deploy.bundle import records_from_frame

        missing = [c for c in self.bundle.features if c not in chunk.columns]
        if missing:
            from waypost.errors import DataError

            raise DataError(f"missing columns at predict time: {missing}")
        out = self.bundle.infer(records_from_frame(chunk, list(self.bundle.features)))
        return out["prediction"], out["proba"]

    def score(self, chunk: pd.DataFrame, keep: list[str], proba: bool) -> pd.DataFrame:
        prediction, probs = self._infer(chunk)
        return _frame(chunk, keep, prediction, probs if proba else None, self.classes)


class PredictorScorer(BundleScorer):
    kind = "model directory, torch"

    def __init__(self, path: Path) -> None:
        from waypost.predictor import Predictor

        self.predictor = Predictor.load(path)
        self.classes = None if self.predictor.task_ == "regression" else self.predictor.classes_

    def _infer(self, chunk: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        if self.predictor.task_ == "regression":
            return self.predictor.predict(chunk), None
        probs = self.predictor.predict_proba(chunk).to_numpy()
        return self.predictor.target_encoder_.inverse_transform(probs.argmax(1)), probs


def _frame(chunk: pd.DataFrame, keep: list[str], prediction: np.ndarray, probs: np.ndarray | None,
           classes: list[Any] | None) -> pd.DataFrame:
    out = {c: chunk[c].to_numpy() for c in keep}
    out["prediction"] = prediction
    if probs is not None and classes is not None:
        for i, label in enumerate(classes):
            out[f"proba_{label}"] = probs[:, i]
    return pd.DataFrame(out)


def load_scorer(path: str | Path) -> BundleScorer:
    path = Path(path)
    from waypost.persistence import MANIFEST
    from waypost.runtime.bundle import is_bundle

    if is_bundle(path):
        return BundleScorer(path)
    if (path / MANIFEST).is_file():
        return PredictorScorer(path)
    raise ModelFileError(f"{path} is neither a bundle (waypost.json) nor a model directory (waypost_model.json)")
