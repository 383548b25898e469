"""What a fit leaves in its MLflow run besides the model: metrics, scores, plan, config, lineage,
learning curves, weight histograms and the task's diagnostic plots. Interruptible between artifacts;
the model itself is logged when the fit commits."""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.train import interrupt


def log_run(tracker: Any, model: Any, valid_raw: np.ndarray | None, y_valid: np.ndarray | None) -> None:
    """`model`: the FittedModel; `valid_raw`: its validation output (probabilities, or standardised
    values); `y_valid`: the encoded validation targets."""
    if tracker.run_id is None:
        return
    from waypost.tasks import get_task
    from waypost.track import plots

    tracker.log_metrics({f"val_{k}": v for k, v in model.validation_metrics.items()})
    tracker.log_metrics({f"val_score_{k}": v for k, v in model.validation_scores.items()})
    tracker.log_dict([d.to_dict() for d in model.plan], "plan.json")
    tracker.log_text(model.config.to_yaml(), "waypost.yaml")
    tracker.log_dict(model.lineage, "lineage.json")
    tracker.set_tags({"waypost.selected": model.selected, "waypost.data_digest": model.lineage.get("data_digest", "")})
    interrupt.check("logging the run")
    if model.history:
        tracker.log_figure(plots.learning_curves(model.history), "plots/learning_curves.png")
    for part in model.parts.values():
        histograms = getattr(getattr(part, "fit_", None), "weight_histograms", None)
        if histograms:
            tracker.log_dict(histograms, "weight_histograms.json")
            break
    if valid_raw is not None and y_valid is not None:
        task = get_task(model.task)
        if task.is_classification:
            labels = [str(c) for c in model.target_encoder.classes_]
            tracker.log_figure(plots.confusion_matrix_figure(y_valid, valid_raw.argmax(1), labels),
                               "plots/confusion_matrix.png")
            interrupt.check("logging the run")
            tracker.log_figure(plots.roc_figure(y_valid, valid_raw, labels), "plots/roc.png")
        else:
            decode = model.target_encoder.inverse_transform
            tracker.log_figure(plots.residuals_figure(decode(y_valid), decode(valid_raw)), "plots/residuals.png")
    for name, part in model.parts.items():
        if hasattr(part, "feature_importance"):
            imp = part.feature_importance()
            tracker.log_figure(plots.feature_importance_figure(list(imp), list(imp.values())),
                               f"plots/{name}_importance.png")
