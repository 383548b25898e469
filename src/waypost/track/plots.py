"""The evaluation and training figures a run logs: learning curves, confusion matrix, ROC, residuals,
feature importance.

Why bare `matplotlib.figure.Figure` objects instead of `pyplot`: no global figure registry (a long
training process never leaks figures), no GUI backend is ever chosen (PNG is rendered by Agg on
save), and the functions are safe in threads. Each function returns the Figure; log it with
`MlflowTracker.log_figure` or `fig.savefig(...)`. matplotlib and scikit-learn are imported inside
the functions so `import waypost.track.plots` costs only numpy.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from waypost.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "confusion_matrix_figure",
    "feature_importance_figure",
    "learning_curves",
    "residuals_figure",
    "roc_figure",
]

_MAX_SCATTER = 20_000  # residual scatter: more points only slow the PNG down, they add no information


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def learning_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """Per-epoch curves: one panel for losses (keys containing "loss"), one for the other metrics.

    Why two panels: a loss and an accuracy share no scale. A panel is drawn only for a group that
    has series; an empty history gives one empty, labelled panel. x is the epoch (1-based);
    series of different lengths (a metric computed every other epoch) are each drawn at 1..len.
    """
    groups = {
        "loss": {k: v for k, v in history.items() if "loss" in k.lower() and len(v)},
        "metrics": {k: v for k, v in history.items() if "loss" not in k.lower() and len(v)},
    }
    panels = [(title, series) for title, series in groups.items() if series] or [("history", {})]
    from matplotlib.ticker import MaxNLocator

    fig = _figure(5.0 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels):
        for key, values in series.items():
            y = np.asarray(values, dtype=float)
            ax.plot(np.arange(1, len(y) + 1), y, marker="o" if len(y) <= 30 else None, ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no history", ha="center", va="center", transform=ax.transAxes)
    return fig


def _encode(values: Any, labels: Sequence[Any]) -> np.ndarray:
    """Map labels to positions in `labels`; integer codes 0..k-1 pass through unchanged.

    Why both: evaluators hold either the decoded labels or the model's class codes.
    """
    arr = np.asarray(values)
    index = {label: i for i, label in enumerate(labels)}
    try:
        if all(v in index for v in arr.tolist()):
            return np.array([index[v] for v in arr.tolist()], dtype=int)
    except TypeError:  # unhashable cells
        pass
    if np.issubdtype(arr.dtype, np.integer) and (arr.size == 0 or (arr.min() >= 0 and arr.max() < len(labels))):
        return arr.astype(int)
    unknown = sorted({str(v) for v in arr.tolist()} - {str(label) for label in labels})[:5]
    raise DataError(f"values {unknown} are neither among the labels {list(labels)[:10]} nor class codes")


def confusion_matrix_figure(y_true: Any, y_pred: Any, labels: Sequence[Any]) -> Figure:
    """Confusion matrix: cells show counts, colour shows the row-normalised rate (recall per class).

    Why row-normalised colour: with imbalanced classes raw counts make every minority row look
    empty. `y_true`/`y_pred` may be labels (members of `labels`) or class codes 0..k-1.
    """
    from sklearn.metrics import confusion_matrix

    k = len(labels)
    if k == 0:
        raise DataError("confusion_matrix_figure needs at least one label")
    cm = confusion_matrix(_encode(y_true, labels), _encode(y_pred, labels), labels=list(range(k)))
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = min(max(3.5, 0.55 * k + 2.0), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of true class")
    names = [str(label) for label in labels]
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (n={int(cm.sum())})")
    if k <= 30:  # beyond that the numbers are unreadable anyway
        fontsize = 9 if k <= 10 else 6
        for i in range(k):
            for j in range(k):
                colour = "white" if rate[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=fontsize)
    return fig


def roc_figure(y_true: Any, proba: Any, labels: Sequence[Any]) -> Figure:
    """ROC curves with AUC in the legend: one curve for binary, one-vs-rest per class for multiclass.

    `y_true` holds class codes 0..k-1 (or labels), `proba` is (n, k) with columns in `labels`
    order; for binary a 1-d score of the positive class (labels[1]) is accepted too. A class
    absent from `y_true` has no ROC curve; it is listed in the legend as such.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    y = _encode(y_true, labels)
    k = len(labels)
    if p.ndim != 2 or p.shape[1] != k or p.shape[0] != len(y):
        raise DataError(f"proba must have shape (n_rows={len(y)}, n_classes={k}), got {p.shape}")
    fig = _figure(5.5, 5.0)
    ax = fig.subplots()
    classes = [1] if k == 2 else list(range(k))
    aucs = []
    for c in classes:
        positive = y == c
        name = str(labels[c])
        if positive.all() or not positive.any():
            ax.plot([], [], label=f"{name} (not in y_true / only class)")
            continue
        fpr, tpr, _ = roc_curve(positive.astype(int), p[:, c])
        auc = float(roc_auc_score(positive.astype(int), p[:, c]))
        aucs.append(auc)
        label = f"AUC = {auc:.3f}" if k == 2 else f"{name} (AUC = {auc:.3f})"
        ax.plot(fpr, tpr, lw=1.5, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    title = f"ROC (positive class: {labels[1]})" if k == 2 else "ROC one-vs-rest"
    if k > 2 and aucs:
        title += f", macro AUC = {np.mean(aucs):.3f}"
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def residuals_figure(y_true: Any, y_pred: Any) -> Figure:
    """Regression diagnostics: residual (true - predicted) against predicted, and their histogram.

    Why these two: a funnel or curve in the scatter shows heteroscedasticity or a missed
    non-linearity; the histogram shows bias and heavy tails. Large inputs are subsampled
    (fixed seed) for the scatter only.
    """
    t = np.asarray(y_true, dtype=float).ravel()
    pr = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != pr.shape:
        raise DataError(f"y_true and y_pred differ in length: {t.size} vs {pr.size}")
    keep = np.isfinite(t) & np.isfinite(pr)
    t, pr = t[keep], pr[keep]
    resid = t - pr
    fig = _figure(10.0, 4.0)
    ax_scatter, ax_hist = fig.subplots(1, 2)
    idx = np.arange(resid.size)
    if resid.size > _MAX_SCATTER:
        idx = np.sort(np.random.default_rng(0).choice(resid.size, _MAX_SCATTER, replace=False))
    ax_scatter.scatter(pr[idx], resid[idx], s=6, alpha=0.4)
    ax_scatter.axhline(0.0, color="red", lw=1)
    ax_scatter.set_xlabel("predicted")
    ax_scatter.set_ylabel("residual (true - predicted)")
    ax_scatter.set_title("residuals vs predicted")
    ax_scatter.grid(alpha=0.3)
    ax_hist.hist(resid, bins=min(50, max(5, resid.size // 10)) if resid.size else 5, color="tab:blue", alpha=0.8)
    ax_hist.axvline(0.0, color="red", lw=1)
    ax_hist.set_xlabel("residual")
    ax_hist.set_ylabel("count")
    mean = float(resid.mean()) if resid.size else float("nan")
    std = float(resid.std()) if resid.size else float("nan")
    ax_hist.set_title(f"residuals: mean {mean:.3g}, std {std:.3g}")
    return fig


def feature_importance_figure(names: Sequence[Any], values: Sequence[float], top: int = 20) -> Figure:
    """Horizontal bars of the `top` features by absolute importance, largest at the top.

    Ranked by absolute value because signed attributions (SHAP means, coefficients) matter in
    both directions; the sign is kept in the bar.
    """
    vals = np.asarray(values, dtype=float).ravel()
    if len(names) != vals.size:
        raise DataError(f"{len(names)} feature names but {vals.size} importance values")
    order = np.argsort(-np.abs(np.nan_to_num(vals)), kind="stable")[: max(int(top), 1)]
    shown = order[::-1]  # barh draws bottom-up
    fig = _figure(7.0, max(2.5, 0.32 * len(shown) + 1.2))
    ax = fig.subplots()
    colours = ["tab:blue" if v >= 0 else "tab:red" for v in vals[shown]]
    ax.barh([str(names[i]) for i in shown], vals[shown], color=colours)
    ax.set_xlabel("importance")
    ax.set_title(f"feature importance (top {len(shown)} of {vals.size})")
    ax.grid(axis="x", alpha=0.3)
    return fig
