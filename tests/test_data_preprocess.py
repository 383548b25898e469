"""Preprocessors fitted on training rows only; JSON state round trips; the target encoder."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from waypost.data.preprocess import (
    BinaryPreprocessor,
    CategoryPreprocessor,
    DatetimePreprocessor,
    NumericPreprocessor,
    TabularPreprocessor,
)
from waypost.data.target import TargetEncoder, drop_missing_target
from waypost.errors import DataError, NotFittedError
from waypost.scenarios.datasets import load_dataset

PENGUIN_FEATURES = {
    "island": "category",
    "bill_length_mm": "numeric",
    "bill_depth_mm": "numeric",
    "flipper_length_mm": "numeric",
    "body_mass_g": "numeric",
    "sex": "binary",
    "year": "numeric",
}


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_dataset("penguins")


@pytest.fixture(scope="module")
def tweets() -> pd.DataFrame:
    return load_dataset("trump_tweets").iloc[:3000].reset_index(drop=True)


def _json(state: dict) -> dict:
    return json.loads(json.dumps(state))


def test_numeric_fits_on_train_only(penguins: pd.DataFrame) -> None:
    train, test = penguins.iloc[:250], penguins.iloc[250:]  # row 3 (all NaN) is in train
    col = train["bill_length_mm"]
    pre = NumericPreprocessor().fit(col)
    assert pre.mean_ == pytest.approx(np.nanmean(col))
    assert pre.std_ == pytest.approx(np.nanstd(col))
    assert pre.median_ == pytest.approx(np.nanmedian(col))
    assert pre.mean_ != pytest.approx(np.nanmean(penguins["bill_length_mm"]))
    assert pre.output_names == ["bill_length_mm", "bill_length_mm__missing"]
    out = pre.transform(test["bill_length_mm"])
    assert out.dtype == np.float32 and out.shape == (len(test), 2)
    assert not np.isnan(out).any()
    nan_row = int(np.flatnonzero(test["bill_length_mm"].isna().to_numpy())[0])
    assert out[nan_row, 0] == pytest.approx((pre.median_ - pre.mean_) / pre.std_, rel=1e-6)
    assert out[nan_row, 1] == 1.0 and out[:, 1].sum() == 1.0


def test_numeric_inf_strings_and_constant(penguins: pd.DataFrame) -> None:
    pre = NumericPreprocessor("year").fit(penguins["year"])
    assert pre.output_names == ["year"]  # no missing in training -> no indicator
    out = pre.transform(pd.Series([2007, np.inf, None, "2008"], dtype=object))
    assert not np.isnan(out).any()
    assert out[1, 0] == out[2, 0] == pytest.approx((pre.median_ - pre.mean_) / pre.std_)
    with pytest.raises(DataError, match=r"row 1: column 'year' expected a number, got 'n/a'"):
        pre.transform(pd.Series(["2007", "n/a"]))
    const = NumericPreprocessor("c").fit(pd.Series([5.0] * 10))
    assert const.std_ == 1.0 and const.transform(pd.Series([5.0]))[0, 0] == 0.0
    with pytest.raises(NotFittedError):
        NumericPreprocessor("x").transform(pd.Series([1.0]))


def test_category_vocabulary_unseen_and_missing(penguins: pd.DataFrame) -> None:
    pre = CategoryPreprocessor().fit(penguins["island"])
    counts = penguins["island"].value_counts()
    assert pre.categories_ == list(counts.index)  # Biscoe 168, Dream 124, Torgersen 52
    assert pre.cardinality_ == 4
    codes = pre.transform(pd.Series(["Dream", "Atlantis", None, "Biscoe"]))
    assert codes.dtype == np.int64 and codes[:, 0].tolist() == [2, 0, 0, 1]
    assert pre.last_unseen_count_ == 1
    gbm = pre.transform_gbm(pd.Series(["Dream", "Atlantis", None]))
    assert gbm[:, 0].tolist() == [1.0, 3.0, 3.0]  # unknown and missing share code K = 3
    small = CategoryPreprocessor("island", max_categories=2).fit(penguins["island"])
    assert small.transform(pd.Series(["Torgersen"]))[0, 0] == 0
    rare = CategoryPreprocessor("island", min_frequency=100).fit(penguins["island"])
    assert rare.categories_ == ["Biscoe", "Dream"]


def test_category_int_float_are_one_category() -> None:
    pre = CategoryPreprocessor("code").fit(pd.Series([1, 2, 2, 3]))
    # the same codes read back as float because a prediction chunk had a missing value
    assert pre.transform(pd.Series([1.0, np.nan, 3.0]))[:, 0].tolist() == [2, 0, 3]
    assert pre.last_unseen_count_ == 0


def test_binary(penguins: pd.DataFrame) -> None:
    pre = BinaryPreprocessor().fit(penguins["sex"])
    assert pre.values_ == ["female", "male"]
    assert pre.output_names == ["sex", "sex__missing"]
    out = pre.transform(pd.Series(["male", "female", None, "unknown"]))
    assert out.tolist() == [[1.0, 0.0], [0.0, 0.0], [0.5, 1.0], [0.5, 1.0]]
    assert pre.last_unseen_count_ == 1
    gbm = pre.transform_gbm(pd.Series(["male", None]))
    assert gbm[0, 0] == 1.0 and np.isnan(gbm[1, 0])
    with pytest.raises(DataError, match="column 'island' is typed binary but has 3 distinct values"):
        BinaryPreprocessor().fit(penguins["island"])


def test_datetime(tweets: pd.DataFrame) -> None:
    train, test = tweets.iloc[:2000], tweets.iloc[2000:]
    pre = DatetimePreprocessor().fit(train["created_at"])
    assert pre.has_time_ and not pre.add_indicator_
    names = pre.output_names
    assert names[0] == "created_at__year" and "created_at__hour_sin" in names and len(names) == 9
    assert pre.gbm_names[-1] == "created_at__hour"
    col = test["created_at"].copy()
    col.iloc[0] = None
    col.iloc[1] = "not a date"
    out, gbm = pre.transform_both(col)
    assert out.shape == (len(test), 9) and not np.isnan(out).any()
    assert np.isnan(gbm[:2]).all() and not np.isnan(gbm[2:]).any()
    first = pd.Timestamp(test["created_at"].iloc[2]).tz_convert(None)
    assert gbm[2, 1:].tolist() == [first.month, first.dayofweek, first.dayofyear, first.hour]
    train_years = pre.transform(train["created_at"])[:, 0]
    assert abs(train_years.mean()) < 1e-3 and train_years.std() == pytest.approx(1.0, abs=1e-3)
    # date-only strings: no hour pair, and a missing value in training adds the indicator
    days = DatetimePreprocessor("day").fit(pd.Series(["2020-01-01", "2020-03-05", None]))
    assert not days.has_time_ and days.output_names[-1] == "day__missing" and len(days.output_names) == 8
    again = DatetimePreprocessor.from_state(_json(days.to_state()))
    probe = pd.Series(["2021-12-31", None, "2019-07-04"])
    assert np.array_equal(again.transform(probe), days.transform(probe))


def test_tabular_views(penguins: pd.DataFrame) -> None:
    train, test = penguins.iloc[::2], penguins.iloc[1::2].copy()
    pre = TabularPreprocessor(PENGUIN_FEATURES).fit(train)
    test.loc[test.index[0], "island"] = "Atlantis"
    arrays = pre.transform(test)
    assert arrays.numeric.dtype == np.float32 and not np.isnan(arrays.numeric).any()
    assert arrays.numeric.shape == (len(test), len(pre.numeric_names_))
    assert arrays.categorical.dtype == np.int64 and arrays.categorical.shape == (len(test), 1)
    assert pre.category_columns_ == ["island"] and pre.category_cardinalities_ == [4]
    assert arrays.categorical[0, 0] == 0 and pre.unseen_counts_["island"] == 1
    assert arrays.gbm.shape == (len(test), len(pre.gbm_names_))
    assert pre.gbm_categorical_ == [0] and pre.gbm_names_[0] == "island"
    assert arrays.gbm[0, 0] == 3.0  # unknown category -> code K for the GBM (not NaN)
    assert set(np.unique(arrays.gbm[1:, 0])) <= {0.0, 1.0, 2.0}
    raw = pre.gbm_names_.index("body_mass_g")
    np.testing.assert_array_equal(arrays.gbm[:, raw], test["body_mass_g"].to_numpy(np.float32))
    numeric_mean = pre.transform(train).numeric[:, pre.numeric_names_.index("body_mass_g")].mean()
    assert abs(numeric_mean) < 1e-5  # standardised with training statistics


def test_tabular_missing_columns_and_types(penguins: pd.DataFrame) -> None:
    pre = TabularPreprocessor(PENGUIN_FEATURES).fit(penguins)
    with pytest.raises(DataError, match=r"missing columns at predict time: \['island', 'sex'\]"):
        pre.transform(penguins.drop(columns=["island", "sex"]))
    extra = penguins.assign(note="extra column")  # extra columns are ignored
    np.testing.assert_array_equal(pre.transform(extra).numeric, pre.transform(penguins).numeric)
    with pytest.raises(DataError, match="column 'review' has type 'text': not a tabular type"):
        TabularPreprocessor({"review": "text"})


def test_tabular_json_round_trip(penguins: pd.DataFrame, tweets: pd.DataFrame) -> None:
    frame = pd.concat([penguins.reset_index(drop=True), tweets.iloc[: len(penguins)]], axis=1)
    features = {**PENGUIN_FEATURES, "created_at": "datetime", "favorite_count": "numeric", "source": "category"}
    pre = TabularPreprocessor(features).fit(frame.iloc[:200])
    state = _json(pre.to_state())
    again = TabularPreprocessor.from_state(state)
    for attr in ("numeric_names_", "category_columns_", "category_cardinalities_", "gbm_names_", "gbm_categorical_"):
        assert getattr(again, attr) == getattr(pre, attr)
    a, b = pre.transform(frame), again.transform(frame)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    np.testing.assert_array_equal(a.gbm, b.gbm)  # NaN positions equal too
    assert not np.isnan(a.numeric).any()


def test_tabular_is_vectorised() -> None:
    base = load_dataset("islr_default")
    big = pd.concat([base] * 30, ignore_index=True)  # 300,000 rows
    pre = TabularPreprocessor({"student": "binary", "balance": "numeric", "income": "numeric", "default": "category"})
    start = time.perf_counter()
    arrays = pre.fit(big).transform(big)
    assert time.perf_counter() - start < 5.0
    assert arrays.numeric.shape == (300_000, 3)


def test_target_encoder_classification(penguins: pd.DataFrame) -> None:
    enc = TargetEncoder("multiclass").fit(penguins["species"])
    assert enc.classes_ == ["Adelie", "Chinstrap", "Gentoo"]
    codes = enc.transform(penguins["species"])
    assert codes.dtype == np.int64 and np.bincount(codes).tolist() == [152, 68, 124]
    assert enc.inverse_transform(codes[:2]).tolist() == ["Adelie", "Adelie"]
    with pytest.raises(DataError, match="target column 'species' has label 'Emperor' not seen"):
        enc.transform(pd.Series(["Emperor"], name="species"))
    iris = load_dataset("iris")["target"]
    ints = TargetEncoder.from_state(_json(TargetEncoder("multiclass").fit(iris).to_state()))
    assert ints.classes_ == [0, 1, 2]
    labels = ints.inverse_transform(np.array([2, 0]))
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0]
    flags = TargetEncoder("binary").fit(pd.Series([True, False, True], name="f"))
    assert flags.classes_ == [False, True] and flags.inverse_transform([1]).tolist() == [True]
    # an int target read as float (a missing value upcast it) keeps int labels
    upcast = TargetEncoder("binary").fit(pd.Series([0.0, 1.0, 1.0], name="y"))
    assert upcast.classes_ == [0, 1] and upcast.transform(pd.Series([1, 0])).tolist() == [1, 0]


def test_target_encoder_regression_and_missing() -> None:
    y = load_dataset("diabetes")["target"]
    enc = TargetEncoder("regression").fit(y)
    z = enc.transform(y)
    assert z.dtype == np.float32 and abs(z.mean()) < 1e-5
    np.testing.assert_allclose(enc.inverse_transform(z), y.to_numpy(), rtol=1e-5)
    back = TargetEncoder.from_state(_json(enc.to_state()))
    assert back.mean_ == enc.mean_ and back.std_ == enc.std_
    with pytest.raises(DataError, match=r"regression target 'price' expected numbers .* like 'cheap'"):
        TargetEncoder("regression").fit(pd.Series(["1.5", "cheap"], name="price"))
    df = load_dataset("penguins")
    df.loc[[0, 5], "species"] = None
    kept, dropped = drop_missing_target(df, "species")
    assert dropped == 2 and len(kept) == len(df) - 2 and 0 not in kept.index
    with pytest.raises(DataError, match="target column 'species' has 2 missing values"):
        TargetEncoder("multiclass").fit(df["species"])
    with pytest.raises(DataError, match="target column 'label' not found"):
        drop_missing_target(df, "label")
