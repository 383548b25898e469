"""The one fit pipeline: fit-level callbacks see every step in order, the learned state lives in
one FittedModel, and a column kind without an encoder is dropped with a reason, never mis-routed."""
from __future__ import annotations

import pytest

from waypost import Predictor
from waypost.errors import ConfigError
from waypost.pipelines.callbacks import FitCallback
from waypost.pipelines.fitted import FittedModel
from waypost.scenarios.datasets import load_dataset, split


class Recorder(FitCallback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_plan(self, ctx):
        self.calls.append(("plan", ctx.config.task, len(ctx.plan)))

    def on_fit_start(self, ctx):
        self.calls.append(("start", ctx.data["train_rows"], ctx.data["valid_rows"]))

    def on_part_start(self, ctx, name, part):
        self.calls.append(("part_start", name))

    def on_part_fitted(self, ctx, name, part, score):
        self.calls.append(("part_fitted", name, score))

    def on_fit_end(self, ctx, model):
        self.calls.append(("end", model.selected, model.validation_metrics["accuracy"]))


def test_user_callbacks_see_every_step_and_the_fitted_model():
    train, test = split(load_dataset("penguins"), "species", test_size=0.3, seed=0)
    recorder = Recorder()
    p = Predictor(target="species", preset="fast", model="blend", track=False, verbose=False,
                  callbacks=[recorder]).fit(train)
    steps = [c[0] for c in recorder.calls]
    assert steps == ["plan", "start", "part_start", "part_fitted", "part_start", "part_fitted", "end"]
    assert [c[1] for c in recorder.calls if c[0] == "part_fitted"] == ["gbm", "mlp"]
    assert all(0.0 <= c[2] < 1.0 for c in recorder.calls if c[0] == "part_fitted")  # log losses
    assert recorder.calls[1][1] + recorder.calls[1][2] == len(train.dropna(subset=["species"]))
    assert isinstance(p.fitted_, FittedModel) and p.selected_ == recorder.calls[-1][1]
    assert p.evaluate(test)["accuracy"] > 0.95
    with pytest.raises(AttributeError):  # learned state is read from the FittedModel, not written
        p.parts_ = {}


def test_a_callback_must_be_a_fit_callback():
    train, _ = split(load_dataset("penguins"), "species", test_size=0.3, seed=0)
    with pytest.raises(ConfigError, match="FitCallback"):
        Predictor(target="species", preset="fast", track=False, verbose=False, callbacks=[print]).fit(train)


def test_a_kind_without_an_encoder_is_dropped_with_its_reason():
    """An audio column is recognised, and dropped by the plan because no audio kind is registered yet."""
    train, _ = split(load_dataset("penguins"), "species", test_size=0.3, seed=0)
    train = train.assign(call=[f"clips/{i}.wav" for i in range(len(train))])
    p = Predictor(target="species", preset="fast", model="lightgbm", track=False, verbose=False).fit(train)
    dropped = next(d for d in p.plan_ if d.subject == "column 'call'")
    assert dropped.choice == "dropped" and "no audio encoder" in dropped.reason
    assert "call" not in p.features_
