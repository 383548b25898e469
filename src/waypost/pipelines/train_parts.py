"""Training the candidate parts: once on a holdout split, or k times over folds (bagging).

Holdout: each part trains on the training rows, early-stops on the validation rows, and its
validation outputs feed the ensemble's weights. Bagging (small tables): the rows are cut into k
folds; each part trains k times, on k-1 folds, early-stopping on the fold it leaves out, so every
row gets one out-of-fold prediction from a model that never saw it. The weights are fitted on those
out-of-fold outputs (every row counts, not a fifth of them), and the model keeps all k fold models
of each part at 1/k of its weight: the bundle averages them inside its one graph.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from waypost.plan import Decision

#: tabular tables up to this many training rows are bagged by default (preset medium and best): a
#: judgement, not a sweep (docs/decisions.md "Bagging")
BAG_MAX_ROWS = 10_000
BAG_FOLDS = 5


@dataclass
class TrainedParts:
    parts: dict[str, Any] = field(default_factory=dict)  # name (or "name.fold") -> fitted part
    members: dict[str, list[str]] = field(default_factory=dict)  # family -> its parts' names
    raws: dict[str, np.ndarray] = field(default_factory=dict)  # family -> validation / out-of-fold output
    scores: dict[str, float] = field(default_factory=dict)  # family -> validation loss

    def part_weights(self, family_weights: dict[str, float]) -> dict[str, float]:
        """Each family's weight spread evenly over its fold models."""
        return {m: w / len(self.members[f]) for f, w in family_weights.items() for m in self.members[f]}


@dataclass
class Split:
    """Rows a part trains on, rows it early-stops on, and where those rows sit among the scored ones."""

    x_train: Any
    y_train: np.ndarray
    x_valid: Any
    y_valid: np.ndarray
    held: np.ndarray  # indices of the validation rows in the scored rows


def bagging_folds(cfg: Any, n_rows: int, tabular_only: bool, valid_given: bool) -> tuple[int, str]:
    """(folds, why): 0 for a holdout split. `training.bagging`: "auto", 0 (never) or a fold count."""
    asked = cfg.training.bagging
    if asked != "auto":
        k = int(asked)
        if k and valid_given:
            return 0, "training.bagging asks for folds, but validation data was given: it validates instead"
        if k and not tabular_only:
            return 0, "bagging trains tabular tables only (an encoder network k times costs k fits)"
        return k, f"training.bagging: {k}" if k else "training.bagging: 0"
    if valid_given or not tabular_only or cfg.preset == "fast":
        return 0, ""
    if n_rows > BAG_MAX_ROWS:
        return 0, f"{n_rows} rows > {BAG_MAX_ROWS}: one holdout split validates well enough"
    return BAG_FOLDS, (f"{n_rows} rows <= {BAG_MAX_ROWS} (preset {cfg.preset}): a {cfg.data.valid_fraction:.0%} "
                       "holdout would both starve training and give noisy ensemble weights")


def fold_indices(task: Any, y: Any, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train rows, validation rows) pairs, stratified as the task's split is."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = task.stratify_labels(y)
    if labels is not None and np.asarray(labels.value_counts()).min() >= k:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), np.asarray(labels)))
    return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y))))


def take(arrays: Any, rows: np.ndarray) -> Any:
    """The rows `rows` of a TabularArrays."""
    return type(arrays)(arrays.numeric[rows], arrays.categorical[rows], arrays.gbm[rows])


def holdout_split(x_train: Any, y_train: np.ndarray, x_valid: Any, y_valid: np.ndarray) -> list[Split]:
    return [Split(x_train, y_train, x_valid, y_valid, np.arange(len(y_valid)))]


