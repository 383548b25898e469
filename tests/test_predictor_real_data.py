"""The accuracy floors from the core issue, on real data with a stratified 70/30 split (seed 0).

Regression splits are stratified on target deciles (waypost.data.split).
"""
from __future__ import annotations

import pytest

from waypost import Predictor
from waypost.scenarios.datasets import load_dataset, split

CASES = [
    ("breast_cancer", "target", "roc_auc", 0.99),
    ("wine", "target", "accuracy", 0.95),
    ("diabetes", "target", "r2", 0.40),
    ("penguins", "species", "accuracy", 0.97),
    ("islr_default", "default", "roc_auc", 0.94),
]


@pytest.mark.parametrize("name,target,metric,floor", CASES, ids=[c[0] for c in CASES])
def test_default_predictor_meets_the_floor(name, target, metric, floor):
    train, test = split(load_dataset(name), target, test_size=0.3, seed=0)
    predictor = Predictor(target=target, track=False, verbose=False).fit(train)
    metrics = predictor.evaluate(test)
    assert metrics[metric] >= floor, (metric, metrics, predictor.plan_text())

    # The blend (or whichever part it kept) is never worse than its better part on validation.
    scores = predictor.validation_scores_
    assert {"gbm", "mlp", "blend"} <= set(scores)
    best_part = min(scores["gbm"], scores["mlp"])
    assert scores["blend"] <= best_part + 0.005
    assert scores[predictor.selected_] <= best_part + 0.005
    # every decision carries a reason
    assert all(d.reason for d in predictor.plan_)
    assert any(d.step == "selection" for d in predictor.plan_)
