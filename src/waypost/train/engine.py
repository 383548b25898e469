"""The training engine: one LightningModule for every supervised network, plus `fit_network`.

The step uses manual optimisation so the whole recipe reads top to bottom in `training_step`:
forward, loss, backward, clip, AdamW step, schedule step. Lightning supplies devices, mixed
precision and checkpoint/resume mechanics; waypost's callbacks supply early stopping (BestWeights),
the time limit (DeadlineStop), per-epoch checkpoints (EpochCheckpoint) and a clean stop on
SIGINT/SIGTERM (StopOnSignal). Inside a fit pipeline the deadline and the checkpoint folder come from
the `waypost.train.session.FitSession`; outside one `fit_network` trains as before.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from waypost.config import TrainingConfig
from waypost.train import interrupt
from waypost.train.batches import TensorBatches
from waypost.train.callbacks import BestWeights, History, RichProgress, WeightMonitor
from waypost.train.durable import DeadlineStop, EpochCheckpoint, StopOnSignal
from waypost.train.optim import make_optimizer, make_scheduler

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class SupervisedModule(L.LightningModule):
    def __init__(
        self, net: nn.Module, loss_fn: nn.Module, task: str, cfg: TrainingConfig, total_steps: int,
        param_groups: list[dict] | None = None,
    ) -> None:
        super().__init__()
        from waypost.tasks import get_task

        self.net, self.loss_fn, self.task, self.cfg = net, loss_fn, task, cfg
        self.task_ = get_task(task)  # which validation loss and metric the epochs are judged on
        self.param_groups = param_groups  # e.g. discriminative learning rates for transfer learning
        self.total_steps = total_steps
        self.automatic_optimization = False
        self.epoch_metrics: dict[str, float] = {}
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._steps = 0
        self._grad_norms: list[torch.Tensor] = []
        self._val_out: list[torch.Tensor] = []
        self._val_y: list[torch.Tensor] = []

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def configure_optimizers(self) -> Any:
        fp16 = str(self.trainer.precision).startswith("16")
        opt = make_optimizer(self.net, self.cfg.learning_rate, self.cfg.weight_decay, fused=not fp16,
                             groups=self.param_groups)
        sched = make_scheduler(opt, self.cfg.schedule, self.total_steps, self.cfg.warmup_fraction)
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def on_train_epoch_start(self) -> None:
        self._reset_epoch()

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        opt, sched = self.optimizers(), self.lr_schedulers()
        *inputs, y = batch
        out = self.net(*inputs)                  # autocast (bf16/fp16) is applied by Lightning's precision
        loss = self.loss_fn(out, y)              # class-weighted / focal / MSE, computed in fp32
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)               # loss scaling under fp16
        opt.step()                               # unscale -> on_before_optimizer_step (clip) -> AdamW
        sched.step()                             # warmup + cosine, per step
        self._losses.append(loss.detach())     # summed once per epoch: no device sync per step
        self._steps += 1

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Gradients are unscaled here under every precision; clip to a global norm and keep the norm.
        params = [p for p in self.net.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        max_norm = self.cfg.grad_clip_norm or math.inf
        # On CPU checking the norm costs nothing, so rescale only when over the limit; on GPU always
        # rescale (by a factor clamped to 1) to avoid a device sync every step.
        if norm.device.type != "cpu" or float(norm) > max_norm:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        self._grad_norms.append(norm.detach())

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        *inputs, y = batch
        self._val_out.append(self.net(*inputs).detach().float().cpu())
        self._val_y.append(y.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val_out:
            self._val_out, self._val_y = [], []
            return
        out, y = torch.cat(self._val_out), torch.cat(self._val_y)
        self._val_out, self._val_y = [], []
        if not self.task_.is_classification:  # one output: MSE on the standardised target
            val_loss = F.mse_loss(out.squeeze(-1), y.float())
            metric = error = val_loss.sqrt()  # rmse in standardised units
        else:
            val_loss = F.cross_entropy(out, y)  # unweighted: comparable across loss choices
            metric = (out.argmax(-1) == y).float().mean()
            error = 1.0 - metric
        m = {"val_loss": float(val_loss), "val_metric": float(metric), "val_error": float(error)}
        if self._steps:
            m["train_loss"] = float(torch.stack(self._losses).float().mean())
            norms = torch.stack(self._grad_norms).float()
            m["grad_norm_mean"], m["grad_norm_max"] = float(norms.mean()), float(norms.max())
        m["lr"] = float(self.optimizers().param_groups[0]["lr"])
        self.epoch_metrics = m
        self.log("val_loss", m["val_loss"], prog_bar=False, logger=False)


def resolve_device(cfg: TrainingConfig) -> tuple[str, str]:
    """(accelerator, precision). bf16 on GPUs that support it (no loss scaling needed), fp16 on older
    GPUs; fp32 on CPU because bf16 autocast there is only faster on CPUs with AMX/AVX512-BF16."""
    accelerator = cfg.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    precision = cfg.precision
    if precision == "auto":
        if accelerator == "gpu":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32-true"
    return accelerator, precision


def attention_backends(accelerator: str) -> AbstractContextManager[Any]:
    """Scaled-dot-product attention without the cuDNN backend while a GPU trains.

    On Hopper GPUs torch prefers cuDNN's attention kernels, and cuDNN builds an execution plan for
    every new (batch, sequence length) it sees. Text batches here are trimmed to their longest text,
    so nearly every batch has a new length: on an H100 (torch 2.11) the scratch Transformer's first
    fit in a process took 364 ms a step with cuDNN attention and 26 ms without it (whole fit time per
    step, both; benchmarks/gpu_check.py --profile).
    Flash / memory-efficient attention need no plan, and a small model's attention is little of its
    step. Global torch flags, restored when the fit ends; CPU fits are untouched.
    """
    if accelerator != "gpu":
        return nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch without torch.nn.attention
        return nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


@dataclass
class FitResult:
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    seconds: float
    accelerator: str
    precision: str
    weight_histograms: list[dict[str, Any]] = field(default_factory=list)
    #: what the time limit cut short ("stopped after 12 of 200 epochs by time_limit"), else None
    time_note: str | None = None
    #: the epoch a checkpoint resumed from (0-based, the last completed one), else None
    resumed_from: int | None = None
    #: the whole fit came back from a finished checkpoint; nothing was trained in this process
    restored: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_network(
    net: nn.Module,
    train: TensorBatches,
    valid: TensorBatches,
    *,
    task: str,
    loss_fn: nn.Module,
    cfg: TrainingConfig,
    tracker: Any = None,
    verbose: bool = False,
    time_limit: float | None = None,
    description: str = "training",
    callbacks: list[L.Callback] | None = None,
    param_groups: list[dict] | None = None,
) -> FitResult:
    """Train `net` in place with every default trick; the best validation weights are restored.

    `cfg.select_on` (val_loss or val_error) picks the epoch kept and stops training after
    `cfg.early_stopping_patience` epochs without improvement (see `BestWeights`). `time_limit`
    (seconds from now) and the session's deadline, whichever is sooner, stop it between batches.
    With a session checkpoint slot, every epoch is checkpointed, a resumed fit continues from the
    last completed epoch, and a part already finished is restored instead of trained."""
    from waypost.train.session import current_session, fit_deadline

    session = current_session()
    slot = session.slot if session is not None else None
    if slot is not None and slot.has(FINAL_JSON):
        return _restore_final(net, slot)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    net.train()  # Lightning keeps the mode it finds; a fitted (eval-mode) net would train without dropout
    accelerator, precision = resolve_device(cfg)
    module = SupervisedModule(net, loss_fn, task, cfg, total_steps=cfg.max_epochs * len(train),
                              param_groups=param_groups)
    best, history = BestWeights(cfg.select_on, patience=cfg.early_stopping_patience), History(tracker)
    hooks: list[L.Callback] = [best, history, StopOnSignal()]
    weights = WeightMonitor(tracker) if cfg.weight_histograms else None
    if weights is not None:
        hooks.append(weights)
    started = time.perf_counter()
    model_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    stop_at = fit_deadline(time_limit, model_bytes, started)
    deadline = None
    if stop_at is not None:
        deadline = DeadlineStop(stop_at, valid_rows=_rows(valid), batch_rows=int(getattr(train, "batch_size", 1)))
        hooks.append(deadline)
    ckpt_path, resumed_from = None, None
    if slot is not None:
        hooks.append(EpochCheckpoint(slot, train, tracker))
        if slot.store.resumed and slot.last_ckpt.is_file():
            ckpt_path = str(slot.last_ckpt)
            resumed_from = int(slot.store.meta.get("parts", {}).get(slot.name, {}).get("epoch", -1))
    if verbose:
        hooks.append(RichProgress(description))
    hooks += list(callbacks or [])
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=cfg.max_epochs,
        callbacks=hooks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=None,
    )
    with attention_backends(accelerator):
        try:
            # weights_only: the checkpoint is read with torch's safe loader, never unpickled
            trainer.fit(module, train_dataloaders=train, val_dataloaders=valid, ckpt_path=ckpt_path,
                        weights_only=True)
        except SIGTERMException:
            # Lightning's own SIGTERM handler stops the loop with SystemExit; ours recorded the signal
            interrupt.check("training")
            raise
    seconds = time.perf_counter() - started
    net.cpu().eval()
    result = FitResult(
        history=history.history,
        best_epoch=best.best_epoch,
        epochs_run=trainer.current_epoch,
        seconds=seconds,
        accelerator=accelerator,
        precision=precision,
        weight_histograms=weights.histograms if weights else [],
        time_note=deadline.describe(cfg.max_epochs) if deadline is not None else None,
        resumed_from=resumed_from,
    )
    if slot is not None:
        _save_final(net, result, slot)
    return result


FINAL_WEIGHTS, FINAL_JSON = "final.safetensors", "final.json"


def _rows(batches: Any) -> int:
    n = getattr(batches, "n", None)
    return int(n) if n is not None else len(batches) * int(getattr(batches, "batch_size", 1))


def _save_final(net: nn.Module, result: FitResult, slot: Any) -> None:
    """The finished network (best weights restored) and its fit record, so a fit interrupted after
    this part resumes without training it again; the epoch checkpoint is then dropped."""
    from safetensors.torch import save

    with interrupt.critical():
        slot.write(FINAL_WEIGHTS, save({k: v.detach().contiguous() for k, v in net.state_dict().items()}))
        slot.write_json(FINAL_JSON, result.to_dict())  # written last: its presence means "finished"
        slot.last_ckpt.unlink(missing_ok=True)
        slot.progress(finished=True, epochs=result.epochs_run)


def _restore_final(net: nn.Module, slot: Any) -> FitResult:
    from safetensors.torch import load

    raw = slot.read_json(FINAL_JSON)
    net.load_state_dict(load((slot.dir / FINAL_WEIGHTS).read_bytes()))
    net.cpu().eval()
    raw["restored"] = True
    return FitResult(**raw)
