"""Files written by format version 1 keep loading and answering the same.

tests/fixtures/format_v1/ holds model directories (`Predictor.save`) and bundles
(`Predictor.export`) written by commit ec9be34, the last format-1 code, with a few inputs and the
answers that code gave (scripts/make_format_fixtures.py wrote them). Each case here loads both
with today's code and must answer the same labels exactly and the same probabilities or values
within 1e-5: a format change that forgets the old layout, or reads an old field differently,
fails here. The manifests are checked to say format_version 1, so the test keeps proving what it
claims after the writers move on to version 2.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "format_v1"
CASES = ["penguins", "diabetes", "mnist", "fortunes"]
ATOL = 1e-5


def _inputs(case: Path) -> list[dict[str, Any]]:
    """The stored records, with "png:NAME" cells read as the PNG bytes a client would send."""
    def cell(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("png:"):
            return (case / value[4:]).read_bytes()
        return value
    return [{k: cell(v) for k, v in rec.items()} for rec in json.loads((case / "inputs.json").read_text())]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A private copy of one fixture (loading must never touch the committed files) and its answers."""
    source = FIXTURES / request.param
    assert source.is_dir(), f"fixture {source} is missing: run scripts/make_format_fixtures.py at ec9be34"
    copy = Path(shutil.copytree(source, tmp_path / request.param))
    return copy, json.loads((copy / "expected.json").read_text())


def _same_values(got: Any, want: list[Any], what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    want_arr = np.asarray(want, dtype=np.float64)
    assert got.shape == want_arr.shape, (what, got.shape, want_arr.shape)
    # values in the target's units (diabetes: 25-346) carry float32's relative error, hence rtol too
    np.testing.assert_allclose(got, want_arr, rtol=1e-5, atol=ATOL, err_msg=what)


def test_format_1_manifests_are_what_the_fixtures_hold(case: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = case
    model = json.loads((folder / "model" / "waypost_model.json").read_text())
    bundle = json.loads((folder / "bundle" / "waypost.json").read_text())
    assert (model["format"], model["format_version"]) == ("waypost.model", 1)
    assert (bundle["format"], bundle["format_version"]) == ("waypost.bundle", 1)
    assert not any(p.suffix == ".pkl" for p in folder.rglob("*"))


def test_format_1_model_directory_loads_and_predicts_the_same(case: tuple[Path, dict[str, Any]]) -> None:
    from waypost import Predictor

    folder, expected = case
    predictor = Predictor.load(folder / "model")
    frame = pd.DataFrame(_inputs(folder))
    want = expected["predictor"]
    labels = np.asarray(predictor.predict(frame))
    if expected["classes"] is None:  # regression
        _same_values(labels, want["predict"], "Predictor.predict")
        assert want["proba"] is None
        return
    assert labels.tolist() == want["predict"]
    proba = predictor.predict_proba(frame)
    assert list(proba.columns) == expected["classes"]
    _same_values(proba.to_numpy(), want["proba"], "Predictor.predict_proba")


def test_format_1_bundle_loads_and_infers_the_same(case: tuple[Path, dict[str, Any]]) -> None:
    import waypost.runtime as rt

    folder, expected = case
    bundle = rt.load(folder / "bundle")  # verifies the graph's digest and runs its self-test
    result = bundle.infer(_inputs(folder))
    want = expected["bundle"]
    if expected["classes"] is None:
        _same_values(result["prediction"], want["prediction"], "Bundle.infer prediction")
        assert result["proba"] is None and want["proba"] is None
        return
    assert bundle.classes == expected["classes"]
    assert np.asarray(result["prediction"]).tolist() == want["prediction"]
    _same_values(result["proba"], want["proba"], "Bundle.infer proba")


def test_model_directory_and_bundle_of_one_fit_agree(case: tuple[Path, dict[str, Any]]) -> None:
    """The stored answers themselves: the bundle answered what the model answered, so a fixture
    written from two different fits (or edited by hand) cannot pass unnoticed."""
    _, expected = case
    want_model, want_bundle = expected["predictor"], expected["bundle"]
    if expected["classes"] is None:
        np.testing.assert_allclose(want_bundle["prediction"], want_model["predict"], rtol=1e-4, atol=1e-3)
    else:
        assert want_bundle["prediction"] == want_model["predict"]
        np.testing.assert_allclose(want_bundle["proba"], want_model["proba"], atol=1e-4)
