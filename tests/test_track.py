"""waypost.track against a real MLflow SQLite store (the session `tracking_uri`), no mocks."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from waypost.errors import ConfigError, ModelFileError
from waypost.track import plots
from waypost.track.lineage import collect_lineage, dataframe_digest, file_digest, git_commit
from waypost.track.tracker import (
    MlflowTracker,
    NullTracker,
    make_tracker,
    resolve_tracking_uri,
)


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# ---------------------------------------------------------------- tracker: runs
def test_run_logs_params_metrics_and_artifacts(tracking_uri: str, tmp_path: Path) -> None:
    history = {"loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.7, 0.6], "val_acc": [0.5, 0.7, 0.8]}
    tracker = MlflowTracker("test-run", tracking_uri=tracking_uri, workdir=tmp_path, run_name="r1", tags={"k": 1})
    with tracker as t:
        t.log_params({"model": {"hidden": 64, "layers": [1, 2]}, "lr": 1e-3, "long": "x" * 7000, "bad[key]": 1})
        t.log_params({"lr": 1e-3})  # same value again: accepted, nothing written
        with pytest.raises(ConfigError, match="lr"):
            t.log_params({"lr": 0.1})  # MLflow params are write-once
        for epoch in range(3):
            t.log_metrics({k: v[epoch] for k, v in history.items()} | {"nan": float("nan")}, step=epoch)
        t.set_tags({"stage": "test"})
        t.log_dict({"a": np.float32(1.5), "b": [1, 2]}, "info/summary.json")
        t.log_dict({"a": 1}, "info/summary.yaml")
        t.log_figure(plots.learning_curves(history), "plots/learning_curves.png")
        run_id = t.run_id

    client = _client(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    params = run.data.params
    assert params["model.hidden"] == "64" and params["model.layers"] == "[1, 2]" and params["lr"] == "0.001"
    assert len(params["long"]) == 6000 and params["bad_key_"] == "1"
    assert run.data.tags["stage"] == "test" and run.data.tags["k"] == "1"
    for key, values in history.items():
        got = client.get_metric_history(run_id, key)
        assert [m.step for m in got] == [0, 1, 2]
        assert [m.value for m in got] == pytest.approx(values)
    assert client.get_metric_history(run_id, "nan") == []  # NaN skipped
    assert {a.path for a in client.list_artifacts(run_id, "info")} == {"info/summary.json", "info/summary.yaml"}
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/learning_curves.png"]
    summary = json.loads(Path(client.download_artifacts(run_id, "info/summary.json", str(tmp_path))).read_text())
    assert summary == {"a": 1.5, "b": [1, 2]}
    # artifacts live beside the SQLite file, not in ./mlruns of whatever directory tests run in
    db_dir = Path(tracking_uri.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri == (db_dir / "artifacts" / run_id / "artifacts").as_uri()


def test_exception_marks_run_failed_and_reraises(tracking_uri: str) -> None:
    tracker = MlflowTracker("test-failed", tracking_uri=tracking_uri)
    with pytest.raises(RuntimeError, match="boom"):
        with tracker:
            tracker.log_metrics({"loss": 1.0}, step=0)
            raise RuntimeError("boom")
    run = _client(tracking_uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {"loss": 1.0}  # buffered metrics were still written
    with pytest.raises(ConfigError):
        tracker.log_metrics({"loss": 2.0})  # the run is over


def test_metrics_are_batched_over_mlflow_limit(tracking_uri: str) -> None:
    with MlflowTracker("test-batch", tracking_uri=tracking_uri) as t:
        t.log_metrics({f"m{i}": float(i) for i in range(1500)}, step=0)  # > 1000: auto-flushed in chunks
        for step in range(1200):
            t.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    client = _client(tracking_uri)
    assert len(client.get_run(t.run_id).data.metrics) == 1501
    assert len(client.get_metric_history(t.run_id, "loss")) == 1200


# ---------------------------------------------------------------- tracker: URIs
def test_resolve_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAYPOST_TRACKING_URI", raising=False)
    default = resolve_tracking_uri(workdir=tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/.waypost/mlflow.db"
    assert (tmp_path / ".waypost").is_dir()
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    assert resolve_tracking_uri("runs/x.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/runs/x.db"
    assert resolve_tracking_uri("store", tmp_path) == (tmp_path.resolve() / "store").as_uri()
    monkeypatch.setenv("WAYPOST_TRACKING_URI", "postgresql://u@db/mlflow")
    assert resolve_tracking_uri(None, tmp_path) == "postgresql://u@db/mlflow"
    assert resolve_tracking_uri("sqlite:///a.db", tmp_path) == "sqlite:///a.db"  # explicit beats env
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("rel.db") == f"sqlite:///{tmp_path.resolve()}/rel.db"


def test_default_store_under_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default (a fresh SQLite store: the one test that pays for the migrations)."""
    monkeypatch.delenv("WAYPOST_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with MlflowTracker("default-exp") as t:
        t.log_text("hello", "notes/hello.txt")
    print(f"new store + run: {time.perf_counter() - start:.2f}s")
    root = tmp_path.resolve() / ".waypost"
    assert (root / "mlflow.db").is_file()
    assert (root / "artifacts" / t.run_id / "artifacts" / "notes" / "hello.txt").read_text() == "hello"
    exp = _client(t.tracking_uri).get_experiment_by_name("default-exp")
    assert exp.artifact_location == (root / "artifacts").as_uri()
    assert not (tmp_path / "mlruns").exists()


# ---------------------------------------------------------------- tracker: models and registry
def test_log_model_registers_versions(tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    model_dir = tmp_path / "my_model"
    (model_dir / "weights").mkdir(parents=True)
    (model_dir / "waypost.json").write_text(json.dumps({"format_version": 1, "task": "binary"}))
    (model_dir / "weights" / "w.json").write_text("[1, 2, 3]")
    monkeypatch.chdir(tmp_path)  # anything MLflow wrote relative to the cwd would show up here
    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))

    timings = []
    results = []
    for _ in range(2):
        with MlflowTracker("test-models", tracking_uri=tracking_uri) as t:
            t.log_metrics({"val_auc": 0.9}, step=0)
            start = time.perf_counter()
            results.append(t.log_model(model_dir, "waypost-test-model"))
            timings.append(time.perf_counter() - start)
    print("log_model + register: " + ", ".join(f"{s:.2f}s" for s in timings))
    assert max(timings) < 30

    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert [r["version"] for r in results] == ["1", "2"]
    assert all(r["registered_model"] == "waypost-test-model" for r in results)
    client = _client(tracking_uri)
    assert client.get_registered_model("waypost-test-model").name == "waypost-test-model"
    versions = client.search_model_versions("name='waypost-test-model'")
    assert sorted((v.version, v.source) for v in versions) == sorted(
        (int(r["version"]), r["model_uri"]) for r in results
    )
    # the logged model is in the run's experiment, linked to the run, and ready
    last = results[-1]
    logged = client.get_logged_model(last["model_id"])
    assert logged.source_run_id == last["run_id"] and str(logged.status) == "READY"
    assert logged.experiment_id == client.get_run(last["run_id"]).info.experiment_id
    # model-from-code: the code file and the model directory's files, no pickle anywhere
    top = {a.path for a in client.list_logged_model_artifacts(last["model_id"])}
    assert {"MLmodel", "pyfunc_model.py", "requirements.txt", "artifacts"} <= top
    bundled = {a.path for a in client.list_logged_model_artifacts(last["model_id"], "artifacts/my_model")}
    assert bundled == {"artifacts/my_model/waypost.json", "artifacts/my_model/weights"}
    local = Path(mlflow.artifacts.download_artifacts(logged.artifact_location, dst_path=str(tmp_path / "dl")))
    assert (local / "artifacts" / "my_model" / "weights" / "w.json").read_text() == "[1, 2, 3]"
    assert not [p for p in local.rglob("*") if p.suffix in {".pkl", ".pickle"}]
    assert "waypost" in (local / "requirements.txt").read_text().split()  # MLflow adds its own pin
    mlmodel = (local / "MLmodel").read_text()
    assert "mlflow.pyfunc.loaders.code_model" in mlmodel and "python_model.pkl" not in mlmodel

    t.set_alias("waypost-test-model", "champion", 2)
    assert str(client.get_model_version_by_alias("waypost-test-model", "champion").version) == "2"

    with MlflowTracker("test-models", tracking_uri=tracking_uri) as t:
        with pytest.raises(ModelFileError):
            t.log_model(tmp_path / "missing", None)
        unregistered = t.log_model(model_dir, None, pip_requirements=["waypost==0.1.0"])
    assert unregistered["version"] is None and unregistered["model_uri"].startswith("models:/")


