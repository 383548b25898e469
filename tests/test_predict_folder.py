"""`waypost predict MODEL photos/`: one row per image of a folder, streamed in chunks of paths.

Uses the image bundle trained once in test_serve_images.py (real MNIST digits written as PNGs).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("mlxtend")

from waypost.cli import app  # noqa: E402
from waypost.data.image_folder import list_images  # noqa: E402
from waypost.errors import DataError  # noqa: E402
from waypost.scenarios.image_data import write_image_folder  # noqa: E402
from waypost.serve.batch import batch_job  # noqa: E402


@pytest.fixture
def photos(image_bundle, tmp_path):
    """Class subfolders of PNGs, one nested folder, and files that are not images (skipped)."""
    root = write_image_folder(image_bundle["test"].groupby("label", group_keys=False).head(3), tmp_path / "photos")
    nested = root / "7" / "more"
    nested.mkdir()
    (nested / "copy.png").write_bytes((root / "0" / sorted(p.name for p in (root / "0").iterdir())[0]).read_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(b"never read")
    return root


def test_folder_prediction_writes_one_row_per_image_matching_the_bundle(image_bundle, photos, tmp_path):
    import waypost.runtime as rt

    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["predict", str(image_bundle["bundle"]), str(photos), "-o", str(out),
                                   "--chunk-rows", "4"])
    assert res.exit_code == 0, res.output
    assert "wrote 31 predictions" in res.output and "onnxruntime" in res.output
    got = pd.read_csv(out)
    assert list(got.columns) == ["path", "prediction", *[f"proba_{c}" for c in range(10)]]
    assert got["path"].tolist() == list_images(photos)["image"].tolist()  # every image once, in list_images' order
    bundle = rt.load(image_bundle["bundle"])
    want = bundle.infer([{"image": Path(p).read_bytes()} for p in got["path"]])
    assert got["prediction"].tolist() == want["prediction"].tolist()
    np.testing.assert_allclose(got[[f"proba_{c}" for c in range(10)]].to_numpy(), want["proba"], atol=1e-6)

    # a model directory (torch) gives the same file layout and answers
    ref = tmp_path / "ref.parquet"
    res = CliRunner().invoke(app, ["predict", str(image_bundle["model"]), str(photos), "-o", str(ref)])
    assert res.exit_code == 0, res.output
    torch_out = pd.read_parquet(ref)
    assert list(torch_out.columns) == list(got.columns) and torch_out["path"].tolist() == got["path"].tolist()
    np.testing.assert_allclose(torch_out.iloc[:, 2:].to_numpy(), want["proba"], atol=1e-4)


def test_a_corrupt_image_is_named_with_its_row_in_the_folder(image_bundle, photos, tmp_path):
    bad = photos / "9" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    row = list_images(photos)["image"].tolist().index(str(bad.resolve()))
    res = CliRunner().invoke(app, ["predict", str(image_bundle["bundle"]), str(photos), "-o", str(tmp_path / "o.csv"),
                                   "--chunk-rows", "4"], env={"COLUMNS": "400"})  # no line folding
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert "zz_broken.png" in message and f"row {row}," in message, message


def test_a_folder_needs_an_image_only_model(tmp_path, photos):
    tabular = SimpleNamespace(features={"bill_length_mm": "numeric", "island": "category"})
    with pytest.raises(DataError, match="folder, but this model's features are tabular"):
        batch_job(tabular, photos)
    fused = SimpleNamespace(features={"photo": "image", "age": "numeric"})
    with pytest.raises(DataError, match="reads \\['age'\\] besides the image column 'photo'"):
        batch_job(fused, photos)
    image = SimpleNamespace(features={"image": "image"})
    with pytest.raises(DataError, match="--keep"):
        batch_job(image, photos, keep=["label"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        batch_job(image, tmp_path / "empty")


def test_folder_listing_is_code_point_order_and_does_not_loop(tmp_path):
    root = (tmp_path / "tricky").resolve()
    for rel in ("a.png", "a/b.png", "a b/c.png", "a0.png", "A/z.JPG", "a/.x.png", ".git/y.png", "a/n.txt", "é/1.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    listed = list_images(root)["image"].tolist()
    # code-point order of the relative paths, as if all were sorted at once ("a b/" < "a.png" < "a/")
    assert [Path(p).relative_to(root).as_posix() for p in listed] == [
        "A/z.JPG", "a b/c.png", "a.png", "a/b.png", "a0.png", "é/1.png"]
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # back into an ancestor: not followed
    assert list_images(root)["image"].tolist() == listed


def test_on_bad_image_skip_leaves_the_bad_image_out_and_counts_it(image_bundle, photos, tmp_path):
    bad = photos / "9" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "o.csv"
    res = CliRunner().invoke(app, ["predict", str(image_bundle["bundle"]), str(photos), "-o", str(out),
                                   "--chunk-rows", "4", "--on-bad-image", "skip"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    got = pd.read_csv(out)
    assert len(got) == 31 and str(bad.resolve()) not in got["path"].tolist()
    assert "skipped 1 unreadable image(s)" in res.output and "zz_broken.png" in res.output
    # without skip, the error says how to skip in predict (not the training-only config key)
    res = CliRunner().invoke(app, ["predict", str(image_bundle["bundle"]), str(photos), "-o", str(out)],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "--on-bad-image skip" in " ".join(res.output.split())
