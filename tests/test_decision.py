"""The binary decision threshold (issue #12): chosen on validation for the metric the user names,
applied by predict, the torch-free runtime and the server alike; probabilities untouched.

Real data: ISLR Default (10,000 customers, 3.3% default), where argmax rarely predicts a default.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from waypost import Predictor
from waypost.scenarios.datasets import load_dataset, split

FAST = {"preset": "fast", "track": False, "verbose": False}


@pytest.fixture(scope="module")
def default_data():
    return split(load_dataset("islr_default"), "default", test_size=0.3, seed=0)


def test_an_f1_threshold_finds_more_defaults_and_the_bundle_applies_it(default_data, tmp_path):
    from waypost.runtime import load

    train, test = default_data
    parts = {"model": {"parts": ["gbm", "linear"]}}
    argmax = Predictor(target="default", config=parts, **FAST).fit(train)
    tuned = Predictor(target="default", config={**parts, "model": {**parts["model"], "decision": {"metric": "f1"}}},
                      **FAST).fit(train)
    cut = tuned.target_encoder_.threshold_
    assert 0.05 < cut < 0.5  # a rare class: a lower cut than argmax's 0.5
    assert any(d.subject == "threshold" and "f1" in d.reason for d in tuned.plan_)
    y = (test["default"] == "Yes").to_numpy()
    f1 = {name: f1_score(y, p.predict(test.drop(columns=["default"])) == "Yes")
          for name, p in (("argmax", argmax), ("tuned", tuned))}
    assert f1["tuned"] > f1["argmax"] + 0.02, f1
    # probabilities are the model's, whatever the cut; the Brier score says how reliable they are
    proba = tuned.predict_proba(test)["Yes"].to_numpy()
    np.testing.assert_array_equal(tuned.predict(test) == "Yes", proba >= cut)
    metrics = tuned.evaluate(test)
    assert 0.0 < metrics["brier"] < 0.05 and metrics["f1_macro"] > argmax.evaluate(test)["f1_macro"]
    # the runtime reads the threshold from the bundle
    tuned.export(tmp_path / "bundle")
    out = load(tmp_path / "bundle").infer(test.drop(columns=["default"]).to_dict("records"))
    np.testing.assert_array_equal(np.asarray(out["prediction"]), tuned.predict(test))
    # and the saved model keeps it
    tuned.save(tmp_path / "model")
    assert Predictor.load(tmp_path / "model").target_encoder_.threshold_ == cut


def test_a_cost_threshold_follows_the_costs(default_data):
    """A missed default costing 20 blocked cards: the cut moves down; costs the other way: up."""
    train, _ = default_data
    cuts = {}
    for name, (fp, fn) in {"miss_costly": (1.0, 20.0), "block_costly": (20.0, 1.0)}.items():
        cfg = {"model": {"parts": ["gbm"], "decision": {"metric": "cost", "false_positive_cost": fp,
                                                        "false_negative_cost": fn}}}
        cuts[name] = Predictor(target="default", config=cfg, **FAST).fit(train).target_encoder_.threshold_
    assert cuts["miss_costly"] < 0.5 < cuts["block_costly"], cuts
