"""`Predictor`: the Python face of waypost, following scikit-learn's estimator habits.

Keyword arguments in the constructor, `fit` returns self, everything learned ends in `_`. The
orchestration of one fit (plan -> preprocess -> parts -> blend -> track) lives in `waypost.fitting`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waypost.config import WaypostConfig
from waypost.errors import DataError, NotFittedError
from waypost.plan import Decision, render_plan

DataLike = pd.DataFrame | str | os.PathLike


class Predictor:
    """Train, evaluate, save and load a model for one target column.

    Parameters mirror the config file; `config` (a WaypostConfig or dict) wins over the shortcuts.
    `track=True` logs the run to MLflow (embedded SQLite under ./.waypost unless `tracking_uri` or
    WAYPOST_TRACKING_URI says otherwise) and registers the model.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        task: str | None = None,
        preset: str = "medium",
        time_limit: float | None = None,
        model: str = "auto",
        config: WaypostConfig | dict[str, Any] | None = None,
        track: bool = True,
        tracking_uri: str | None = None,
        experiment: str = "waypost",
        model_name: str | None = None,
        seed: int = 0,
        verbose: bool = True,
    ) -> None:
        self.target = target
        self.task = task
        self.preset = preset
        self.time_limit = time_limit
        self.model = model
        self.config = config
        self.track = track
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.model_name = model_name
        self.seed = seed
        self.verbose = verbose

    # ---- configuration ------------------------------------------------------------------------
    def make_config(self) -> WaypostConfig:
        if isinstance(self.config, WaypostConfig):
            return self.config.model_copy(deep=True)
        # The keyword shortcuts form the base; a config dict overrides them key by key.
        raw = dict(self.config or {})
        target = raw.pop("target", self.target)
        preset = raw.pop("preset", self.preset)
        if not target:
            raise DataError("Predictor needs a target column name: Predictor(target='label')")
        training: dict[str, Any] = {"seed": self.seed}
        if self.time_limit is not None:
            training["time_limit"] = self.time_limit
        base: dict[str, Any] = {
            "task": self.task, "model": {"architecture": self.model}, "training": training,
            "tracking": {"enabled": self.track, "uri": self.tracking_uri, "experiment": self.experiment,
                         "model_name": self.model_name},
        }
        return WaypostConfig.create(target, preset, **_merge(base, raw))

    @classmethod
    def from_config(cls, config: WaypostConfig | str | Path, **kwargs: Any) -> Predictor:
        cfg = config if isinstance(config, WaypostConfig) else WaypostConfig.from_yaml(config)
        return cls(cfg.target, config=cfg, **kwargs)

    # ---- fit ----------------------------------------------------------------------------------
    def fit(self, train_data: DataLike, valid_data: DataLike | None = None, *, resume: bool = False) -> Predictor:
        """Fit on `train_data` (validation split off it unless `valid_data` is given); returns self.

        SIGINT/SIGTERM (main thread) stop the fit at the next batch or boosting round: the MLflow run
        ends KILLED and `waypost.train.interrupt.FitInterrupted` is raised (its `checkpoint` names the
        folder). With `training.checkpoint_dir` set, `resume=True` continues such a fit of the same
        config and data from its last completed epoch (a fresh fit when none matches).
        """
        from waypost.fitting import fit_predictor

        fit_predictor(self, train_data, valid_data, resume=resume)
        return self

    # ---- inference ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this Predictor is not fitted yet: call fit() or Predictor.load()")

    def _arrays(self, data: DataLike) -> tuple[pd.DataFrame, Any]:
        from waypost.data.io import read_table

        self._check_fitted()
        df = read_table(data)
        missing = [c for c in self.features_ if c not in df.columns]
        if missing:
            raise DataError(f"missing columns at predict time: {missing} (the model was trained with them)")
        return df, self.preprocessor_.transform(df)

    def _raw(self, data: DataLike) -> tuple[pd.DataFrame, np.ndarray]:
        df, arrays = self._arrays(data)
        raw = self.model_.predict_raw(arrays)
        finite = np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
        if not finite.all():  # the runtime's rule: never answer NaN or infinity
            from waypost.runtime.bundle import NonFiniteOutput

            raise NonFiniteOutput(np.flatnonzero(~finite))
        return df, raw

    @property
    def input_issues_(self) -> dict[str, dict[str, int]]:
        """The last predict's input warnings: {"unseen": {column: n}, "clipped": {column: n}}, only
        non-zero counts (values outside a category's vocabulary / the training range)."""
        self._check_fitted()
        tabular = getattr(self.preprocessor_, "tabular", self.preprocessor_)
        return tabular.input_issues_ if tabular is not None else {}

    def predict(self, data: DataLike) -> np.ndarray:
        """Class labels (in the target's own values) or regression values."""
        _, raw = self._raw(data)
        return self._decode(raw)

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        if self.task_ == "regression":
            return self.target_encoder_.inverse_transform(raw)
        return self.target_encoder_.inverse_transform(raw.argmax(1))

    def predict_proba(self, data: DataLike) -> pd.DataFrame:
        """One column per class, named by the class label, in `classes_` order."""
        if getattr(self, "task_", None) == "regression":
            raise DataError("predict_proba is for classification; this model's task is regression")
        df, raw = self._raw(data)
        return pd.DataFrame(raw, columns=list(self.classes_), index=df.index)

    def evaluate(self, data: DataLike) -> dict[str, float]:
        from waypost.data.io import read_table
        from waypost.data.target import drop_missing_target
        from waypost.metrics import classification_metrics, regression_metrics
        from waypost.planning import require_target

        self._check_fitted()
        df = read_table(data)
        require_target(df, self.target_, "the evaluation data")
        df, _ = drop_missing_target(df, self.target_)
        if df.empty:
            raise DataError(f"target column '{self.target_}' has no values in the evaluation data")
        _, raw = self._raw(df)
        if self.task_ == "regression":
            y = pd.to_numeric(df[self.target_], errors="coerce").to_numpy(dtype=np.float64)
            return regression_metrics(y, self._decode(raw))
        return classification_metrics(self.target_encoder_.transform(df[self.target_]), raw)

    # ---- introspection ------------------------------------------------------------------------
    @property
    def classes_(self) -> list[Any]:
        self._check_fitted()
        if self.task_ == "regression":
            raise AttributeError("classes_ is only defined for classification")
        return list(self.target_encoder_.classes_)

    def plan_text(self) -> str:
        return render_plan(self.plan_)

    def summary(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "target": self.target_, "task": self.task_, "selected": self.selected_,
            "plan": [d.to_dict() for d in self.plan_], "validation_metrics": self.validation_metrics_,
            "lineage": self.lineage_,
        }

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from waypost.fitting import save_predictor

        self._check_fitted()
        return save_predictor(self, Path(path))

    def export(self, path: str | os.PathLike, *, optimize: str = "none", data: DataLike | None = None,
               register: bool = True, alias: str | None = "champion") -> dict[str, Any]:
        """Write a deployable bundle (ONNX + JSON, runs without torch); returns the export report.

        `data` (labelled rows, e.g. the validation set) lets the export compare the optimised graph's
        metric with fp32 and trace realistic inputs. When the model was trained with tracking, the
        bundle is also registered in MLflow (a pyfunc served by the runtime) and, if no champion is
        set yet, becomes `models:/NAME@champion`.
        """
        from waypost.data.io import read_table
        from waypost.deploy.bundle import export_bundle

        self._check_fitted()
        report = export_bundle(self, Path(path), optimize=optimize,
                               data=read_table(data) if data is not None else None)
        if register:
            from waypost.deploy.register import register_bundle

            report["registered"] = register_bundle(self, Path(path), report, alias=alias)
        return report

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        from waypost.fitting import load_predictor

        return load_predictor(cls, Path(path))

    def __repr__(self) -> str:
        state = f"fitted: {self.selected_}, task={self.task_}" if hasattr(self, "model_") else "not fitted"
        return f"Predictor(target={self.target!r}, preset={self.preset!r}, {state})"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def plan_decisions(raw: list[dict[str, Any]]) -> list[Decision]:
    return [Decision.from_dict(d) for d in raw]
