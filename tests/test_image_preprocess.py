"""The image column's preprocessor: sizes chosen from real data, JSON state round trip, errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from waypost.data.image_preprocess import ImagePreprocessor, choose_size
from waypost.errors import DataError
from waypost.scenarios.image_data import mnist_frame


def test_mnist_column_is_28px_grayscale_and_round_trips():
    frame = mnist_frame(n_per_class=5, seed=0)
    pre = ImagePreprocessor("image").fit(frame["image"])
    assert pre.size_ == (28, 28) and pre.channels_ == 1  # the images' own size: no upscaling
    assert "28x28" in pre.decision_.reason and "grayscale" in pre.decision_.reason
    (images,), kept, skipped = pre.transform(frame["image"])
    assert images.dtype == np.uint8 and images.shape == (50, 1, 28, 28) and len(kept) == 50 and not skipped
    pre.mean_, pre.std_ = [0.449], [0.226]  # what the fit copies from the trained network
    back = ImagePreprocessor.from_state(json.loads(json.dumps(pre.to_state())))
    np.testing.assert_array_equal(back.transform(frame["image"])[0][0], images)
    assert (back.size_, back.channels_, back.mean_, back.std_) == ((28, 28), 1, [0.449], [0.226])


def test_size_rule_caps_large_photos():
    assert choose_size((427, 640))[0] == (152, 224)
    assert choose_size((8, 8))[0] == (16, 16)


def test_bad_cells_are_named_or_skipped(tmp_path):
    frame = mnist_frame(n_per_class=2, seed=0)
    cells = list(frame["image"]) + [str(tmp_path / "missing.png")]
    pre = ImagePreprocessor("image").fit(pd.Series(cells[:-1]))
    with pytest.raises(DataError, match="missing.png"):
        pre.transform(pd.Series(cells))
    (images,), kept, skipped = pre.transform(pd.Series(cells), on_bad_image="skip")
    assert len(images) == 20 and skipped and skipped[0]["path"].endswith("missing.png")
    with pytest.raises(DataError, match="no readable images"):
        ImagePreprocessor("image").fit(pd.Series([None, None]))
