"""The baselines of benchmarks/tabular.py: LightGBM, XGBoost and CatBoost with their library
defaults, and AutoGluon `medium_quality` at the same time limit waypost gets.

Runs in the benchmark's own venv (AutoGluon 1.6 needs torch < 2.14; waypost's install never sees
it). One JSON line per (table, system) on stdout: test metric, train seconds, single-row latency
p50 in ms (100 calls after 5 warm-ups, `predict` on a one-row DataFrame: what an online service
pays).

    benchmarks/.venv-autogluon/bin/python benchmarks/tabular_baselines.py DATA_DIR --time-limit 60
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}


def score(task: str, y: pd.Series, pred: np.ndarray, proba: np.ndarray | None, classes: list) -> float:
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    if task == "regression":
        return float(r2_score(y, pred))
    if task == "binary":
        return float(roc_auc_score(y == classes[1], proba[:, 1]))
    return float(accuracy_score(y, pred))


def latency_ms(predict, row: pd.DataFrame) -> float:
    for _ in range(5):
        predict(row)
    times = []
    for _ in range(100):
        t = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def _categorical(df: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df:
        if df[c].dtype == object or df[c].dtype == bool:
            df[c] = pd.Categorical(df[c].astype(str), categories=sorted(train[c].astype(str).unique()))
    return df


def run_library(name: str, task: str, train: pd.DataFrame, test: pd.DataFrame, target: str) -> dict:
    X, Xt = train.drop(columns=[target]), test.drop(columns=[target])
    Xc, Xtc = _categorical(X, X), _categorical(Xt, X)
    y = train[target]
    classes = sorted(y.unique()) if task != "regression" else []
    codes = y.map({c: i for i, c in enumerate(classes)}) if classes else y
    if name == "lightgbm":
        import lightgbm as lgb

        model = (lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier)(verbose=-1)
        fit_x, test_x = Xc, Xtc
    elif name == "xgboost":
        import xgboost as xgb

        model = (xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier)(enable_categorical=True,
                                                                                  tree_method="hist")
        fit_x, test_x = Xc, Xtc
    else:
        import catboost as cb

        cats = [c for c in X if X[c].dtype == object or X[c].dtype == bool]
        fit_x, test_x = X.copy(), Xt.copy()
        for c in cats:
            fit_x[c], test_x[c] = fit_x[c].astype(str), test_x[c].astype(str)
        model = (cb.CatBoostRegressor if task == "regression" else cb.CatBoostClassifier)(
            verbose=0, cat_features=cats, thread_count=2, random_seed=0)
    start = time.perf_counter()
    model.fit(fit_x, codes)
    seconds = time.perf_counter() - start
    if task == "regression":
        pred, proba = model.predict(test_x), None
    else:
        proba = model.predict_proba(test_x)
        pred = np.asarray(classes)[proba.argmax(1)]
    return {"metric": score(task, test[target], pred, proba, classes), "train_s": seconds,
            "latency_ms": latency_ms(model.predict, test_x.iloc[[0]])}


def run_autogluon(task: str, train: pd.DataFrame, test: pd.DataFrame, target: str, time_limit: float) -> dict:
    from autogluon.tabular import TabularPredictor

    with tempfile.TemporaryDirectory() as tmp:
        predictor = TabularPredictor(label=target, problem_type=task, eval_metric=METRIC[task], path=tmp, verbosity=0)
        start = time.perf_counter()
        # NeuralNetFastAI needs fastai's own torch stack (not installed here); the torch MLP runs
        predictor.fit(train, presets="medium_quality", time_limit=time_limit, excluded_model_types=["FASTAI"])
        seconds = time.perf_counter() - start
        Xt = test.drop(columns=[target])
        classes = sorted(train[target].unique()) if task != "regression" else []
        pred = predictor.predict(Xt).to_numpy()
        proba = predictor.predict_proba(Xt)[classes].to_numpy() if classes else None
        return {"metric": score(task, test[target], pred, proba, classes), "train_s": seconds,
                "latency_ms": latency_ms(predictor.predict, Xt.iloc[[0]]),
                "models": len(predictor.model_names())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--tables", default="")
    ap.add_argument("--systems", default="lightgbm,xgboost,catboost,autogluon")
    args = ap.parse_args()
    meta = json.loads((args.data / "tables.json").read_text())
    tables = [t for t in meta if not args.tables or t in args.tables.split(",")]
    for name in tables:
        info = meta[name]
        train = pd.read_parquet(args.data / f"{name}.train.parquet")
        test = pd.read_parquet(args.data / f"{name}.test.parquet")
        for system in args.systems.split(","):
            if system == "autogluon":
                out = run_autogluon(info["task"], train, test, info["target"], args.time_limit)
            else:
                out = run_library(system, info["task"], train, test, info["target"])
            print(json.dumps({"table": name, "system": system, **out}), flush=True)
            print(f"{name} {system}: {out}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
