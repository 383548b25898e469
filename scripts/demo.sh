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

echo "== 7. export: one ONNX graph + preprocessing as JSON; int8 checked against fp32 on the test set"
"$WAYPOST" export runs/latest -o bundle --optimize int8 --data data/test.csv

echo "== 8. batch predict with the bundle (onnxruntime, no torch)"
"$WAYPOST" predict bundle data/test.csv -o bundle_predictions.csv

echo "== 9. serve online, ask one question, read the metrics, stop"
PORT="${DEMO_PORT:-8765}"
"$WAYPOST" serve bundle --port "$PORT" > serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.5; done
ROW=$("$ROOT/.venv/bin/python" -c "import pandas as pd, json; r = pd.read_csv('data/test.csv').drop(columns=['$TARGET']).head(1); print(r.to_json(orient='records')[1:-1])")
echo "POST /predict $ROW"
curl -s "http://127.0.0.1:$PORT/predict" -H 'content-type: application/json' -d "$ROW"; echo
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^waypost_(requests_total|rows_predicted_total)'
kill $SERVER

echo
echo "Browse the run:  $ROOT/.venv/bin/mlflow ui --backend-store-uri sqlite:///$OUT/.waypost/mlflow.db"
