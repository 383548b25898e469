#!/usr/bin/env bash
# The main job on real data with the embedded defaults: init -> train -> evaluate -> predict -> info.
# Everything lands in demo_out/ (MLflow store in demo_out/.waypost/). Run through `make demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WAYPOST="${WAYPOST:-$ROOT/.venv/bin/waypost}"
OUT="${DEMO_OUT:-$ROOT/demo_out}"
DATASET="${DEMO_DATASET:-penguins}"
TARGET="${DEMO_TARGET:-species}"
export DO_NOT_TRACK=true HF_HUB_OFFLINE=1 MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
mkdir -p "$OUT" && cd "$OUT"

echo "== 1. real data: $DATASET (70% train / 30% test)"
"$WAYPOST" dataset "$DATASET" -o data/train.csv --test-output data/test.csv

echo "== 2. init: infer types and task, choose the architecture, write waypost.yaml with reasons"
"$WAYPOST" init data/train.csv --target "$TARGET" --force
cat waypost.yaml

echo "== 3. train: production defaults, tracked in MLflow (.waypost/), model registered"
"$WAYPOST" train waypost.yaml

echo "== 4. evaluate on the held-out 30%"
"$WAYPOST" evaluate runs/latest data/test.csv --json metrics.json

echo "== 5. batch predict, streamed in chunks, to Parquet"
"$WAYPOST" predict runs/latest data/test.csv -o predictions.parquet --keep "$TARGET"
"$ROOT/.venv/bin/python" -c "import pandas as pd; print(pd.read_parquet('predictions.parquet').head())"

echo "== 6. info: the plan and metrics stored with the model"
"$WAYPOST" info runs/latest

echo
echo "Browse the run:  $ROOT/.venv/bin/mlflow ui --backend-store-uri sqlite:///$OUT/.waypost/mlflow.db"