def test_null_tracker_and_factory(tracking_uri: str) -> None:
    null = make_tracker(False, experiment="x", tracking_uri=tracking_uri)
    assert isinstance(null, NullTracker)
    with null as t:
        t.log_params({"a": {"b": 1}})
        t.log_metrics({"loss": 1.0}, step=1)
        t.set_tags({"x": 1})
        t.log_dict({"a": 1}, "a.json")
        t.log_text("x", "x.txt")
        t.log_figure(plots.feature_importance_figure(["a"], [1.0]), "f.png")
        t.log_artifacts(".")
        t.log_artifact("x")
        t.flush()
        assert t.log_model("nowhere", "m")["version"] is None
        t.set_alias("m", "champion", 1)
    assert null.run_id is None
    with pytest.raises(ValueError):
        with NullTracker():
            raise ValueError("propagates")
    real = make_tracker(True, experiment="factory", tracking_uri=tracking_uri)
    assert isinstance(real, MlflowTracker) and real.run_id is None  # nothing started yet


def test_tracker_module_does_not_import_mlflow() -> None:
    code = (
        "import sys, waypost.track.tracker, waypost.track.lineage, waypost.track.plots\n"
        "heavy = [m for m in ('mlflow', 'matplotlib', 'torch', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------- lineage
def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": [1.5, 2.0, np.nan, 4.25],
            "city": ["a", "b", "a", None],
            "kind": pd.Categorical(["x", "y", "x", "x"]),
            "series": [[1, 2], [3], [], [4, 5, 6]],
            "emb": [np.arange(3, dtype=np.float32) + i for i in range(4)],
        }
    )


