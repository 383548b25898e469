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
import pandas as pd

#: the artifact key `MlflowTracker.log_model` stores the saved waypost model under
ARTIFACT_KEY = "waypost_model"
#: ... or a deployment bundle (`waypost export`), served by the torch-free runtime
BUNDLE_KEY = "waypost_bundle"


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
    """Predicts with the logged bundle (torch-free runtime) or saved model (`Predictor`), through the
    same scorers as `waypost predict` (`waypost.serve.batch`).

    Output: one row per input row, column `prediction`, plus `proba_<label>` per class for
    classifiers, so `mlflow models serve` answers with labels and probabilities in one call.
    """

    def load_context(self, context: Any) -> None:
        # Imported here, not at the top: the scorers pull in the runtime or torch, and MLflow
        # executes this file while logging the model, where that cost (and a possible import error)
        # is useless.
        from waypost.serve.batch import BundleScorer, PredictorScorer

        if BUNDLE_KEY in context.artifacts:
            self.scorer: Any = BundleScorer(context.artifacts[BUNDLE_KEY])
        else:
            self.scorer = PredictorScorer(context.artifacts[ARTIFACT_KEY])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predict labels/values (and class probabilities); `params` is accepted and unused.

        The `pd.DataFrame` hint is chosen for MLflow 3, which reads it: DataFrame is one of the
        hints it accepts without building a schema (any other non-`list[...]` hint, or none,
        makes it warn). A dict (one row, or columns) or a list of records is accepted as well.
        """
        df = _as_frame(model_input)
        return self.scorer.score(df, keep=[], proba=True).set_axis(df.index)


mlflow.models.set_model(WaypostPyfunc())
