"""The MLflow pyfunc wrapper around a saved waypost model, logged as an MLflow 3 "model from code".

Why a code file and not a pickled object: `mlflow.pyfunc.log_model(python_model=<path of this
file>)` copies this source file into the logged model and MLflow executes it at load time, so the
logged model holds no pickle at all (nothing is ever unpickled in waypost). The saved model
directory travels as the artifact `waypost_model`; `Predictor.load` reads it back from JSON and
array files.

This module is executed by MLflow (`mlflow.pyfunc.load_model`, `mlflow models serve`), never
imported by the waypost CLI, so importing mlflow and pandas at the top is fine here. Keep the
module-level code light: MLflow also executes it once while *logging* the model, where no
`Predictor` is loaded (that only happens in `load_context`).
"""
from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd

#: the artifact key `MlflowTracker.log_model` stores the saved waypost model under
ARTIFACT_KEY = "waypost_model"
#: ... or a deployment bundle (`waypost export`), served by the torch-free runtime
BUNDLE_KEY = "waypost_bundle"
#: prefix of the per-class probability columns in the output frame
PROBA_PREFIX = "proba_"
_CLASSIFICATION_TASKS = ("binary", "multiclass")


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (list, tuple, dict)) and getattr(value, "ndim", 0) == 0


def _as_frame(model_input: Any) -> pd.DataFrame:
    """Serving clients send records, column dicts or frames; the Predictor wants a DataFrame."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        # one row given as {"col": scalar, ...} or columns given as {"col": [values], ...}
        if all(_is_scalar(v) for v in model_input.values()):
            return pd.DataFrame([model_input])
        return pd.DataFrame(model_input)
    return pd.DataFrame(model_input)


class WaypostPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts with a `waypost.predictor.Predictor` loaded from the logged model's artifacts.

    Output: one row per input row, column `prediction`, plus `proba_<label>` per class for
    classifiers, so `mlflow models serve` answers with labels and probabilities in one call.
    """

    def load_context(self, context: Any) -> None:
        # Imported here, not at the top: the Predictor pulls in torch, and MLflow executes this
        # file while logging the model, where that cost (and a possible import error) is useless.
        self.bundle = None
        if BUNDLE_KEY in context.artifacts:
            import waypost.runtime as rt

            self.bundle = rt.load(context.artifacts[BUNDLE_KEY])
            return
        from waypost.predictor import Predictor

        self.model = Predictor.load(context.artifacts[ARTIFACT_KEY])

    def _predict_bundle(self, df: pd.DataFrame) -> pd.DataFrame:
        from waypost.deploy.bundle import records_from_frame

        out = self.bundle.infer(records_from_frame(df, list(self.bundle.features)))
        frame = pd.DataFrame({"prediction": out["prediction"]}, index=df.index)
        if out["proba"] is not None:
            for i, label in enumerate(self.bundle.classes):
                frame[f"{PROBA_PREFIX}{label}"] = out["proba"][:, i]
        return frame

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predict labels/values (and class probabilities); `params` is accepted and unused.

        The `pd.DataFrame` hint is chosen for MLflow 3, which reads it: DataFrame is one of the
        hints it accepts without building a schema (any other non-`list[...]` hint, or none,
        makes it warn). A dict (one row, or columns) or a list of records is accepted as well.
        """
        df = _as_frame(model_input)
        if self.bundle is not None:
            return self._predict_bundle(df)
        pred = np.asarray(self.model.predict(df))
        if pred.ndim == 2 and pred.shape[1] == 1:  # a (n, 1) regression output -> one column
            pred = pred[:, 0]
        out = pd.DataFrame({"prediction": list(pred) if pred.ndim > 1 else pred}, index=df.index)
        if getattr(self.model, "task_", None) in _CLASSIFICATION_TASKS:
            proba = self.model.predict_proba(df)
            if not isinstance(proba, pd.DataFrame):
                # defensive: an ndarray has no labels, name the columns by class position
                proba = pd.DataFrame(proba)
            for label in proba.columns:
                # .to_numpy(): the proba frame may carry a fresh RangeIndex; align by position
                out[f"{PROBA_PREFIX}{label}"] = proba[label].to_numpy()
        return out


mlflow.models.set_model(WaypostPyfunc())
