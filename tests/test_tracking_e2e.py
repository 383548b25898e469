"""A tracked fit, read back through MLflow itself: params, per-epoch metrics, plan, plots,
lineage, a registered model version, and the pyfunc round trip (models from code, nothing pickled)."""
from __future__ import annotations

import numpy as np
import pytest

from waypost import Predictor
from waypost.scenarios.datasets import load_dataset, split


@pytest.fixture(scope="module")
def tracked(tracking_uri):
    train, test = split(load_dataset("breast_cancer"), "target", test_size=0.3, seed=0)
    p = Predictor(target="target", preset="fast", tracking_uri=tracking_uri, experiment="e2e",
                  model_name="bc-e2e", verbose=False).fit(train)
    return p, test


def test_run_holds_params_metrics_artifacts_and_lineage(tracked, tracking_uri):
    from mlflow.tracking import MlflowClient

    p, _ = tracked
    client = MlflowClient(tracking_uri)
    run = client.get_run(p.lineage_["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["config.training.max_epochs"] == "40"
    assert run.data.tags["waypost.data_digest"] == p.lineage_["data_digest"]
    epochs = len(p.history_["val_loss"])
    for key in ("train_loss", "val_loss", "lr", "grad_norm_mean"):
        hist = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in hist] == list(range(epochs)), key
    assert np.allclose([m.value for m in client.get_metric_history(run.info.run_id, "val_loss")], p.history_["val_loss"])
    assert any(k.startswith("weight_norm.") for k in run.data.metrics)
    assert "val_roc_auc" in run.data.metrics and run.data.metrics["val_roc_auc"] > 0.95
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plan.json", "waypost.yaml", "lineage.json", "weight_histograms.json", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png", "plots/roc.png"} <= plots


def test_model_is_registered_and_pyfunc_round_trips(tracked, tracking_uri):
    import mlflow
    from mlflow.tracking import MlflowClient

    p, test = tracked
    reg = p.registered_model_
    assert reg["registered_model"] == "bc-e2e" and reg["version"] == "1"
    versions = MlflowClient(tracking_uri).search_model_versions("name='bc-e2e'")
    assert [str(v.version) for v in versions] == ["1"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/bc-e2e/1")
    finally:
        mlflow.set_tracking_uri(previous)
    out = model.predict(test.drop(columns=["target"]))
    assert (out["prediction"].to_numpy() == p.predict(test)).all()
    expected = p.predict_proba(test)
    for label in p.classes_:
        np.testing.assert_allclose(out[f"proba_{label}"].to_numpy(), expected[label].to_numpy(), atol=1e-6)
