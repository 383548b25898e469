"""Predictor API, persistence and bad input, on one small fitted model (penguins: NaNs, categories)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from waypost import Predictor
from waypost.errors import ConfigError, DataError, ModelFileError, NotFittedError
from waypost.persistence import MANIFEST
from waypost.scenarios.datasets import load_dataset, split


@pytest.fixture(scope="module")
def data():
    return split(load_dataset("penguins"), "species", test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    predictor = Predictor(target="species", preset="fast", track=False, verbose=False)
    returned = predictor.fit(train)
    predictor.fit_returned_ = returned  # what fit() returned, for the test below
    return predictor


def test_sklearn_habits_and_outputs(fitted, data):
    _, test = data
    assert fitted.fit_returned_ is fitted  # fit returns self
    assert fitted.task_ == "multiclass" and fitted.classes_ == ["Adelie", "Chinstrap", "Gentoo"]
    pred = fitted.predict(test)
    assert pred.shape == (len(test),) and set(pred) <= set(fitted.classes_)
    proba = fitted.predict_proba(test)
    assert list(proba.columns) == fitted.classes_ and proba.index.equals(test.index)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba.idxmax(axis=1).to_numpy() == pred).all()
    metrics = fitted.evaluate(test)
    assert set(metrics) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert metrics["accuracy"] >= 0.95
    text = fitted.plan_text()
    assert "column 'island'" in text and "category" in text


def test_regression_api():
    train, test = split(load_dataset("diabetes"), "target", test_size=0.3, seed=0)
    p = Predictor(target="target", preset="fast", model="lightgbm", track=False, verbose=False).fit(train)
    assert p.task_ == "regression" and p.selected_ == "gbm"
    assert set(p.evaluate(test)) == {"rmse", "mae", "r2"}
    assert p.predict(test).dtype.kind == "f"
    with pytest.raises(DataError, match="predict_proba is for classification"):
        p.predict_proba(test)


def test_save_load_round_trip_and_manifest(fitted, data, tmp_path):
    _, test = data
    path = fitted.save(tmp_path / "model")
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["format_version"] == 3 and manifest["task"] == "multiclass"
    assert manifest["lineage"]["data_digest"].startswith("sha256:")
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.pickle"))
    for name, entry in manifest["parts"].items():  # each part's files in a folder of its own
        assert entry["dir"] == f"parts/{name}" and (path / entry["dir"] / entry["file"]).is_file()
    loaded = Predictor.load(path)
    pd.testing.assert_frame_equal(loaded.predict_proba(test), fitted.predict_proba(test), atol=1e-6)
    assert loaded.plan_ == fitted.plan_
    # saving again over an existing model directory replaces it atomically
    fitted.save(path)
    assert Predictor.load(path).selected_ == fitted.selected_
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_errors_name_the_file(fitted, tmp_path):
    with pytest.raises(ModelFileError, match="model directory not found"):
        Predictor.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match=MANIFEST):
        Predictor.load(tmp_path / "empty")
    path = fitted.save(tmp_path / "m")
    manifest = path / MANIFEST
    good = manifest.read_text()
    manifest.write_text(good[:100])
    with pytest.raises(ModelFileError, match="corrupt"):
        Predictor.load(path)
    manifest.write_text(good.replace('"format_version": 3', '"format_version": 99'))
    with pytest.raises(ModelFileError, match="upgrade waypost"):
        Predictor.load(path)
    manifest.write_text(good)
    part = next(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)
    part.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match=part.name):
        Predictor.load(path)


def test_refuses_to_overwrite_a_foreign_directory(fitted, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ModelFileError, match="refusing to overwrite"):
        fitted.save(tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_failed_save_leaves_nothing_behind(fitted, tmp_path, monkeypatch):
    part = next(iter(fitted.parts_.values()))

    def boom(directory):
        (directory / "half-written.bin").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setattr(part, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_predict_time_input_handling(fitted, data):
    _, test = data
    with pytest.raises(DataError, match=r"missing columns at predict time: \['island', 'sex'\]"):
        fitted.predict(test.drop(columns=["island", "sex"]))
    # unseen categories share the unknown bucket; NaN is imputed: both still predict
    odd = test.head(5).copy()
    odd["island"] = ["Atlantis", None, "Biscoe", "Dream", "Torgersen"]
    odd.loc[odd.index[0], "bill_length_mm"] = np.nan
    odd["sex"] = [np.nan, "female", "alien", "male", "male"]
    proba = fitted.predict_proba(odd)
    assert proba.notna().all().all() and len(proba) == 5
    # extra columns are ignored
    assert len(fitted.predict(test.assign(extra=1))) == len(test)


def test_training_input_errors(tmp_path):
    df = load_dataset("penguins")
    with pytest.raises(DataError, match="target column 'nope' not found"):
        Predictor(target="nope", track=False, verbose=False).fit(df)
    with pytest.raises(DataError, match="species"):
        Predictor(target="species", track=False, verbose=False).fit(df.assign(species=np.nan))
    with pytest.raises(DataError, match="single class|one class|only one"):
        Predictor(target="species", track=False, verbose=False).fit(df.assign(species="Adelie"))
    with pytest.raises(DataError, match="not found"):
        Predictor(target="species", track=False, verbose=False).fit(tmp_path / "missing.csv")
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="data.xlsx"):
        Predictor(target="species", track=False, verbose=False).fit(tmp_path / "data.xlsx")
    with pytest.raises(ConfigError, match="training.max_epochs"):
        Predictor(target="species", track=False, config={"training": {"max_epochs": 0}}).fit(df)
    with pytest.raises(NotFittedError):
        Predictor(target="species").predict(df)


def test_rows_without_target_are_dropped_and_reported():
    train, _ = split(load_dataset("penguins"), "species", test_size=0.3, seed=0)
    train = train.copy()
    train.loc[train.index[:7], "species"] = None
    p = Predictor(target="species", preset="fast", model="lightgbm", track=False, verbose=False).fit(train)
    assert any(d.choice == "dropped rows" and d.reason.startswith("7 ") for d in p.plan_)


def test_valid_data_and_csv_parquet_paths(tmp_path, data):
    train, test = data
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_parquet(tmp_path / "test.parquet")
    p = Predictor(target="species", preset="fast", model="lightgbm", track=False, verbose=False)
    p.fit(tmp_path / "train.csv", valid_data=tmp_path / "test.parquet")
    assert any(d.subject == "validation" and d.reason == "given by the caller" for d in p.plan_)
    assert p.evaluate(tmp_path / "test.parquet")["accuracy"] > 0.95
    assert p.lineage_["source"].endswith("train.csv")
