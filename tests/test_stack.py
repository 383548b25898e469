"""Stacking (issue #12, item 6): the level-2 linear model over bagged parts' out-of-fold outputs and
the row's features; one graph in the bundle, equal to the in-memory model; save/load equal; the fit
keeps it only when its cross-validated loss beats the weighted ensemble's, and says so."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import waypost.runtime as rt
from waypost import Predictor
from waypost.ensemble.stack import StackedModel
from waypost.errors import ModelFileError, NotFittedError
from waypost.models.parts import load_part
from waypost.persistence import MANIFEST
from waypost.scenarios.datasets import load_dataset, split

CONFIG = {"model": {"parts": ["gbm", "linear"], "stack": True}, "training": {"bagging": 3}}


@pytest.fixture(scope="module")
def penguins():
    train, test = split(load_dataset("penguins"), "species")
    p = Predictor(target="species", preset="medium", track=False, verbose=False, config=CONFIG).fit(train)
    return p, train, test


def test_the_fit_weighs_the_stack_against_the_weighted_ensemble_and_says_so(penguins):
    p, _, _ = penguins
    (note,) = [d for d in p.plan_ if d.subject == "stack"]
    assert note.choice in ("kept", "not kept") and "cross-validation" in note.reason and "weighted ensemble" in note.reason
    scores = p.fitted_.validation_scores
    if note.choice == "kept":
        assert p.selected_ == "stack" and scores["stack"] < scores["blend"]
    else:  # nothing of it stays in the model
        assert p.selected_ != "stack" and "stack" not in p.fitted_.parts and "stack" not in scores


def test_a_holdout_fit_says_the_stack_needs_bagged_parts():
    train, _ = split(load_dataset("penguins"), "species")
    config = {**CONFIG, "training": {"bagging": 0}}
    p = Predictor(target="species", preset="medium", track=False, verbose=False, config=config).fit(train)
    (note,) = [d for d in p.plan_ if d.subject == "stack"]
    assert note.choice == "not trained" and "not bagged" in note.reason and "stack" not in p.fitted_.parts


def test_a_stack_over_the_fold_parts_exports_one_graph_equal_to_the_model(penguins, tmp_path):
    p, train, test = penguins
    model = p.fitted_
    from waypost.pipelines.train_parts import fold_indices
    from waypost.tasks import get_task

    members = {f: [n for n in model.parts if n.split(".")[0] == f] for f in ("gbm", "linear")}
    x = model.preprocessor.transform(train)
    x = getattr(x, "tabular", x)
    y = model.target_encoder.transform(train["species"])
    stack = StackedModel(task="multiclass", n_classes=3, cardinalities=model.preprocessor.tabular.category_cardinalities_,
                         members=members)
    with pytest.raises(NotFittedError):
        stack.predict_raw(x)
    with pytest.raises(NotFittedError, match="attach"):
        stack.family_raws(x)
    stack.attach(model.parts)
    raws = stack.family_raws(x)  # in-sample, not out-of-fold: this test is about the arithmetic
    held = [rows for _, rows in fold_indices(get_task("multiclass"), train["species"], 3, 0)]
    init_attrs = set(vars(stack))
    assert stack.fit(raws, x, y, held) is stack
    learned = set(vars(stack)) - init_attrs
    assert learned and all(name.endswith("_") for name in learned), learned
    assert stack.oof_raw_.shape == (len(y), 3) and np.isfinite(stack.loss_)

    xt = model.preprocessor.transform(test)
    xt = getattr(xt, "tabular", xt)
    expected = stack.predict_raw(xt)
    graph = stack.to_onnx(xt)
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in {"numeric": xt.numeric, "categorical": xt.categorical, "gbm": xt.gbm}.items() if k in names}
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=1e-4)

    np.testing.assert_allclose(expected.sum(1), 1.0, atol=1e-6)
    y_test = model.target_encoder.transform(test["species"])
    assert (expected.argmax(1) == y_test).mean() >= 0.9  # three species; the majority is ~0.44

    entry = stack.save(tmp_path)
    back = load_part(tmp_path, entry)
    assert type(back) is StackedModel and sorted(back.reads) == sorted(stack.reads)
    np.testing.assert_allclose(back.attach(model.parts).predict_raw(xt), expected, atol=1e-12)
    stacked_model = dataclasses.replace(model, parts={**model.parts, "stack": stack}, weights={"stack": 1.0},
                                        selected="stack")
    _saves_and_serves_alike(Predictor.from_fitted(stacked_model), test, tmp_path)
    good = (tmp_path / entry["file"]).read_bytes()
    (tmp_path / entry["file"]).write_bytes(b"garbage, not a model")
    with pytest.raises(ModelFileError, match=entry["file"]):
        StackedModel.load(tmp_path, entry)
    (tmp_path / entry["file"]).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        StackedModel.load(tmp_path, entry)
    (tmp_path / entry["file"]).write_bytes(good)
    with pytest.raises(ModelFileError, match="members"):
        StackedModel.load(tmp_path, {**entry, "members": {"gbm": []}})



def _saves_and_serves_alike(p: Predictor, test, tmp_path) -> None:
    """A model whose answer is the stack's: the model directory (parts the stack reads re-attached
    from the manifest) and the verified bundle answer as the in-memory model does."""
    rows = test.drop(columns=["species"])
    expected = p.predict_proba(rows).to_numpy()
    p.save(tmp_path / "model")
    loaded = Predictor.load(tmp_path / "model")
    assert loaded.selected_ == "stack" and set(loaded.fitted_.parts) == set(p.fitted_.parts)
    np.testing.assert_allclose(loaded.predict_proba(rows).to_numpy(), expected, atol=1e-12)
    p.export(tmp_path / "bundle", register=False)
    np.testing.assert_allclose(np.asarray(rt.load(tmp_path / "bundle").predict_proba(rows)), expected, atol=1e-4)
    manifest_path = tmp_path / "model" / MANIFEST  # a part the stack reads, dropped from the manifest
    manifest = json.loads(manifest_path.read_text())
    gone = sorted(manifest["parts"])[0]
    del manifest["parts"][gone]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=f"reads part.*{gone}"):
        Predictor.load(tmp_path / "model")
