"""Losses, and the rule that picks one (with class weights) from the task and the label balance."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from waypost.plan import Decision

IMBALANCE_RATIO = 0.2  # minority / majority below this counts as imbalanced


class FocalLoss(nn.Module):
    """Cross entropy scaled by (1 - p_true)^gamma, so easy, confident examples stop dominating.

    Lin et al. 2017; with gamma=0 it is plain (optionally weighted) cross entropy.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        if target.ndim == 2:  # soft targets (mixup/cutmix): the same loss, weighted by each class's share
            t = target.float()
            per_class = -((1.0 - log_p.exp()) ** self.gamma) * log_p * t
            if self.weight is not None:
                return (per_class * self.weight).sum() / (t * self.weight).sum()
            return per_class.sum(1).mean()
        log_p_true = log_p.gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_p_true.exp()) ** self.gamma) * log_p_true
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


class WeightedCrossEntropy(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight)


class MSELoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred.float().squeeze(-1), target)


class HuberLoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(pred.float().squeeze(-1), target)


def class_weights(counts: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Inverse-frequency weights softened by `power` (0.5 = inverse square root), mean 1.

    Full inverse frequency over-corrects on heavy imbalance and wrecks calibration; the square
    root keeps most of the recall gain.
    """
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    w = (counts.sum() / counts) ** power
    return (w / w.mean()).astype(np.float32)


def regression_loss(loss: str) -> tuple[nn.Module, str, Decision]:
    """MSE (or Huber, when asked) on the standardised target; never resampled."""
    name = "huber" if loss == "huber" else "mse"
    module = HuberLoss() if name == "huber" else MSELoss()
    return module, "none", Decision("training", "loss", name, "regression on the standardised target")


def classification_loss(
    loss: str, imbalance: str, focal_gamma: float, class_counts: np.ndarray
) -> tuple[nn.Module, str, Decision]:
    """Cross entropy, class-weighted, focal or on oversampled batches, from the label balance."""
    counts = np.asarray(class_counts)
    ratio = float(counts.min() / counts.max())
    strategy = imbalance
    if strategy == "auto":
        strategy = "class_weights" if ratio < IMBALANCE_RATIO else "none"
    if loss == "focal":
        strategy = "focal"
    weight = torch.tensor(class_weights(counts)) if strategy in ("class_weights", "focal") else None
    balance = f"minority/majority = {ratio:.3f}"
    if strategy == "focal":
        module: nn.Module = FocalLoss(focal_gamma, weight)
        why = f"focal loss (gamma={focal_gamma}) with inverse-sqrt class weights; {balance}"
    elif strategy == "class_weights":
        module = WeightedCrossEntropy(weight)
        why = f"cross entropy with inverse-sqrt class weights because {balance} < {IMBALANCE_RATIO}"
    elif strategy == "oversample":
        module = WeightedCrossEntropy(None)
        why = f"cross entropy on batches oversampled to balance classes; {balance}"
    else:
        module = WeightedCrossEntropy(None)
        why = f"plain cross entropy: classes are balanced enough ({balance})"
    return module, ("oversample" if strategy == "oversample" else "none"), Decision(
        "training", "loss", strategy if strategy != "none" else "cross_entropy", why
    )


def choose_loss(
    task: str, loss: str, imbalance: str, focal_gamma: float, class_counts: np.ndarray | None
) -> tuple[nn.Module, str, Decision]:
    """Returns (loss module, sampling strategy 'none'|'oversample', the decision with its reason).

    The task says which family (`waypost.tasks`); classification needs `class_counts`."""
    from waypost.tasks import get_task

    if not get_task(task).is_classification:
        return regression_loss(loss)
    return classification_loss(loss, imbalance, focal_gamma, np.asarray(class_counts))
