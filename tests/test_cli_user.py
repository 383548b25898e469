"""What a new user meets on the command line: the version, help texts that say what the commands
take, evaluate counting the rows it could not score, errors naming the row deep in a large file,
and `info` answering from the manifest without importing torch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from waypost import Predictor, __version__
from waypost.cli import app
from waypost.scenarios.datasets import load_dataset, split


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    train, test = split(load_dataset("penguins"), "species")
    root = tmp_path_factory.mktemp("user")
    p = Predictor(target="species", preset="fast", model="lightgbm", track=False, verbose=False).fit(train)
    p.save(root / "model")
    p.export(root / "bundle", register=False)
    Predictor(target="species", preset="fast", model="mlp", track=False, verbose=False).fit(train).save(root / "mlp")
    return root, test.reset_index(drop=True)


def test_version_and_help_texts():
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip() == f"waypost {__version__}"
    dataset_help = " ".join(runner.invoke(app, ["dataset", "--help"], env={"COLUMNS": "300"}).output.split())
    assert "--list" not in dataset_help and "waypost datasets" in dataset_help
    info_help = " ".join(runner.invoke(app, ["info", "--help"], env={"COLUMNS": "300"}).output.split())
    assert "or bundle" in info_help


@pytest.mark.parametrize("which", ["model", "bundle"])
def test_evaluate_says_how_many_rows_have_no_target(fitted, tmp_path, which):
    root, test = fitted
    frame = test.copy()
    frame.loc[:4, "species"] = None
    frame.to_csv(tmp_path / "t.csv", index=False)
    res = CliRunner().invoke(app, ["evaluate", str(root / which), str(tmp_path / "t.csv")], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"5 of {len(frame)} rows have no 'species' value" in res.output
    assert f"the metrics are on the other {len(frame) - 5}" in res.output


@pytest.mark.parametrize("which", ["model", "bundle"])
def test_a_bad_value_deep_in_a_large_file_names_its_row(fitted, tmp_path, which):
    root, test = fitted
    big = pd.concat([test.drop(columns=["species"])] * 1200, ignore_index=True)  # ~125k rows, 3 chunks
    row = 110_123
    big["body_mass_g"] = big["body_mass_g"].astype(object)
    big.loc[row, "body_mass_g"] = "heavy"
    big.to_csv(tmp_path / "big.csv", index=False)
    res = CliRunner().invoke(app, ["predict", str(root / which), str(tmp_path / "big.csv"), "-o",
                                   str(tmp_path / "o.csv")], env={"COLUMNS": "300"})
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert f"row {row}: column 'body_mass_g' expected a number, got 'heavy'" in message, message


def test_info_on_a_model_directory_reads_only_the_manifest(fitted):
    root, _ = fitted
    code = ("import sys; from typer.testing import CliRunner; from waypost.cli import app; "
            f"r = CliRunner().invoke(app, ['info', {str(root / 'model')!r}, '--json']); "
            "assert r.exit_code == 0, r.output; print('torch' in sys.modules, 'lightning' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "False"]


def test_predicting_from_a_model_directory_does_not_import_the_training_stack(fitted, tmp_path):
    """An MLP model directory predicts with torch alone: Lightning (~4 s of imports) is for training."""
    root, test = fitted
    test.to_csv(tmp_path / "t.csv", index=False)
    code = ("import sys; from typer.testing import CliRunner; from waypost.cli import app; "
            f"r = CliRunner().invoke(app, ['predict', {str(root / 'mlp')!r}, {str(tmp_path / 't.csv')!r}, "
            f"'-o', {str(tmp_path / 'o.csv')!r}]); assert r.exit_code == 0, r.output; "
            "print('lightning' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False"
    assert np.isfinite(pd.read_csv(tmp_path / "o.csv").filter(like="proba_").to_numpy()).all()
