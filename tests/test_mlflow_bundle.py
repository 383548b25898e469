"""The exported bundle in the MLflow registry: pyfunc round trip and `mlflow models serve`."""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from waypost import Predictor
from waypost.scenarios.datasets import load_dataset, split
from servers import free_port, running


@pytest.fixture(scope="module")
def exported(tracking_uri, tmp_path_factory):
    train, test = split(load_dataset("breast_cancer"), "target", test_size=0.3, seed=0)
    p = Predictor(target="target", preset="fast", tracking_uri=tracking_uri, experiment="bundles",
                  model_name="bc-bundle", verbose=False).fit(train)
    out = tmp_path_factory.mktemp("bundle") / "b"
    report = p.export(out)
    return p, test, out, report


def _load(uri: str, tracking_uri: str):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(previous)


def test_export_registers_the_bundle_as_champion(exported, tracking_uri):
    p, test, out, report = exported
    reg = report["registered"]
    assert reg["registered_model"] == "bc-bundle" and reg["version"] == "2" and reg["alias"] == "champion"
    manifest = json.loads((out / "waypost.json").read_text())
    assert manifest["model_version"] == "bc-bundle/2"
    model = _load("models:/bc-bundle@champion", tracking_uri)
    frame = model.predict(test.drop(columns=["target"]))
    np.testing.assert_allclose(frame["proba_malignant"].to_numpy(), p.predict_proba(test)["malignant"].to_numpy(), atol=1e-4)
    assert (frame["prediction"].to_numpy() == p.predict(test)).all()


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(exported, tracking_uri, tmp_path):
    p, test, _, _ = exported
    port = free_port()
    # mlflow execs `uvicorn` from PATH, as in an activated virtualenv
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", "models:/bc-bundle@champion",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/ping", cwd=tmp_path, env=env):
        rows = test.drop(columns=["target"]).head(20)
        body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            predictions = json.loads(resp.read())["predictions"]
        got = np.array([r["proba_malignant"] for r in predictions])
        np.testing.assert_allclose(got, p.predict_proba(rows)["malignant"].to_numpy(), atol=1e-4)
        assert [r["prediction"] for r in predictions] == list(p.predict(rows))


def test_an_over_budget_bundle_is_registered_without_an_alias(exported, tracking_uri, tmp_path):
    """An int8 bundle that loses more than a point is registered for the record but given no alias,
    so `models:/NAME@alias` never starts serving it unnoticed; within budget the alias is set."""
    import shutil

    from mlflow import MlflowClient

    from waypost.deploy.register import register_bundle

    p, _, out, report = exported
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    over = register_bundle(p, copy, {**report, "optimize": "int8", "metrics": {"drop": 0.05}}, alias="challenger")
    assert over.get("alias") is None and "over the 1-point budget: @challenger not set" in over["alias_withheld"]
    within = register_bundle(p, copy, {**report, "optimize": "int8", "metrics": {"drop": 0.002}}, alias="challenger")
    aliases = MlflowClient(tracking_uri).get_registered_model("bc-bundle").aliases
    assert within["alias"] == "challenger" and str(aliases["challenger"]) == str(within["version"]) != str(over["version"])
    assert str(aliases["champion"]) == "2"
