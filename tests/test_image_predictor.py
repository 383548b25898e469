"""Image columns through the public API: real MNIST digits, class folders, bad files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from waypost import Predictor
from waypost.cli import app
from waypost.errors import ConfigError, DataError
from waypost.scenarios.image_data import mnist_frame, write_image_folder


@pytest.fixture(scope="module")
def digits():
    df = mnist_frame(seed=0).sample(frac=1.0, random_state=0).reset_index(drop=True)
    train = df.groupby("label", group_keys=False).head(100)  # 100 per class, as the issue asks
    return train, df.drop(train.index).head(1000)


@pytest.fixture(scope="module")
def fitted(digits):
    train, _ = digits
    return Predictor(target="label", preset="fast", track=False, verbose=False).fit(train)


def test_mnist_100_per_class_reaches_090_on_1000_held_out(fitted, digits, tmp_path):
    _, test = digits
    metrics = fitted.evaluate(test)
    assert metrics["accuracy"] >= 0.90, metrics
    assert fitted.selected_ == "image" and any(d.choice == "small_cnn" for d in fitted.plan_)
    assert any(d.subject == "horizontal flip" and d.choice == "off" for d in fitted.plan_)
    fitted.save(tmp_path / "m")
    loaded = Predictor.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(test.head(64)).to_numpy(),
                               fitted.predict_proba(test.head(64)).to_numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="next step of issue #4"):
        fitted.export(tmp_path / "bundle")


def test_class_folder_round_trip_through_the_cli(digits, tmp_path, monkeypatch):
    train, test = digits
    write_image_folder(train.groupby("label", group_keys=False).head(30), tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["init", "digits", "--target", "label", "--preset", "fast"])
    assert res.exit_code == 0, res.output
    assert "300 images in 10 classes" in res.output and "small_cnn" in open("waypost.yaml").read()
    res = runner.invoke(app, ["train", "waypost.yaml", "--name", "m", "--no-track", "-q"])
    assert res.exit_code == 0, res.output
    model = Predictor.load("runs/m")
    table = pd.read_csv("digits_images.csv")
    assert model.evaluate(table)["accuracy"] > 0.7  # 300 training images from PNG files on disk
    write_image_folder(test.head(20), tmp_path / "fresh")
    from waypost.data.image_folder import list_images

    assert len(model.predict(list_images(tmp_path / "fresh"))) == 20


def test_missing_and_corrupt_images_are_named_or_skipped(digits, tmp_path):
    train, _ = digits
    write_image_folder(train.groupby("label", group_keys=False).head(20), tmp_path / "d")
    from waypost.data.image_folder import table_from_folder

    table = table_from_folder(tmp_path / "d")
    broken = tmp_path / "d" / "3" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    table = pd.concat([table, pd.DataFrame({"image": [str(broken), str(tmp_path / "gone.png")], "label": [3, 4]})],
                      ignore_index=True)
    with pytest.raises(DataError, match="broken.png|gone.png"):
        Predictor(target="label", preset="fast", track=False, verbose=False).fit(table)
    p = Predictor(target="label", preset="fast", track=False, verbose=False,
                  config={"data": {"on_bad_image": "skip"}, "training": {"max_epochs": 2}}).fit(table)
    skipped = [d for d in p.plan_ if d.choice.endswith("skipped")]
    assert skipped and skipped[0].choice == "2 skipped"
    with pytest.raises(DataError, match="gone.png"):
        p.predict(pd.DataFrame({"image": [str(tmp_path / "gone.png")]}))
