"""Tree ensembles in ONNX must decide exactly like LightGBM/XGBoost, missing values and unseen
categories included (onnxmltools' LightGBM converter did not: up to 0.03 off on NaNs)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from waypost import Predictor
from waypost.deploy.gbm_onnx import gbm_model, reference_predictions
from waypost.scenarios.datasets import load_dataset, split

# (data, target, task): the task inferred, and a two-class target declared "multiclass" (one boosted
# margin, like a binary one: the graph's head must follow the margins, not the task's name)
CASES = [("penguins", "species", None), ("islr_default", "default", None), ("diabetes", "target", None),
         ("breast_cancer", "target", "multiclass")]


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("name,target,task", CASES, ids=[c[0] for c in CASES])
def test_trees_match_the_library_with_nans_and_unseen_categories(library, name, target, task):
    train, test = split(load_dataset(name), target, test_size=0.3, seed=0)
    p = Predictor(target=target, task=task, preset="fast", model=library, track=False, verbose=False).fit(train)
    part = p.parts_["gbm"]
    x = p.preprocessor_.transform(test).gbm
    session = ort.InferenceSession(gbm_model(part, x.shape[1], 20).SerializeToString())
    rng = np.random.default_rng(0)
    for _ in range(5):
        xx = x.copy()
        xx[rng.random(xx.shape) < 0.3] = np.nan
        for c in part.categorical:  # codes past the vocabulary stand for unseen categories
            xx[:, c] = np.where(np.isnan(xx[:, c]), rng.integers(0, 6, len(xx)).astype(np.float32), xx[:, c])
        got = session.run(None, {"gbm": xx})[0]
        np.testing.assert_allclose(got, reference_predictions(part, xx).reshape(len(xx), -1), atol=1e-5)
        if part.classifier:  # probabilities: one column per class, each row summing to 1
            assert got.shape == (len(xx), len(p.classes_))
            np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_static_qdq_quantisation_with_calibration_rows():
    from waypost.deploy.onnx_graph import build_model_graph
    from waypost.deploy.quantize import quantize_static_qdq

    train, test = split(load_dataset("breast_cancer"), "target", test_size=0.3, seed=0)
    p = Predictor(target="target", preset="fast", model="mlp", track=False, verbose=False).fit(train)
    arrays = p.preprocessor_.transform(train)
    fp32 = build_model_graph(p, arrays)
    calibration = ({"numeric": arrays.numeric[i:i + 32]} for i in range(0, 320, 32))
    q = quantize_static_qdq(fp32, calibration)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    feed = {"numeric": p.preprocessor_.transform(test).numeric}
    ref = ort.InferenceSession(fp32.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(q.SerializeToString()).run(None, feed)[0]
    assert np.abs(got - ref).max() < 0.1
    y = p.target_encoder_.transform(test["target"])
    assert abs((got.argmax(1) == y).mean() - (ref.argmax(1) == y).mean()) <= 0.02