def test_dataframe_digest_stable_and_sensitive() -> None:
    df = _frame()
    digest = dataframe_digest(df)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert dataframe_digest(_frame()) == digest
    assert dataframe_digest(df.set_axis([10, 11, 12, 13])) == digest  # index ignored
    changed = _frame()
    changed.loc[2, "amount"] = 3.0
    assert dataframe_digest(changed) != digest
    nested = _frame()
    nested.at[1, "series"] = [4]
    assert dataframe_digest(nested) != digest
    emb = _frame()
    emb.at[0, "emb"] = np.array([0, 1, 2.5], dtype=np.float32)
    assert dataframe_digest(emb) != digest
    assert dataframe_digest(df.rename(columns={"city": "town"})) != digest
    assert dataframe_digest(df.astype({"amount": "float32"})) != digest
    # same digest in another process with another hash seed: nothing depends on Python's hash()
    code = (
        "import sys; sys.path.insert(0, %r); import test_track as tt; "
        "from waypost.track.lineage import dataframe_digest; print(dataframe_digest(tt._frame()))"
    ) % str(Path(__file__).parent)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == digest


def test_file_digest_git_and_lineage(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    _frame()[["amount", "city"]].to_csv(data, index=False)
    expected = "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    assert file_digest(data) == expected
    assert git_commit(tmp_path) is None  # not a repository
    lineage = collect_lineage(pd.read_csv(data), data, repo_dir=tmp_path)
    assert lineage["source"] == str(data.resolve()) and lineage["source_digest"] == expected
    assert lineage["n_rows"] == 4 and lineage["n_columns"] == 2 and lineage["columns"] == ["amount", "city"]
    assert lineage["git_commit"] is None and lineage["git_dirty"] is None
    assert lineage["versions"]["torch"] and lineage["versions"]["python"]
    assert lineage["data_digest"] == dataframe_digest(pd.read_csv(data))
    json.dumps(lineage)  # JSON-ready
    remote = collect_lineage(_frame(), "s3://bucket/train.parquet", repo_dir=tmp_path)
    assert remote["source"] == "s3://bucket/train.parquet" and remote["source_digest"] is None


# ---------------------------------------------------------------- plots
def test_plots_shapes() -> None:
    history = {"loss": [1, 0.5], "val_loss": [1.1, 0.7], "val_acc": [0.5, 0.6], "lr": [1e-3, 5e-4]}
    fig = plots.learning_curves(history)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 2
    assert len(plots.learning_curves({"loss": [1, 0.5]}).axes) == 1
    assert len(plots.learning_curves({}).axes) == 1

    labels = ["cat", "dog", "owl"]
    y_true = np.array([0, 1, 2, 2, 1, 0])
    y_pred = np.array([0, 2, 2, 2, 1, 1])
    fig = plots.confusion_matrix_figure(y_true, y_pred, labels)
    assert len(fig.axes) == 2  # matrix + colour bar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 9 and sum(map(int, texts)) == 6
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == labels
    by_label = plots.confusion_matrix_figure(np.array(labels)[y_true], np.array(labels)[y_pred], labels)
    assert [t.get_text() for t in by_label.axes[0].texts] == texts

    rng = np.random.default_rng(0)
    y_bin = np.array([0, 1] * 20)
    score = np.clip(y_bin * 0.6 + rng.random(40) * 0.5, 0, 1)
    fig = plots.roc_figure(y_bin, np.column_stack([1 - score, score]), ["neg", "pos"])
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 2  # curve + chance
    assert "AUC" in fig.axes[0].get_legend().get_texts()[0].get_text()
    proba = rng.dirichlet(np.ones(3), size=6)
    assert len(plots.roc_figure(y_true, proba, labels).axes[0].get_lines()) == 4  # 3 one-vs-rest + chance

    fig = plots.residuals_figure(np.arange(50.0), np.arange(50.0) + rng.normal(size=50))
    assert len(fig.axes) == 2

    fig = plots.feature_importance_figure([f"f{i}" for i in range(10)], np.linspace(-1, 0.5, 10), top=5)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 5
    assert fig.axes[0].get_yticklabels()[-1].get_text() == "f0"  # largest |value| on top
