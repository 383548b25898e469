"""Tabular quality at AutoML level (issue #12): waypost's presets against LightGBM, XGBoost and
CatBoost defaults and AutoGluon `medium_quality`, on eleven real tables, one run.

The tables (binary, multiclass, regression; 178 to 53,940 rows; with and without categoricals and
NaNs) are split once (75/25, stratified, seed 0) by benchmarks/tabular_data.py; the baselines run in
the benchmark's own venv (benchmarks/tabular_baselines.py). Metric: ROC AUC (binary), accuracy
(multiclass), R2 (regression), higher is better, on the held-out quarter. Printed: the metric per
table and system, the rank of each system per table (1 = best, ties share the better rank), the
mean rank, waypost's wins/ties against AutoGluon, train seconds, and the single-row p50 latency
(waypost: the exported bundle, `Bundle.infer` on one record; the others: `predict` on a one-row
DataFrame).

    make bench-venv                                   # once: benchmarks/.venv-autogluon
    .venv/bin/python benchmarks/tabular.py --time-limit 60
    .venv/bin/python benchmarks/tabular.py --tables penguins,wine --presets medium   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / "benchmarks" / ".venv-autogluon" / "bin" / "python"
METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}


def run_waypost(preset: str, info: dict, train: pd.DataFrame, test: pd.DataFrame, time_limit: float) -> dict:
    from waypost import Predictor
    from waypost.runtime import load

    target, task = info["target"], info["task"]
    start = time.perf_counter()
    p = Predictor(target=target, task=task, preset=preset, time_limit=time_limit, track=False, verbose=False).fit(train)
    seconds = time.perf_counter() - start
    metric = p.evaluate(test)[METRIC[task]]
    with tempfile.TemporaryDirectory() as tmp:
        p.export(Path(tmp) / "bundle")
        bundle = load(Path(tmp) / "bundle")
        record = test.drop(columns=[target]).iloc[[0]].to_dict("records")
        for _ in range(20):
            bundle.infer(record)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            bundle.infer(record)
            times.append(time.perf_counter() - t)
        size = sum(f.stat().st_size for f in (Path(tmp) / "bundle").rglob("*") if f.is_file())
    return {"metric": float(metric), "train_s": seconds, "latency_ms": float(np.median(times) * 1000),
            "bundle_mb": size / 2**20, "weights": {k: round(v, 3) for k, v in p.blend_weights_.items()},
            "folds": next((d.choice for d in p.plan_ if d.subject == "validation"), "")}


def ranks(table: pd.DataFrame) -> pd.DataFrame:
    """Per row (table), 1 = best metric; ties share the better rank."""
    return table.rank(axis=1, ascending=False, method="min")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--presets", default="medium,best")
    ap.add_argument("--tables", default="")
    ap.add_argument("--data", type=Path, default=None, help="the split tables (default: a temp folder, written now)")
    ap.add_argument("--baselines", type=Path, default=None, help="JSON lines of an earlier baseline run to reuse")
    ap.add_argument("--out", type=Path, default=None, help="write every result as JSON lines here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not BENCH_PYTHON.exists():
        sys.exit(f"{BENCH_PYTHON} is missing: run `make bench-venv` first (AutoGluon, CatBoost, statsmodels, river)")
    data = args.data or Path(tempfile.mkdtemp(prefix="waypost-tabular-"))
    if not (data / "tables.json").exists():
        subprocess.run([str(BENCH_PYTHON), str(ROOT / "benchmarks" / "tabular_data.py"), str(data)], check=True)
    meta = json.loads((data / "tables.json").read_text())
    tables = [t for t in meta if not args.tables or t in args.tables.split(",")]
    load_avg = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load_avg[0]:.2f} at the start; time_limit {args.time_limit:.0f}s")

    results = []
    if args.baselines is not None:
        results += [json.loads(line) for line in args.baselines.read_text().splitlines() if line.strip()]
        results = [r for r in results if r["table"] in tables]
    else:
        proc = subprocess.run([str(BENCH_PYTHON), str(ROOT / "benchmarks" / "tabular_baselines.py"), str(data),
                               "--time-limit", str(args.time_limit), "--tables", ",".join(tables)],
                              check=True, capture_output=True, text=True)
        results += [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    for name in tables:
        train = pd.read_parquet(data / f"{name}.train.parquet")
        test = pd.read_parquet(data / f"{name}.test.parquet")
        for preset in args.presets.split(","):
            out = run_waypost(preset, meta[name], train, test, args.time_limit)
            results.append({"table": name, "system": f"waypost_{preset}", **out})
            print(f"{name} waypost_{preset}: {json.dumps(out)}", flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in results))

    frame = pd.DataFrame(results)
    metric = frame.pivot(index="table", columns="system", values="metric").loc[tables]
    train_s = frame.pivot(index="table", columns="system", values="train_s").loc[tables]
    latency = frame.pivot(index="table", columns="system", values="latency_ms").loc[tables]
    pd.set_option("display.width", 200)
    print("\ntest metric (ROC AUC binary, accuracy multiclass, R2 regression):")
    print(metric.round(4).assign(task=[meta[t]["task"] for t in tables]).to_string())
    r = ranks(metric)
    print("\nrank per table (1 = best):")
    print(r.to_string())
    print("\nmean rank:", r.mean().round(2).sort_values().to_dict())
    if "autogluon" in metric:
        for preset in args.presets.split(","):
            col = f"waypost_{preset}"
            wins = int((metric[col] >= metric["autogluon"] - 1e-12).sum())
            faster = int((train_s[col] <= train_s["autogluon"]).sum())
            print(f"{col} >= autogluon on {wins} of {len(tables)} tables; trained in <= AutoGluon's time on {faster}")
    if "waypost_best" in metric and "waypost_medium" in metric:
        gain = (metric["waypost_best"] - metric["waypost_medium"]).mean() * 100
        print(f"best - medium: {gain:+.2f} points on the mean")
    print("\ntrain seconds (median over tables):", train_s.median().round(1).to_dict())
    print("single-row latency p50 ms (median over tables):", latency.median().round(3).to_dict())
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
