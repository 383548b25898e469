"""Image columns through the public API: real MNIST digits, class folders, bad files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from waypost import Predictor
from waypost.cli import app
from waypost.errors import DataError
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



def test_image_bundle_matches_the_model_without_torch(fitted, digits, tmp_path):
    import json
    import subprocess
    import sys

    import waypost.runtime as rt
    from waypost.deploy.bundle import records_from_frame

    _, test = digits
    rows = test.head(100)
    report = fitted.export(tmp_path / "b", data=rows)
    assert report["max_abs_diff_vs_model"] <= 1e-4
    bundle = rt.load(tmp_path / "b")
    got = bundle.predict_proba(records_from_frame(rows, ["image"]))
    np.testing.assert_allclose(got, fitted.predict_proba(rows).to_numpy(), atol=1e-4)
    # the torch-free runtime decodes PNG bytes itself (what a server receives)
    from waypost.data.images import load_image

    pngs = []
    for i, arr in enumerate(rows["image"].head(20)):
        path = tmp_path / f"{i}.png"
        load_image(arr).save(path)
        pngs.append(str(path))
    (tmp_path / "paths.json").write_text(json.dumps(pngs))
    script = (
        "import importlib.abc, json, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] in {'torch', 'pandas', 'sklearn', 'timm', 'torchvision'}: raise ImportError(n)\n"
        "sys.meta_path.insert(0, B())\n"
        "import waypost.runtime as rt\n"
        f"b = rt.load({str(tmp_path / 'b')!r})\n"
        f"paths = json.load(open({str(tmp_path / 'paths.json')!r}))\n"
        "rows = [{'image': open(p, 'rb').read()} for p in paths]\n"
        "print(json.dumps(b.predict_proba(rows).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.array(json.loads(out.stdout)), got[:20], atol=1e-4)
    q = fitted.export(tmp_path / "q", optimize="int8", data=rows)
    assert q["metrics"]["primary"] == "accuracy" and q["metrics"]["drop"] <= 0.01, q["metrics"]
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(tmp_path / "q" / "model.onnx")).graph.node)


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


def test_image_batches_go_to_the_gpu_only_when_training_there_and_they_fit(monkeypatch):
    import numpy as np
    import torch

    from waypost.config import TrainingConfig
    from waypost.models.image_model import batch_device

    images = np.zeros((10, 1, 5, 5), dtype=np.uint8)  # 250 bytes
    assert batch_device(TrainingConfig(accelerator="cpu"), images) is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1000, 4000))  # 1,000 bytes free
    assert batch_device(TrainingConfig(accelerator="gpu"), images) == "cuda"  # 250 <= a quarter of 1,000
    assert batch_device(TrainingConfig(accelerator="gpu"), images, images[:1]) is None  # 275 > 250