def fold_splits(x: Any, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> list[Split]:
    return [Split(take(x, rows), y[rows], take(x, held), y[held], held) for rows, held in folds]


def train_parts(ctx: Any, callbacks: Any, task: Any, make: Any, splits: list[Split],
                y_scored: np.ndarray) -> TrainedParts:
    """Each candidate once per split (`make(i)`: fresh candidates, in a fixed order, for split i).
    One split: the holdout, parts named by their family. Several: the folds, parts named
    `family.i`; each fold's outputs fill its held-out rows, so the family is scored on every row of
    `y_scored`. A family that runs out of time between folds is dropped whole (its out-of-fold
    outputs would be incomplete); the first family always finishes. A part whose class names
    another family in `uses` gets that family's fitted part of the same split through
    `attach(...)` before it trains (the entity-embedding GBM reads the MLP's), and is skipped when
    that family did not train."""
    k = len(splits)
    out = TrainedParts()
    per_split = [make(i) for i in range(k)]
    for c, first in enumerate(per_split[0]):
        uses = getattr(first.part, "uses", None)
        if uses is not None and uses not in out.members:
            ctx.plan.append(Decision("training", first.name, "skipped", f"it reads the {uses} part, which did not train"))
            continue
        if _skip(ctx, first, list(out.members)):
            continue
        start_left = _seconds_left(ctx.session, first.name)
        trained: dict[str, Any] = {}
        raw: np.ndarray | None = None
        for i, split in enumerate(splits):
            if i and out.parts and first.min_seconds and _seconds_left(ctx.session, first.name) <= first.min_seconds:
                break
            cand = per_split[i][c]
            name = cand.name if k == 1 else f"{cand.name}.{i}"
            if uses is not None:
                cand.part.attach(out.parts[out.members[uses][i]])
            share = cand.share if k == 1 else _fold_share(cand.share, start_left,
                                                          _seconds_left(ctx.session, first.name), k - i)
            _train(ctx, callbacks, cand, name, share, split)
            held_raw = cand.part.predict_raw(split.x_valid)
            raw = np.zeros((len(y_scored),) + held_raw.shape[1:]) if raw is None else raw
            raw[split.held] = held_raw
            trained[name] = cand.part
        if len(trained) < k:
            ctx.plan.append(Decision("training", first.name, "dropped", f"time_limit of "
                                     f"{ctx.config.training.time_limit:.0f}s ran out after {len(trained)} of its {k} folds"))
            continue
        out.parts.update(trained)
        out.members[first.name] = list(trained)
        ctx.plan.extend(first.describe(first.part))
        out.raws[first.name] = raw
        out.scores[first.name] = task.validation_loss(raw, y_scored)
        callbacks.on_part_fitted(ctx, first.name, first.part, out.scores[first.name])
    return out


def _fold_share(share: float, start_left: float, left: float, folds_to_go: int) -> float:
    """The share of the time left for one fold: the part may use `share` of what was left when its
    first fold started (`start_left`), spread evenly over the folds still to train."""
    if not np.isfinite(start_left) or left <= 0:
        return share
    allotment = left - (1.0 - share) * start_left  # what the part has not used yet
    return float(np.clip(allotment / folds_to_go / left, 0.01, 1.0))


def _skip(ctx: Any, cand: Any, trained: list[str]) -> bool:
    """Skip a part when the time left is below its minimum and another part has already trained."""
    if trained and cand.min_seconds and _seconds_left(ctx.session, cand.name) <= cand.min_seconds:
        ctx.plan.append(Decision("training", cand.name, "skipped",
                                 f"time_limit of {ctx.config.training.time_limit:.0f}s used up by {', '.join(trained)}"))
        return True
    return False


def _train(ctx: Any, callbacks: Any, cand: Any, slot: str, share: float, split: Split) -> None:
    from waypost.train import interrupt

    callbacks.on_part_start(ctx, slot, cand.part)
    with ctx.session.part(slot, share=share):
        cand.part.fit(split.x_train, split.y_train, split.x_valid, split.y_valid, tracker=ctx.tracker,
                      verbose=ctx.verbose)
    interrupt.check(f"after the {slot}")


def _seconds_left(session: Any, name: str) -> float:
    with session.part(name):
        left = session.deadline_for(0)
    return float("inf") if left is None else left - time.perf_counter()
