"""Image + tabular columns in one table train one fused network (CNN features + MLP encoder -> concat
combiner), save, load and export to a bundle the torch-free runtime runs.

The task is built so that neither branch can solve it alone: the label is "digit >= 5" XOR a
yes/no column, on real MNIST digits. The image alone or the column alone gives ~50%; only a model
that combines both clears the floor.
"""
from __future__ import annotations

import numpy as np
import pytest

from waypost import Predictor
from waypost.scenarios.image_data import mnist_frame


@pytest.fixture(scope="module")
def table():
    df = mnist_frame(seed=0).sample(frac=1.0, random_state=1).reset_index(drop=True)
    rng = np.random.default_rng(0)
    df["flip"] = rng.choice(["yes", "no"], len(df))
    df["noise"] = rng.normal(size=len(df))
    df["noise"] = df["noise"].mask(rng.random(len(df)) < 0.05)  # a few missing values, handled by the tabular side
    df["big"] = np.where((df["label"] >= 5) ^ (df["flip"] == "yes"), "A", "B")
    df = df.drop(columns="label")
    return df.head(1000), df.iloc[2000:2500]


@pytest.fixture(scope="module")
def fused(table):
    train, _ = table
    return Predictor(target="big", preset="fast", track=False, verbose=False,
                     config={"training": {"max_epochs": 25, "early_stopping_patience": 5}}).fit(train)


def test_fusion_uses_both_the_image_and_the_column(fused, table):
    _, test = table
    assert any(d.subject == "fusion" and d.choice == "concat" for d in fused.plan_)
    assert fused.features_ == {"image": "image", "flip": "binary", "noise": "numeric"}
    accuracy = fused.evaluate(test)["accuracy"]
    assert accuracy >= 0.85, accuracy  # either input alone is a coin flip on this target


def test_fused_model_round_trips_through_save_and_bundle(fused, table, tmp_path):
    import waypost.runtime as rt
    from waypost.deploy.bundle import records_from_frame

    _, test = table
    rows = test.head(64)
    fused.save(tmp_path / "m")
    loaded = Predictor.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(rows).to_numpy(), fused.predict_proba(rows).to_numpy(), atol=1e-6)

    report = fused.export(tmp_path / "b")
    assert report["max_abs_diff_vs_model"] <= 1e-4
    bundle = rt.load(tmp_path / "b")
    assert {i.name for i in bundle.session.get_inputs()} == {"image", "numeric"}  # binary columns are numeric views
    got = bundle.predict_proba(records_from_frame(rows, list(fused.features_)))
    np.testing.assert_allclose(got, fused.predict_proba(rows).to_numpy(), atol=1e-4)
    with pytest.raises(Exception, match="flip"):
        bundle.predict([{"image": rows["image"].iloc[0], "noise": 0.1}])


def test_fused_int8_bundle_keeps_accuracy(fused, table, tmp_path):
    _, test = table
    report = fused.export(tmp_path / "q", optimize="int8", data=test.head(300))
    assert report["metrics"]["drop"] <= 0.01, report["metrics"]
    assert report["size_bytes"] < report["fp32"]["size_bytes"] / 2
