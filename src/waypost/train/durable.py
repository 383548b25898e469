"""Lightning callbacks that make a network fit stoppable, resumable and time-bounded.

- `StopOnSignal`: raises `FitInterrupted` at the first batch boundary after SIGINT/SIGTERM.
- `EpochCheckpoint`: writes `last.ckpt` after every completed epoch (weights, optimizer,
  scheduler, loop progress, every callback's state_dict) and keeps the RNG states that make the
  next epoch the same as without the interruption: torch's global generator (dropout) and the
  batch iterator's own generator (shuffle order, augmentation).
- `DeadlineStop`: stops between batches when the next batch (plus the validation pass that ends
  the fit and the pipeline's prediction on the validation rows) would cross the deadline, using
  measured batch, validation and epoch-end times.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

import lightning.pytorch as L
import torch

from waypost.train import interrupt
from waypost.train.checkpoint import PartSlot


class StopOnSignal(L.Callback):
    """Check for a pending SIGINT/SIGTERM after every training and validation batch."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        interrupt.check(f"epoch {trainer.current_epoch + 1}")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        interrupt.check(f"validation of epoch {trainer.current_epoch + 1}")


class EpochCheckpoint(L.Callback):
    """`last.ckpt` in `slot` after each epoch; RNG states in this callback's own state_dict.

    Saved in `on_train_epoch_end` (after the epoch's validation has updated BestWeights and
    History), the hook Lightning's own ModelCheckpoint uses, so `trainer.fit(ckpt_path=...)` starts
    the next epoch. No checkpoint is written once the fit is stopping: the pipeline keeps the
    finished network instead (`final.safetensors`).
    """

    def __init__(self, slot: PartSlot, batches: Any, tracker: Any = None) -> None:
        self.slot = slot
        self.batches = batches  # TensorBatches / ImageBatches: their `generator` drives shuffling
        self.tracker = tracker
        self.seconds: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        generator = getattr(self.batches, "generator", None)
        if generator is not None:
            state["batches_rng"] = generator.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch_rng"])
        generator = getattr(self.batches, "generator", None)
        if generator is not None and "batches_rng" in state_dict:
            generator.set_state(state_dict["batches_rng"])
        if "cuda_rng" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda_rng"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0):
            return
        started = time.perf_counter()
        if self.tracker is not None:
            # the metrics of the epochs this checkpoint covers must be in MLflow before it exists: a
            # resumed fit does not run those epochs again (even after kill -9 lost the buffer)
            self.tracker.flush()
        target = self.slot.last_ckpt
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
            with interrupt.critical():
                os.replace(tmp, target)
                self.slot.progress(epoch=trainer.current_epoch, max_epochs=trainer.max_epochs)
        finally:
            tmp.unlink(missing_ok=True)
        self.seconds.append(time.perf_counter() - started)


class DeadlineStop(L.Callback):
    """Stop training before `deadline` (a `time.perf_counter()` value); see the module docstring.

    `valid_rows` and `batch_rows` give a first estimate of a validation pass (a forward pass costs
    about a third of a training step) until one has been timed. `reserve_passes` validation passes
    are kept for after the stop: the fit's last validation and the caller's prediction on the
    validation rows.
    """

    def __init__(self, deadline: float, *, valid_rows: int, batch_rows: int, reserve_passes: int = 2) -> None:
        self.deadline = deadline
        self.valid_rows, self.batch_rows = max(1, valid_rows), max(1, batch_rows)
        self.reserve_passes = reserve_passes
        self._batch_started = 0.0
        self._last_batch_end: float | None = None
        self._epoch_end_started: float | None = None
        self._val_started = 0.0
        self.batch_times: list[float] = []
        self.val_times: list[float] = []
        self.epoch_end_times: list[float] = []  # last batch end -> next epoch's first batch start
        self.stopped: dict[str, int] | None = None

    # ---- measurements
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if batch_idx == 0 and self._epoch_end_started is not None:
            self.epoch_end_times.append(now - self._epoch_end_started)
            self._epoch_end_started = None
        self._batch_started = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_times.append(time.perf_counter() - self._val_started)

    def _batch_estimate(self) -> float:
        # the fit's first batch also pays for warm-up (allocations, lazy init): not a batch's cost
        recent = (self.batch_times[1:] or self.batch_times)[-20:]
        return max(sum(recent) / len(recent), recent[-1])

    def _val_estimate(self) -> float:
        if self.val_times:
            return max(self.val_times[-3:])
        return self._batch_estimate() * self.valid_rows / self.batch_rows / 3.0

    # ---- the decision
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        self.batch_times.append(now - self._batch_started)
        n_batches = int(trainer.num_training_batches)
        last_in_epoch = batch_idx + 1 >= n_batches
        next_cost = self._batch_estimate()
        if last_in_epoch:  # before the next batch: this epoch's validation, checkpoint and hooks
            self._epoch_end_started = now
            epoch_end = max(self.epoch_end_times[-3:]) if self.epoch_end_times else self._val_estimate()
            next_cost += max(epoch_end, self._val_estimate())
        if now + next_cost + self.reserve_passes * self._val_estimate() > self.deadline:
            trainer.should_stop = True
            self.stopped = {"epoch": int(trainer.current_epoch), "batches": batch_idx + 1, "of": n_batches}

    def describe(self, max_epochs: int) -> str | None:
        """What the deadline cut short, for the plan; None when it did not stop the fit."""
        if self.stopped is None:
            return None
        s = self.stopped
        full = s["epoch"] + (1 if s["batches"] >= s["of"] else 0)
        if s["batches"] >= s["of"]:
            return f"stopped after {full} of {max_epochs} epochs by time_limit"
        return (f"stopped by time_limit in epoch {s['epoch'] + 1} of {max_epochs}, after {s['batches']} of "
                f"{s['of']} batches ({full} full epochs)")
