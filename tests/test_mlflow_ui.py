"""`mlflow ui` pointed at .waypost/ shows the run, its artifacts and the registered model.

Starts the real MLflow UI server on 127.0.0.1 and reads it over its REST API (what the web page uses).
"""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from waypost.cli import app
from servers import free_port, running


def _get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_mlflow_ui_shows_the_tracked_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["dataset", "wine", "-o", "wine.csv"],
                 ["init", "wine.csv", "--target", "target", "--preset", "fast"],
                 ["train", "waypost.yaml", "--name", "wine", "-q"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", "sqlite:///.waypost/mlflow.db",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with running(argv, ready_url=f"{base}/health", cwd=tmp_path, timeout=60):
        exps = _get(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"]
        exp = next(e for e in exps if e["name"] == "waypost")
        runs = _get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
        assert len(runs) == 1
        run = runs[0]
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"val_loss", "train_loss", "val_accuracy"} <= metrics
        files = _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")["files"]
        assert {"plan.json", "plots", "waypost.yaml"} <= {f["path"] for f in files}
        models = _get(f"{base}/api/2.0/mlflow/registered-models/search?max_results=10")["registered_models"]
        assert [m["name"] for m in models] == ["waypost-target"]
