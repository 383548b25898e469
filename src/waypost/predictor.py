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
from waypost.estimator import EstimatorMixin
from waypost.plan import Decision, render_plan

DataLike = pd.DataFrame | str | os.PathLike


class Predictor(EstimatorMixin):
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
        callbacks: list | None = None,
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
        self.callbacks = callbacks

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
    def fit(self, X: DataLike, y: Any = None, valid_data: DataLike | None = None, *, resume: bool = False) -> Predictor:
        """Fit on `X` (validation split off it unless `valid_data` is given); returns self.

        `X` holds the target column, or (scikit-learn's habit) `y` gives the target values for X's
        rows and `valid_data` may be an (X_valid, y_valid) pair: see `waypost.estimator`.

        SIGINT/SIGTERM (main thread) stop the fit at the next batch or boosting round: the MLflow run
        ends KILLED and `waypost.train.interrupt.FitInterrupted` is raised (its `checkpoint` names the
        folder). With `training.checkpoint_dir` set, `resume=True` continues such a fit of the same
        config and data from its last completed epoch (a fresh fit when none matches).
        """
        from waypost.pipelines.fit import fit

        with self._sklearn_fit(X, y, valid_data) as (train_data, valid_data):
            self.fitted_ = fit(self.make_config(), train_data, valid_data, callbacks=list(getattr(self, "callbacks", None) or []),
                               verbose=self.verbose, resume=resume)
        return self

    # ---- inference ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "fitted_"):
            raise NotFittedError("this Predictor is not fitted yet: call fit() or Predictor.load()")

    # ---- learned state: read from the FittedModel (`fitted_`), never written from outside ------
    def _learned(self, name: str) -> Any:
        self._check_fitted()
        return getattr(self.fitted_, name)

    config_ = property(lambda self: self._learned("config"), doc="the resolved config")
    plan_ = property(lambda self: self._learned("plan"), doc="every decision, with its reason")
    task_ = property(lambda self: self._learned("task"))
    target_ = property(lambda self: self._learned("target"))
    features_ = property(lambda self: self._learned("features"), doc="column -> kind")
    preprocessor_ = property(lambda self: self._learned("preprocessor"))
    target_encoder_ = property(lambda self: self._learned("target_encoder"))
    parts_ = property(lambda self: self._learned("parts"))
    selected_ = property(lambda self: self._learned("selected"))
    blend_weights_ = property(lambda self: self._learned("weights"))
    validation_metrics_ = property(lambda self: self._learned("validation_metrics"))
    validation_scores_ = property(lambda self: self._learned("validation_scores"))
    history_ = property(lambda self: self._learned("history"))
    lineage_ = property(lambda self: self._learned("lineage"))
    registered_model_ = property(lambda self: self._learned("registered_model"))

    @property
    def model_(self) -> Any:
        """The FittedModel itself (its `predict_raw` is the ensemble's)."""
        self._check_fitted()
        return self.fitted_

    @classmethod
    def from_fitted(cls, fitted: Any, **kwargs: Any) -> Predictor:
        """A Predictor holding `fitted` (a FittedModel): what load, pruning and distillation return."""
        out = cls(fitted.target, config=fitted.config, verbose=False, **kwargs)
        out.fitted_ = fitted
        return out

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
        raw = self.fitted_.predict_raw(arrays)
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

    def _task(self) -> Any:
        from waypost.tasks import get_task

        return get_task(self.task_)

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        return self._task().decode(raw, self.target_encoder_.to_state())["prediction"]

    def predict_proba(self, data: DataLike) -> pd.DataFrame:
        """One column per class, named by the class label, in `classes_` order."""
        if hasattr(self, "fitted_") and not self._task().is_classification:
            raise DataError(f"predict_proba is for classification; this model's task is {self.task_}")
        df, raw = self._raw(data)
        return pd.DataFrame(raw, columns=list(self.classes_), index=df.index)

    def evaluate(self, data: DataLike) -> dict[str, float]:
        from waypost.data.io import read_table
        from waypost.data.target import drop_missing_target
        from waypost.pipelines.plan import require_target

        self._check_fitted()
        df = read_table(data)
        require_target(df, self.target_, "the evaluation data")
        df, _ = drop_missing_target(df, self.target_)
        if df.empty:
            raise DataError(f"target column '{self.target_}' has no values in the evaluation data")
        _, raw = self._raw(df)
        return self._task().metrics(self.target_encoder_.transform(df[self.target_]), raw, self.target_encoder_)

    # ---- introspection ------------------------------------------------------------------------
    @property
    def classes_(self) -> list[Any]:
        self._check_fitted()
        if not self._task().is_classification:
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
        from waypost.persistence import save_model

        self._check_fitted()
        return save_model(self.fitted_, Path(path))

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
        from waypost.persistence import load_model

        return cls.from_fitted(load_model(Path(path)))

    def __repr__(self) -> str:
        state = f"fitted: {self.selected_}, task={self.task_}" if hasattr(self, "fitted_") else "not fitted"
        return f"Predictor(target={self.target!r}, preset={self.preset!r}, {state})"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def plan_decisions(raw: list[dict[str, Any]]) -> list[Decision]:
    return [Decision.from_dict(d) for d in raw]
