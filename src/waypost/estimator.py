"""The scikit-learn estimator contract for `Predictor`, without importing scikit-learn.

`sklearn.base.BaseEstimator` would give the same behaviour, but importing sklearn costs seconds and
`import waypost` (the CLI's `waypost --help`) must stay well under half a second. So this mixin
re-implements the small part sklearn's tools rely on:

- `get_params` / `set_params` read the constructor's signature: every keyword of `__init__` is a
  parameter, stored unchanged under its own name (what `sklearn.base.clone` checks), so
  `clone(predictor)` is an unfitted Predictor with equal parameters.
- `__sklearn_tags__` (sklearn >= 1.6) and `_estimator_type` (older sklearn and other libraries)
  say classifier or regressor, which decides e.g. whether `cross_val_score(..., cv=3)` stratifies.
  Tags depend on the parameters only, never on what a fit learned (clone sees an unfitted copy):
  an explicit `task` asks `waypost.tasks.get_task(task).is_classification`; `task=None` (infer
  at fit time) reports "classifier". `score` still uses the task the fit inferred, so
  `task=None` scores a regression with R2; set `task="regression"` to get KFold instead of a
  stratified split on integral-valued targets.
- `join_target` turns sklearn's `(X, y)` into the one frame the fit pipeline reads.

sklearn itself is imported only inside `__sklearn_tags__`, which only sklearn calls.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from waypost.errors import DataError, NotFittedError

# The column name `fit(X, y)` gives the target when neither `target` nor y's name says one.
DEFAULT_TARGET = "target"


class EstimatorMixin:
    """get_params / set_params / tags / score for a class whose `__init__` takes keyword parameters
    and stores each unchanged as an attribute of the same name (sklearn's rule)."""

    # ---- parameters ---------------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's named parameters, sorted (as sklearn's BaseEstimator does)."""
        init = cls.__init__
        if init is object.__init__:
            return []
        params = inspect.signature(init).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            raise TypeError(f"{cls.__name__}.__init__ takes *args: estimators must name every parameter")
        return sorted(p.name for p in params if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters as given; `deep` adds `name__sub` entries for parameters that
        are estimators themselves (sklearn's convention for nested estimators)."""
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{key}", sub) for key, sub in value.get_params(deep=True).items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> EstimatorMixin:
        """Set parameters (`name` or nested `name__sub`); an unknown name raises a ValueError that
        lists the valid ones, so a typo never passes silently. Returns self."""
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, delim, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}: "
                                 f"valid parameters are {self._get_param_names()}")
            if delim:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            owner = valid[name]
            if not hasattr(owner, "set_params"):
                raise ValueError(f"parameter {name!r} of {type(self).__name__} is not an estimator: "
                                 f"cannot set {sorted(sub_params)} on it")
            owner.set_params(**sub_params)
        return self

    # ---- what sklearn asks about the estimator ------------------------------------------------
    def _is_classifier(self) -> bool:
        """From the `task` parameter (see the module docstring): classifier unless `task` names
        a task that is not a classification."""
        task = getattr(self, "task", None)
        if task is None:
            return True
        from waypost.tasks import get_task

        return bool(get_task(task).is_classification)

    @property
    def _estimator_type(self) -> str:
        return "classifier" if self._is_classifier() else "regressor"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, InputTags, RegressorTags, Tags, TargetTags

        classifier = self._is_classifier()
        return Tags(
            estimator_type="classifier" if classifier else "regressor",
            target_tags=TargetTags(required=True, single_output=True),
            classifier_tags=ClassifierTags(multi_class=True) if classifier else None,
            regressor_tags=None if classifier else RegressorTags(),
            # Frames with missing values, categories and strings are what the Predictor is for.
            input_tags=InputTags(two_d_array=True, allow_nan=True, categorical=True, string=True),
        )

    def __sklearn_is_fitted__(self) -> bool:
        """For sklearn.utils.validation.check_is_fitted; defers to the class's own fitted check."""
        try:
            self._check_fitted()  # type: ignore[attr-defined]
        except NotFittedError:
            return False
        return True

    # ---- (X, y) -------------------------------------------------------------------------------
    def _configured_target(self) -> str | None:
        """The target the parameters name, as `make_config` reads them (the config's wins)."""
        config = getattr(self, "config", None)
        target = config.get("target") if isinstance(config, dict) else getattr(config, "target", None)
        return (target or getattr(self, "target", None)) or None

    def _target_name(self, y: Any = None) -> str:
        """The target column name a fit uses: the configured one, else y's name, else "target"."""
        target = self._configured_target()
        if not target and isinstance(y, pd.Series) and y.name is not None:
            target = str(y.name)
        return str(target or DEFAULT_TARGET)

    @contextmanager
    def _sklearn_fit(self, X: Any, y: Any, valid_data: Any) -> Iterator[tuple[Any, Any]]:
        """`fit(X, y, valid_data)` as the (train, valid) tables the fit pipeline reads.

        With y given, X gets it as the target column (`join_target`); `valid_data` may then be an
        (X_valid, y_valid) pair too. When no target is named anywhere, the name taken from y is
        set on `target` for the fit only and restored after, so fit leaves the parameters as given
        (`target_` keeps the name used).
        """
        if y is None:
            yield X, valid_data
            return
        target = self._target_name(y)
        train = join_target(X, y, target)
        if isinstance(valid_data, tuple):
            if len(valid_data) != 2:
                raise DataError("valid_data as a tuple must be (X_valid, y_valid)")
            valid_data = join_target(valid_data[0], valid_data[1], target)
        saved = getattr(self, "target", None)
        named = self._configured_target() is not None
        if not named:
            self.target = target
        try:
            yield train, valid_data
        finally:
            if not named:
                self.target = saved

    def score(self, X: Any, y: Any = None) -> float:
        """sklearn's default score (what `cross_val_score` uses without `scoring`): accuracy for a
        classification, R2 for a regression, from `evaluate` on the joined frame."""
        self._check_fitted()  # type: ignore[attr-defined]
        from waypost.tasks import get_task

        metrics = self.evaluate(join_target(X, y, self.target_))  # type: ignore[attr-defined]
        return float(metrics["accuracy" if get_task(self.task_).is_classification else "r2"])  # type: ignore[attr-defined]


def join_target(X: Any, y: Any, target: str) -> Any:
    """One frame holding `y` as column `target`, from a feature frame (or table path) and target
    values; `X` unchanged when `y` is None (it must then hold the target itself).

    y may be a Series, a 1-d array, a list or a one-column frame, matched to X's rows by position
    (sklearn's convention: cross_val_score hands over X and y slices whose indexes are not reset).
    """
    if y is None:
        return X
    if isinstance(y, (str, os.PathLike)) or (isinstance(y, pd.DataFrame) and y.shape[1] != 1):
        raise DataError("fit's second argument is y, the target values (a Series, array or list); "
                        "pass a validation table as valid_data=...")
    from waypost.data.io import read_table

    frame = read_table(X)
    if isinstance(y, pd.DataFrame):
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        values = y
    else:
        import numpy as np

        arr = np.asarray(y, dtype=object) if isinstance(y, (list, tuple)) else np.asarray(y)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise DataError(f"y must hold one target value per row (1-d), got shape {arr.shape}")
        values = pd.Series(arr.tolist() if arr.dtype == object else arr)
    if len(values) != len(frame):
        raise DataError(f"y has {len(values)} values but X has {len(frame)} rows: they must match")
    if target in frame.columns:
        raise DataError(f"X already holds a column named {target!r} (the target) and y was given too: "
                        "drop it from X, or call fit(frame) with the target inside the frame")
    out = frame.copy()
    out[target] = values.set_axis(out.index)
    return out
