"""Small Lightning hooks for what every run needs: best weights, history, weight monitoring, progress.

Each does one job, so a run opts in or out by listing callbacks rather than by threading flags.
"""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch


class BestWeights(L.Callback):
    """Snapshot the weights whenever the selection metric improves, stop after `patience` epochs
    without improvement, and put the best back at the end.

    `monitor` is `val_loss` or `val_error` (classification error, or RMSE for regression); ties go
    to the lower validation loss, so a coarse error on a small validation set still picks sensibly.
    Early stopping lives here, not in Lightning's EarlyStopping, so the epoch kept and the epoch
    that stops training are judged by the same rule. Weights are kept in memory (a tabular or head
    model is small) so no checkpoint files are left behind.
    """

    def __init__(self, monitor: str = "val_loss", patience: int | None = None) -> None:
        if monitor not in ("val_loss", "val_error"):
            raise ValueError(f"monitor: expected val_loss or val_error, got {monitor!r}")
        self.monitor = monitor
        self.patience = patience
        self.best: tuple[float, float] = (float("inf"), float("inf"))
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        """For resumable checkpoints (`waypost.train.durable`): tensors and plain numbers only."""
        return {"best": list(self.best), "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = (float(state_dict["best"][0]), float(state_dict["best"][1]))
        self.best_epoch = int(state_dict["best_epoch"])
        self.state = state_dict["state"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = pl_module.epoch_metrics
        value = (m.get(self.monitor, float("inf")), m.get("val_loss", float("inf")))
        if value < self.best:
            self.best, self.best_epoch = value, trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        elif not math.isfinite(value[0]):  # diverged: more epochs will not bring it back
            trainer.should_stop = True
        elif self.patience is not None and trainer.current_epoch - self.best_epoch >= self.patience:
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.state is not None:
            pl_module.net.load_state_dict(self.state)


class History(L.Callback):
    """Collect per-epoch metrics and forward them to the tracker (MLflow) as they arrive."""

    def __init__(self, tracker: Any = None, prefix: str = "") -> None:
        self.tracker = tracker
        self.prefix = prefix
        self.history: dict[str, list[float]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [float(v) for v in vs] for k, vs in state_dict["history"].items()}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {f"{self.prefix}{k}": v for k, v in pl_module.epoch_metrics.items()}
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=trainer.current_epoch)


class WeightMonitor(L.Callback):
    """Per-layer weight norms (as metrics) and histograms every `every` epochs (kept in
    `histograms` for an artifact): exploding or dead layers show up here before the loss says so."""

    def __init__(self, tracker: Any = None, prefix: str = "", every: int = 1, bins: int = 30) -> None:
        self.tracker, self.prefix, self.every, self.bins = tracker, prefix, every, bins
        self.histograms: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"histograms": self.histograms}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.histograms = list(state_dict["histograms"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        norms, hist = {}, {}
        for name, p in pl_module.net.named_parameters():
            if p.dim() < 2:
                continue
            w = p.detach().float().cpu()
            norms[f"{self.prefix}weight_norm.{name}"] = float(w.norm())
            if epoch % self.every == 0:
                counts, edges = np.histogram(w.numpy().ravel(), bins=self.bins)
                hist[name] = {"counts": counts.tolist(), "edges": edges.round(6).tolist()}
        if hist:
            self.histograms.append({"epoch": epoch, "layers": hist})
        if self.tracker is not None:
            self.tracker.log_metrics(norms, step=epoch)


class RichProgress(L.Callback):
    """One line per fit that advances by epoch; per-batch refreshes would cost more than tiny steps."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.progress: Any = None
        self.task: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[status]}"), transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=trainer.max_epochs, status="")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is None or trainer.sanity_checking:
            return
        m = pl_module.epoch_metrics
        status = " ".join(f"{k}={m[k]:.4f}" for k in ("train_loss", "val_loss", "val_metric") if k in m)
        self.progress.update(self.task, completed=trainer.current_epoch + 1, status=status)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
