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

#: tabular tables up to this many training rows are bagged by default (preset medium and best);
#: measured in benchmarks/tabular.py: docs/decisions.md "Bagging"
BAG_MAX_ROWS = 10_000
BAG_FOLDS = 5


@dataclass
class TrainedParts:
    parts: dict[str, Any] = field(default_factory=dict)  # name (or "name.fold") -> fitted part
    raws: dict[str, np.ndarray] = field(default_factory=dict)  # family -> validation / out-of-fold output
    scores: dict[str, float] = field(default_factory=dict)  # family -> validation loss
    folds: int = 0  # 0: holdout

    def members(self, family: str) -> list[str]:
        return [family] if not self.folds else [f"{family}.{f}" for f in range(self.folds)]

    def part_weights(self, family_weights: dict[str, float]) -> dict[str, float]:
        """Each family's weight spread over its fold models."""
        return {m: w / len(self.members(f)) for f, w in family_weights.items() for m in self.members(f)}


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


def train_holdout(ctx: Any, callbacks: Any, task: Any, make: Any, x_train: Any, y_train: np.ndarray,
                  x_valid: Any, y_valid: np.ndarray) -> TrainedParts:
    """`make(0)` -> the candidates (fresh parts); each trains once."""
    out = TrainedParts()
    for cand in make(0):
        if _skip(ctx, cand, bool(out.parts)):
            continue
        _train(ctx, callbacks, cand, cand.name, cand.share, x_train, y_train, x_valid, y_valid)
        ctx.plan.extend(cand.describe(cand.part))
        out.parts[cand.name] = cand.part
        out.raws[cand.name] = cand.part.predict_raw(x_valid)
        out.scores[cand.name] = task.validation_loss(out.raws[cand.name], y_valid)
        callbacks.on_part_fitted(ctx, cand.name, cand.part, out.scores[cand.name])
    return out


def train_bagged(ctx: Any, callbacks: Any, task: Any, make: Any, x: Any, y: np.ndarray,
                 folds: list[tuple[np.ndarray, np.ndarray]]) -> TrainedParts:
    """Each candidate k times, one per fold; `make(fold)` -> fresh candidates in a fixed order."""
    k = len(folds)
    out = TrainedParts(folds=k)
    per_fold = [make(f) for f in range(k)]
    for i, first in enumerate(per_fold[0]):
        if _skip(ctx, first, bool(out.parts)):
            continue
        oof: np.ndarray | None = None
        start_left = _seconds_left(ctx.session, first.name)
        trained: dict[str, Any] = {}
        for f, (rows, held) in enumerate(folds):
            cand = per_fold[f][i]
            if f and out.parts and first.min_seconds and _seconds_left(ctx.session, first.name) <= first.min_seconds:
                break  # out of time mid-family: its out-of-fold outputs would be incomplete
            share = _fold_share(cand.share, start_left, _seconds_left(ctx.session, first.name), k - f)
            _train(ctx, callbacks, cand, f"{cand.name}.{f}", share, take(x, rows), y[rows], take(x, held), y[held])
            raw = cand.part.predict_raw(take(x, held))
            oof = np.zeros((len(y),) + raw.shape[1:]) if oof is None else oof
            oof[held] = raw
            trained[f"{cand.name}.{f}"] = cand.part
        if len(trained) < k:
            ctx.plan.append(Decision("training", first.name, "dropped", f"time_limit of "
                                     f"{ctx.config.training.time_limit:.0f}s ran out after {len(trained)} of its {k} folds"))
            continue
        out.parts.update(trained)
        ctx.plan.extend(first.describe(first.part))
        out.raws[first.name] = oof
        out.scores[first.name] = task.validation_loss(oof, y)
        callbacks.on_part_fitted(ctx, first.name, first.part, out.scores[first.name])
    return out


def _fold_share(share: float, start_left: float, left: float, folds_to_go: int) -> float:
    """The share of the time left for one fold: the part may use `share` of what was left when its
    first fold started (`start_left`), spread evenly over the folds still to train."""
    if not np.isfinite(start_left) or left <= 0:
        return share
    allotment = left - (1.0 - share) * start_left  # what the part has not used yet
    return float(np.clip(allotment / folds_to_go / left, 0.01, 1.0))


def _skip(ctx: Any, cand: Any, have_one: bool) -> bool:
    if have_one and cand.min_seconds and _seconds_left(ctx.session, cand.name) <= cand.min_seconds:
        ctx.plan.append(Decision("training", cand.name, "skipped",
                                 f"time_limit of {ctx.config.training.time_limit:.0f}s used up"))
        return True
    return False


def _train(ctx: Any, callbacks: Any, cand: Any, slot: str, share: float, x_tr: Any, y_tr: np.ndarray, x_va: Any,
           y_va: np.ndarray) -> None:
    from waypost.train import interrupt

    callbacks.on_part_start(ctx, slot, cand.part)
    with ctx.session.part(slot, share=share):
        cand.part.fit(x_tr, y_tr, x_va, y_va, tracker=ctx.tracker, verbose=ctx.verbose)
    interrupt.check(f"after the {slot}")


def _seconds_left(session: Any, name: str) -> float:
    with session.part(name):
        left = session.deadline_for(0)
    return float("inf") if left is None else left - time.perf_counter()
