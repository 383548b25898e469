"""Train/validation/test splits that keep the target's distribution on both sides.

What to stratify on is the task's (`waypost.tasks`). Classification stratifies on the class (when
every class has two rows or more). Regression stratifies on 10 quantile bins of the target: on
small, noisy tables (sklearn's diabetes: test R2 of one linear model ranges 0.39-0.59 across random
splits) an unstratified split measures the split, not the model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def stratify_labels(y: pd.Series, task: str | None) -> pd.Series | None:
    """Labels to stratify on, or None for a random split (task None, or a class with one row):
    the task says what (`waypost.tasks`: the class, or target deciles)."""
    if task is None:
        return None
    from waypost.tasks import get_task

    return get_task(task).stratify_labels(y)


def split_frame(
    df: pd.DataFrame, target: str, task: str | None, test_size: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    labels = stratify_labels(df[target], task)
    return train_test_split(df, test_size=test_size, random_state=seed,
                            stratify=None if labels is None else np.asarray(labels))
