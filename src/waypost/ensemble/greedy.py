"""A weighted ensemble over any number of parts: greedy forward selection with replacement on the
validation predictions (Caruana et al. 2004, "Ensemble selection from libraries of models"; the
WeightedEnsemble of AutoGluon).

Start from the best single part; each round adds one more copy of whichever part lowers the
ensemble's validation loss most (a part may be added again: that is how weights form); keep the
round with the lowest loss. Weights are copies / rounds, so 20 rounds give the 0.05 resolution the
old two-part grid had, and the ensemble is never worse on validation than its best part. Ties go to
the simpler ensemble (the earlier round, the part listed first).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.data.types import TABULAR_TYPES
from waypost.models.registry import register
from waypost.plan import Decision

ROUNDS = 20


def fit_weights(task: Any, raws: dict[str, np.ndarray], y: np.ndarray, rounds: int = ROUNDS
                ) -> tuple[dict[str, float], float]:
    """(part name -> weight summing to 1, the ensemble's validation loss)."""
    names = list(raws)
    if len(names) == 1:
        return {names[0]: 1.0}, task.validation_loss(raws[names[0]], y)
    counts = dict.fromkeys(names, 0)
    total: np.ndarray | None = None
    best_loss, best_counts = float("inf"), dict(counts)
    for r in range(1, rounds + 1):
        trial = {n: task.validation_loss((raws[n] if total is None else total + raws[n]) / r, y) for n in names}
        pick = min(names, key=lambda n: (round(trial[n], 12), names.index(n)))
        counts[pick] += 1
        total = raws[pick].astype(np.float64) if total is None else total + raws[pick]
        if trial[pick] < best_loss - 1e-12:
            best_loss, best_counts = trial[pick], dict(counts)
    n = sum(best_counts.values())
    return {k: c / n for k, c in best_counts.items() if c > 0}, best_loss


def combine(raws: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The ensemble's output: the weighted sum of the parts' outputs (parts at weight 0 skipped)."""
    return sum(w * raws[name] for name, w in weights.items() if w > 0)


def selection(task: Any, scores: dict[str, float], weights: dict[str, float]) -> Decision:
    """The plan's entry: which part (or ensemble) is kept, with every part's validation loss."""
    listed = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    if len(weights) == 1:
        choice = next(iter(weights))
        extra = ""
    else:
        choice = "blend"
        extra = "; weights " + ", ".join(f"{k} {w:.2f}" for k, w in weights.items())
    return Decision("selection", "selected model", choice,
                    f"lowest validation {task.validation_loss_name} ({listed}){extra}")


#: the parts `blend` draws from when `model.parts` is "auto", by preset ("gbm" is model.gbm.library;
#: "other_gbm" the other library)
PRESET_PARTS = {
    "fast": ("gbm", "mlp"),
    "medium": ("gbm", "linear", "extra_trees", "mlp"),
    "best": ("gbm", "other_gbm", "catboost", "linear", "extra_trees", "random_forest", "mlp", "entity_gbm"),
}
#: every tabular part, in training order: cheap parts first, then the MLP, then what reads the MLP
PART_NAMES = ("gbm", "lightgbm", "xgboost", "catboost", "linear", "extra_trees", "random_forest", "mlp",
              "entity_gbm")


@register(
    "blend",
    data_types=TABULAR_TYPES,
    requires=("torch", "lightgbm"),
    priority=20,
    tags=("default",),
    reason=(
        "tabular data: boosted trees, a linear model, extra trees and the MLP (preset medium; fast: a GBM and "
        "the MLP), weighted by greedy ensemble selection on validation data (a single part when it is the "
        "best): their errors differ, and MLPs rarely beat boosted trees alone"
    ),
    when="tabular-only tables (the default) when LightGBM is installed",
)
def build_blend(cfg: Any) -> tuple[str, ...]:
    """The parts the tabular ensemble is drawn from (each built by its own factory): `model.parts`,
    or the preset's list."""
    from waypost.errors import ConfigError

    if cfg.model.parts != "auto":
        unknown = [p for p in cfg.model.parts if p not in PART_NAMES]
        if unknown or not cfg.model.parts:
            raise ConfigError(f"model.parts: unknown part(s) {unknown}; expected a non-empty list of {list(PART_NAMES)}")
        return tuple(dict.fromkeys(cfg.model.parts))
    from waypost.models.registry import get

    library = cfg.model.gbm.library
    other = "xgboost" if library == "lightgbm" else "lightgbm"
    names = [other if p == "other_gbm" else p for p in PRESET_PARTS.get(cfg.preset, PRESET_PARTS["medium"])]
    # a preset's optional part whose library is not installed is left out (the plan lists what trains)
    return tuple(p for p in names if p in ("gbm", "mlp") or get(p).available())
