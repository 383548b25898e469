"""Gradient-boosted trees (LightGBM, XGBoost) on the GBM view of the table.

Registered as `lightgbm` and `xgboost`. They get raw numbers with NaN left in (both route missing
values natively) and category codes flagged as categorical, so no one-hot blow-up. Saved in each
library's own text/JSON format: nothing pickled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from waypost.config import GBMConfig
from waypost.data.preprocess import TabularArrays
from waypost.errors import ModelFileError, NotFittedError
from waypost.data.types import TABULAR_TYPES
from waypost.models.registry import register

FILES = {"lightgbm": "gbm.lightgbm.txt", "xgboost": "gbm.xgboost.json"}
GBM_META = "gbm.json"


#: The GBM validation curve is logged with at most this many points (one MLflow batch).
CURVE_POINTS = 1000


def log_curve(tracker: Any, history: list[float], best_iteration: int) -> None:
    """`gbm_val_loss` by boosting round: every round up to CURVE_POINTS rounds, then every k-th
    round plus the best one. Each point costs the SQLite store a row; 7,000 rounds (a fit cut by
    time_limit) took ~2 s to write, time the limit has to pay for, for a curve no chart can show."""
    every = -(-len(history) // CURVE_POINTS)
    steps = sorted({*range(0, len(history), every), min(best_iteration, len(history)) - 1, len(history) - 1})
    for step in steps:
        if step >= 0:
            tracker.log_metrics({"gbm_val_loss": history[step]}, step=step)


def curve_logged(tracker: Any) -> bool:
    """True when the tracker continues an interrupted run that already holds the GBM curve."""
    return "gbm_val_loss" in getattr(tracker, "continued_metrics", ())


def safe_names(names: list[str]) -> list[str]:
    """LightGBM rejects some characters in feature names; positions are what matter."""
    return [f"f{i}_{''.join(c if c.isalnum() else '_' for c in n)}" for i, n in enumerate(names)]


SMALL_TABLE_ROWS = 20_000


def n_jobs(cfg: GBMConfig, n_rows: int) -> int:
    """Threads for the booster. On small tables a boosting round takes well under a millisecond and
    OpenMP's thread hand-offs cost more than they save; when other processes share the cores, its
    spinning threads can stall a 0.1 s fit for tens of seconds. One thread below SMALL_TABLE_ROWS."""
    if cfg.n_jobs != "auto":
        return int(cfg.n_jobs)
    return 1 if n_rows < SMALL_TABLE_ROWS else -1


def min_child_samples(cfg: GBMConfig, n_rows: int) -> int:
    """LightGBM's default of 20 rows per leaf starves trees on a few hundred rows; scale it down."""
    if cfg.min_child_samples != "auto":
        return int(cfg.min_child_samples)
    return int(np.clip(n_rows // 50, 3, 20))


class GBMModel:
    kind = "gbm"

    def __init__(self, *, task: str, n_classes: int = 0, library: str = "lightgbm",
                 gbm: GBMConfig | None = None, feature_names: list[str] | None = None,
                 categorical: list[int] | None = None, seed: int = 0) -> None:
        from waypost.tasks import get_task

        self.task, self.n_classes, self.library = task, n_classes, library
        #: a classifier's estimator and probabilities, or a regressor's values
        self.classifier = get_task(task).is_classification
        self.gbm = gbm or GBMConfig(library=library)
        self.feature_names = list(feature_names or [])
        self.categorical = list(categorical or [])
        self.seed = seed

    # ---- fit ------------------------------------------------------------------------------
    def fit(self, train: TabularArrays, y_train: np.ndarray, valid: TabularArrays, y_valid: np.ndarray,
            *, tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> GBMModel:
        """Boost with early stopping on the validation rows.

        Inside a fit pipeline (`waypost.train.session`) boosting also stops on SIGINT/SIGTERM and
        before the session's deadline, and a finished booster is checkpointed (native format) so a
        resumed fit reuses it. `time_limit` (seconds from now) bounds boosting outside a pipeline.
        """
        from waypost.train.gbm_callbacks import RoundClock
        from waypost.train.session import current_session, fit_deadline

        session = current_session()
        slot = session.slot if session is not None else None
        self.eval_history_: list[float] = []
        self.time_note_: str | None = None
        self.restored_ = slot is not None and slot.has(GBM_META)
        if self.restored_:
            self._restore(slot)
        else:
            # each round's trees are serialised again after boosting: by LightGBM's sklearn wrapper (a
            # text round trip; XGBoost: slicing to the best round), the checkpoint, every model save and
            # MLflow's copy (gbm_callbacks explains why the time limit must count that)
            in_fit = 1.2 + (1.0 if slot is not None else 0.0)
            commit = (session.saves + (1.0 if session.tracked else 0.0)) if session is not None else 1.0
            clock = RoundClock(fit_deadline(time_limit), self.gbm.n_estimators, in_fit + commit)
            fit = self._fit_lightgbm if self.library == "lightgbm" else self._fit_xgboost
            fit(train.gbm, y_train, valid.gbm, y_valid, clock)
            self.time_note_ = clock.describe()
            if slot is not None:
                self._checkpoint(slot)
            if session is not None:  # what saving and logging these trees will cost after training
                session.extra_reserve += clock.post_seconds(len(clock.times), commit)
        if tracker is not None and self.eval_history_ and not (self.restored_ and curve_logged(tracker)):
            log_curve(tracker, self.eval_history_, self.best_iteration_)
        return self

    # ---- checkpoint (a finished booster; see docs/decisions.md "Checkpoints" for why not per round)
    def _checkpoint(self, slot: Any) -> None:
        from waypost.train import interrupt

        if self.library == "lightgbm":
            data: bytes | str = self.booster_.model_to_string(num_iteration=-1)  # every tree, as in memory
        else:
            data = bytes(self.booster_.save_raw("json"))
        with interrupt.critical():
            slot.write(FILES[self.library], data)
            slot.write_json(GBM_META, {"best_iteration": self.best_iteration_, "eval_history": self.eval_history_,
                                       "time_note": self.time_note_})  # last: its presence means "finished"
            slot.progress(finished=True)

    def _restore(self, slot: Any) -> None:
        meta = slot.read_json(GBM_META)
        path = slot.dir / FILES[self.library]
        if self.library == "lightgbm":
            import lightgbm as lgb

            self.booster_ = lgb.Booster(model_str=path.read_text())
        else:
            import xgboost as xgb

            self.booster_ = xgb.Booster()
            self.booster_.load_model(bytearray(path.read_bytes()))
        self.best_iteration_ = int(meta["best_iteration"])
        self.eval_history_ = [float(v) for v in meta["eval_history"]]
        self.time_note_ = meta.get("time_note")

    def _fit_lightgbm(self, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, clock: Any) -> None:
        import lightgbm as lgb

        from waypost.train.gbm_callbacks import lightgbm_callback

        cfg = self.gbm
        params = dict(
            n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate, num_leaves=cfg.num_leaves,
            max_depth=cfg.max_depth, min_child_samples=min_child_samples(cfg, len(y)),
            subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=self.seed, verbose=-1,
            n_jobs=n_jobs(cfg, len(y)),
        )
        est = lgb.LGBMClassifier(**params) if self.classifier else lgb.LGBMRegressor(**params)
        record: dict[str, Any] = {}
        # LightGBM 4.7 renamed eval_set to eval_X/eval_y; older 4.x only knows eval_set.
        import inspect

        evals = ({"eval_X": (Xv,), "eval_y": (yv,)} if "eval_X" in inspect.signature(est.fit).parameters
                 else {"eval_set": [(Xv, yv)]})
        est.fit(
            X, y, **evals, feature_name=self._names(X), categorical_feature=self.categorical or "auto",
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False), lgb.record_evaluation(record),
                       lightgbm_callback(clock)],
        )
        self.booster_ = est.booster_
        self.best_iteration_ = int(est.best_iteration_ or est.n_estimators)
        self.eval_history_ = list(next(iter(next(iter(record.values()), {}).values()), []))

    def _fit_xgboost(self, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, clock: Any) -> None:
        import xgboost as xgb

        from waypost.train.gbm_callbacks import xgboost_callback

        cfg = self.gbm
        params = dict(
            n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
            max_depth=cfg.max_depth if cfg.max_depth > 0 else 6, subsample=0.8, colsample_bytree=0.8,
            tree_method="hist", enable_categorical=True, feature_types=self._feature_types(X.shape[1]),
            early_stopping_rounds=cfg.early_stopping_rounds, random_state=self.seed,
            max_cat_to_onehot=1, n_jobs=n_jobs(cfg, len(y)), callbacks=[xgboost_callback(clock)],
        )
        est = xgb.XGBClassifier(**params) if self.classifier else xgb.XGBRegressor(**params)
        est.fit(X, y, eval_set=[(Xv, yv)], verbose=False)
        self.best_iteration_ = int(est.best_iteration) + 1
        self.booster_ = est.get_booster()[: self.best_iteration_]
        results = est.evals_result().get("validation_0", {})
        self.eval_history_ = list(next(iter(results.values()), []))[: self.best_iteration_]

    def _names(self, X: np.ndarray) -> list[str]:
        return safe_names(self.feature_names or [f"f{i}" for i in range(X.shape[1])])

    def _feature_types(self, n: int) -> list[str]:
        return ["c" if i in set(self.categorical) else "q" for i in range(n)]

    # ---- predict --------------------------------------------------------------------------
    def predict_raw(self, arrays: TabularArrays) -> np.ndarray:
        if not hasattr(self, "booster_"):
            raise NotFittedError("GBMModel is not fitted: call fit() first")
        X = np.ascontiguousarray(arrays.gbm, dtype=np.float32)
        if self.library == "lightgbm":
            out = self.booster_.predict(X, num_iteration=self.best_iteration_)
        else:
            import xgboost as xgb

            dm = xgb.DMatrix(X, feature_types=self._feature_types(X.shape[1]), enable_categorical=True)
            out = self.booster_.predict(dm)
        out = np.asarray(out, dtype=np.float64)
        if not self.classifier:
            return out.reshape(-1)
        if out.ndim == 1:  # binary objectives return P(class 1)
            out = np.column_stack([1.0 - out, out])
        return out

    def feature_importance(self) -> dict[str, float]:
        if self.library == "lightgbm":
            gains = self.booster_.feature_importance(importance_type="gain")
            return dict(zip(self.feature_names, map(float, gains)))
        scores = self.booster_.get_score(importance_type="gain")
        return {n: float(scores.get(f"f{i}", 0.0)) for i, n in enumerate(self.feature_names)}

    # ---- persistence ----------------------------------------------------------------------
    def to_onnx(self, sample: TabularArrays) -> Any:
        """The trees as the `gbm_out` graph the ensemble merges (`waypost.deploy.gbm_onnx`)."""
        from waypost.deploy.gbm_onnx import gbm_model
        from waypost.deploy.onnx_graph import OPSET

        return gbm_model(self, sample.gbm.shape[1], OPSET)

    def save(self, directory: Path) -> dict[str, Any]:
        path = directory / FILES[self.library]
        if self.library == "lightgbm":
            self.booster_.save_model(str(path), num_iteration=self.best_iteration_)
        else:
            self.booster_.save_model(str(path))
        return {"kind": self.kind, "library": self.library, "file": path.name, "task": self.task,
                "n_classes": self.n_classes, "feature_names": self.feature_names,
                "categorical": self.categorical, "best_iteration": self.best_iteration_}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> GBMModel:
        from waypost.models.parts import part_file

        path = part_file(directory, entry)
        model = cls(task=entry["task"], n_classes=entry["n_classes"], library=entry["library"],
                    feature_names=entry["feature_names"], categorical=entry["categorical"])
        model.best_iteration_ = int(entry["best_iteration"])
        try:
            if model.library == "lightgbm":
                import lightgbm as lgb

                model.booster_ = lgb.Booster(model_file=str(path))
            else:
                import xgboost as xgb

                model.booster_ = xgb.Booster()
                model.booster_.load_model(str(path))
        except Exception as exc:  # each library raises its own error type for a corrupt file
            raise ModelFileError(f"{path}: not a readable {model.library} model ({exc})") from None
        return model


_GBM_TYPES = TABULAR_TYPES


@register("lightgbm", data_types=_GBM_TYPES, requires=("lightgbm",), priority=5,
          reason="LightGBM: histogram gradient boosting with native categorical splits and missing values",
          when="tabular data; the strongest single model on most tables")
def build_lightgbm(**kwargs: Any) -> GBMModel:
    return GBMModel(library="lightgbm", **kwargs)


@register("xgboost", data_types=_GBM_TYPES, requires=("xgboost",), priority=4,
          reason="XGBoost: gradient boosting with native categorical support",
          when="tabular data, when asked or when LightGBM is missing")
def build_xgboost(**kwargs: Any) -> GBMModel:
    return GBMModel(library="xgboost", **kwargs)
