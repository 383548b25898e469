"""One conformance suite that every model part passes (scikit-learn's habit): fit returns self,
learned state ends in `_`, outputs are well-formed, save/load round-trips exactly, unfitted use fails."""
from __future__ import annotations

import numpy as np
import pytest

from waypost.config import GBMConfig, TrainingConfig
from waypost.data.preprocess import TabularPreprocessor
from waypost.data.target import TargetEncoder
from waypost.errors import ModelFileError, NotFittedError
from waypost.models.gbm import GBMModel
from waypost.models.tabular_mlp import MLPModel
from waypost.scenarios.datasets import load_dataset, split

FEATURES = {"island": "category", "bill_length_mm": "numeric", "bill_depth_mm": "numeric",
            "flipper_length_mm": "numeric", "body_mass_g": "numeric", "sex": "binary"}


@pytest.fixture(scope="module")
def penguins():
    train, valid = split(load_dataset("penguins"), "species", test_size=0.3, seed=0)
    pre = TabularPreprocessor(FEATURES).fit(train)
    enc = TargetEncoder("multiclass").fit(train["species"])
    return pre, pre.transform(train), enc.transform(train["species"]), pre.transform(valid), enc.transform(valid["species"])


def _make(kind, pre):
    if kind == "mlp":
        return MLPModel(task="multiclass", n_classes=3, cardinalities=pre.category_cardinalities_,
                        training=TrainingConfig(max_epochs=40, early_stopping_patience=8))
    return GBMModel(task="multiclass", n_classes=3, library=kind, gbm=GBMConfig(n_estimators=200),
                    feature_names=pre.gbm_names_, categorical=pre.gbm_categorical_)


@pytest.mark.parametrize("kind", ["mlp", "lightgbm", "xgboost"])
def test_model_part_contract(kind, penguins, tmp_path):
    pre, a_tr, y_tr, a_va, y_va = penguins
    model = _make(kind, pre)
    with pytest.raises(NotFittedError):
        model.predict_raw(a_va)
    init_attrs = set(vars(model))
    assert model.fit(a_tr, y_tr, a_va, y_va) is model
    learned = set(vars(model)) - init_attrs
    assert learned and all(name.endswith("_") for name in learned), learned

    proba = model.predict_raw(a_va)
    assert proba.shape == (len(y_va), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert (proba.argmax(1) == y_va).mean() >= 0.93

    entry = model.save(tmp_path)
    loaded = type(model).load(tmp_path, entry)
    np.testing.assert_allclose(loaded.predict_raw(a_va), proba, atol=1e-6)

    (tmp_path / entry["file"]).write_bytes(b"garbage, not a model")
    with pytest.raises(ModelFileError, match=entry["file"]):
        type(model).load(tmp_path, entry)
    (tmp_path / entry["file"]).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        type(model).load(tmp_path, entry)
