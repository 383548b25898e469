"""`FittedModel`: everything one fit learned, in one typed, immutable-by-convention object.

`Predictor` holds one (`predictor.fitted_`) and reads its learned state from it; persistence writes
and reads it; deployment (export, pruning, distillation) derives new ones with `dataclasses.replace`
instead of writing attributes onto an estimator from outside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from waypost.plan import Decision


@dataclass
class FittedModel:
    config: Any  # WaypostConfig, resolved (task, features and architecture filled in)
    task: str
    target: str
    features: dict[str, str]  # column -> kind name
    preprocessor: Any  # waypost.data.frame_preprocess.FramePreprocessor
    target_encoder: Any  # waypost.data.target.TargetEncoder
    parts: dict[str, Any]  # part name -> fitted part (waypost.models.parts.Part)
    weights: dict[str, float]  # part name -> ensemble weight (sum 1)
    selected: str  # a part's name, or "blend" for an ensemble of several
    plan: list[Decision] = field(default_factory=list)
    validation_metrics: dict[str, float] = field(default_factory=dict)
    validation_scores: dict[str, float] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    registered_model: dict[str, Any] | None = None

    def predict_raw(self, inputs: Any) -> np.ndarray:
        """The ensemble's raw output (probabilities, or standardised values) on preprocessed inputs."""
        return self.combine({name: self.parts[name].predict_raw(inputs) for name, w in self.weights.items() if w > 0})

    def combine(self, raws: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted sum of outputs the parts already produced (each part predicts once per batch)."""
        from waypost.ensemble.greedy import combine

        return combine(raws, self.weights)
