"""Transfer-learning schedule: which stages train when, at which learning rate, and what BatchNorm does.

Framework-agnostic: an encoder only has to expose `stages() -> list[list[nn.Parameter]]` from the
stem (index 0) to the top stage (index -1); the head is any module (waypost's image and text
encoders do). Freezing, unfreezing and BatchNorm modes live here only.

The recipe, and why:
1. Head only for `freeze_epochs` epochs: a new, random head sends large, noisy gradients back that
   would wreck pretrained features in the first steps.
2. Then unfreeze the top `unfreeze_stages` stages (None: all). Top stages hold task-specific
   features worth adapting; the stem's edges and textures transfer as they are, and on small data
   training them only overfits.
3. Discriminative learning rates: the head at `base_lr`, the top stage at
   `base_lr * backbone_lr_factor`, each stage below another `layer_decay` times lower.
4. Weight decay on weight matrices only, never on biases or norm scales (as waypost.train.optim).

The optimizer holds every group from the first step; frozen parameters have requires_grad False,
get no gradient, and AdamW skips parameters whose grad is None. Unfreezing is therefore just
flipping requires_grad; no optimizer rebuild, and the scheduler's per-group factors keep applying.

BatchNorm rule (`bn_mode`):
- "freeze_frozen" (default with pretrained weights): BN layers inside frozen stages stay in eval
  mode (running mean/var fixed) even while the net trains. Their statistics are the pretrained
  ones; re-estimating them from small, noisy batches of another data set would shift every
  activation the frozen weights were tuned for. BN in trainable stages updates normally.
- "freeze_all": every BN in the encoder stays in eval mode; for batches under ~16 images, where
  batch statistics are mostly noise.
- "train": every BN trains (from scratch, or plenty of data and large batches).
A BN belongs to a stage when its affine weight/bias is in that stage's parameter list; BN layers
without affine parameters cannot be placed and follow the module's own train/eval mode.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import lightning.pytorch as L
from torch import nn

from waypost.errors import ConfigError
# Below SMALL_DATA images pretrained features are kept mostly fixed (head first, top stages only):
# the same threshold under which the architecture choice prefers pretrained weights.
from waypost.models.image_cnn import SMALL_DATA

BNMode = Literal["freeze_frozen", "freeze_all", "train"]
#: At or above this many images, fine-tune everything from the first epoch.
LARGE_DATA = 20_000
#: Batches smaller than this make BatchNorm's batch statistics too noisy to train on.
SMALL_BATCH = 16


class StagedEncoder(Protocol):
    def stages(self) -> list[list[nn.Parameter]]: ...


@dataclass(frozen=True)
class TransferPlan:
    """When and how fast each part of a pretrained encoder trains (see the module docstring)."""

    freeze_epochs: int = 0
    unfreeze_stages: int | None = None  # None: all stages after the head-only phase
    backbone_lr_factor: float = 1.0
    layer_decay: float = 1.0
    bn_mode: BNMode = "train"

    def __post_init__(self) -> None:
        if self.freeze_epochs < 0:
            raise ConfigError(f"transfer.freeze_epochs must be >= 0, got {self.freeze_epochs}")
        if self.unfreeze_stages is not None and self.unfreeze_stages < 0:
            raise ConfigError(f"transfer.unfreeze_stages must be >= 0 or None (all), got {self.unfreeze_stages}")
        if not 0 < self.backbone_lr_factor <= 10:
            raise ConfigError(f"transfer.backbone_lr_factor must be in (0, 10], got {self.backbone_lr_factor}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"transfer.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.bn_mode not in ("freeze_frozen", "freeze_all", "train"):
            raise ConfigError(f"transfer.bn_mode must be freeze_frozen, freeze_all or train, got {self.bn_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_transfer(n_images: int, pretrained: bool, *, batch_size: int | None = None) -> tuple[TransferPlan, str]:
    """The default schedule for a data size, with the reason in one sentence."""
    if not pretrained:
        return TransferPlan(), "no pretrained weights: every layer starts random, so all train from the first step at the full learning rate"
    small_batch = batch_size is not None and batch_size < SMALL_BATCH
    bn: BNMode = "freeze_all" if small_batch else "freeze_frozen"
    bn_why = (f"; all BatchNorm statistics stay pretrained because batches of {batch_size} are too noisy to "
              "re-estimate them" if small_batch else "; frozen stages keep their pretrained BatchNorm statistics")
    if n_images < SMALL_DATA:
        plan = TransferPlan(freeze_epochs=3, unfreeze_stages=2, backbone_lr_factor=0.1, layer_decay=0.7, bn_mode=bn)
        why = (f"pretrained weights and {n_images:,} images (< {SMALL_DATA:,}): train the head alone for "
               f"{plan.freeze_epochs} epochs, then fine-tune the top {plan.unfreeze_stages} stages at 0.1x the "
               "learning rate (x0.7 per stage down), so the few images adapt the features without overwriting them")
    elif n_images < LARGE_DATA:
        plan = TransferPlan(freeze_epochs=1, unfreeze_stages=None, backbone_lr_factor=0.3, layer_decay=0.8, bn_mode=bn)
        why = (f"pretrained weights and {n_images:,} images: one head-only epoch so the random head settles, then "
               "fine-tune every stage at 0.3x the learning rate (x0.8 per stage down)")
    else:
        plan = TransferPlan(freeze_epochs=0, unfreeze_stages=None, backbone_lr_factor=1.0, layer_decay=0.9,
                            bn_mode="freeze_all" if small_batch else "train")
        why = (f"pretrained weights and {n_images:,} images (>= {LARGE_DATA:,}): enough data to fine-tune every "
               "stage from the start; x0.9 per stage down keeps the stem's generic filters steadier")
        bn_why = bn_why if small_batch else ""
    return plan, why + bn_why


# ------------------------------------------------------------------------------ parameter groups


def _split_decay(params: Iterable[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay, no_decay = [], []
    for p in params:
        (decay if p.dim() >= 2 else no_decay).append(p)
    return decay, no_decay


def stage_lrs(n_stages: int, base_lr: float, plan: TransferPlan) -> list[float]:
    """Learning rate per stage, stem first: top = base_lr * factor, each lower one x layer_decay."""
    top = base_lr * plan.backbone_lr_factor
    return [top * plan.layer_decay ** (n_stages - 1 - i) for i in range(n_stages)]


def param_groups(encoder: StagedEncoder, head: nn.Module, base_lr: float, weight_decay: float,
                 plan: TransferPlan) -> list[dict[str, Any]]:
    """AdamW groups: the head at base_lr, each stage at its discriminative rate, each split into
    decayed weight matrices and undecayed biases/norm scales.

    Every parameter is included, frozen or not (see the module docstring). Encoder parameters not in
    any stage (when the encoder is an nn.Module) join the top stage's rate rather than being lost.
    Groups carry "name" and "stage" keys for logging; empty groups are left out.
    """
    if base_lr <= 0:
        raise ConfigError(f"learning rate must be positive, got {base_lr}")
    stages = encoder.stages()
    if not stages:
        raise ConfigError("transfer: the encoder has no stages (stages() returned an empty list)")
    seen: set[int] = set()

    def fresh(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
        out = []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    groups: list[dict[str, Any]] = []

    def add(name: str, stage: int | None, lr: float, params: list[nn.Parameter]) -> None:
        decay, no_decay = _split_decay(params)
        for suffix, ps, wd in (("", decay, weight_decay), (".no_decay", no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name + suffix, "stage": stage})

    head_params = fresh(head.parameters())
    if not head_params:
        raise ConfigError("transfer: the head has no parameters to train")
    add("head", None, base_lr, head_params)
    lrs = stage_lrs(len(stages), base_lr, plan)
    stage_params = [fresh(ps) for ps in stages]
    if isinstance(encoder, nn.Module):
        stage_params[-1].extend(fresh(encoder.parameters()))  # unassigned leftovers: top-stage rate
    for index in reversed(range(len(stages))):
        add(f"stage{index}", index, lrs[index], stage_params[index])
    return groups


# ------------------------------------------------------------------------------ phases and BN


def frozen_stages(n_stages: int, plan: TransferPlan, epoch: int) -> set[int]:
    """Indices of the stages that are frozen at `epoch` (0-based)."""
    if epoch < plan.freeze_epochs:
        return set(range(n_stages))
    open_n = n_stages if plan.unfreeze_stages is None else min(plan.unfreeze_stages, n_stages)
    return set(range(n_stages - open_n))


class FreezeBN:
    """Keeps the BatchNorm layers of frozen stages (or all of them, per `bn_mode`) in eval mode.

    Call `apply(frozen)` after anything that may have called `.train()` on the model: Lightning
    restores each module's own mode after validation, so once per epoch and batch start is plenty.
    """

    def __init__(self, encoder: StagedEncoder, bn_mode: BNMode = "freeze_frozen") -> None:
        self.bn_mode = bn_mode
        owner: dict[int, int] = {id(p): i for i, ps in enumerate(encoder.stages()) for p in ps}
        self.by_stage: dict[int, list[nn.modules.batchnorm._BatchNorm]] = {}
        self.all_bn: list[nn.modules.batchnorm._BatchNorm] = []
        if isinstance(encoder, nn.Module):
            for module in encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    self.all_bn.append(module)
                    stage = next((owner[id(p)] for p in module.parameters(recurse=False) if id(p) in owner), None)
                    if stage is not None:
                        self.by_stage.setdefault(stage, []).append(module)

    def apply(self, frozen: set[int], training: bool = True) -> None:
        """Put BN layers in eval mode where the rule says so; the others follow `training`."""
        if self.bn_mode == "freeze_all":
            for bn in self.all_bn:
                bn.eval()
            return
        for stage, layers in self.by_stage.items():
            keep_eval = self.bn_mode == "freeze_frozen" and stage in frozen
            for bn in layers:
                bn.train(training and not keep_eval)


def apply_phase(encoder: StagedEncoder, plan: TransferPlan, epoch: int,
                bn: FreezeBN | None = None) -> set[int]:
    """Freeze/unfreeze stages for `epoch` and set BatchNorm modes; returns the frozen stage indices.

    Idempotent, so it is safe to call at every epoch start.
    """
    stages = encoder.stages()
    frozen = frozen_stages(len(stages), plan, epoch)
    for index, params in enumerate(stages):
        for p in params:
            p.requires_grad_(index not in frozen)
    bn = bn or FreezeBN(encoder, plan.bn_mode)
    training = encoder.training if isinstance(encoder, nn.Module) else True
    bn.apply(frozen, training=training)
    return frozen


class TransferSchedule(L.Callback):
    """Runs `apply_phase` at each training epoch start and keeps frozen BN in eval mode per batch.

    `encoder`: the staged encoder; when None it is looked up as `pl_module.net.encoder` (the
    engine's SupervisedModule holding an EncoderClassifier). `phases` records (epoch, n_frozen).
    """

    def __init__(self, plan: TransferPlan, encoder: StagedEncoder | None = None) -> None:
        self.plan = plan
        self.encoder = encoder
        self.bn: FreezeBN | None = None
        self.frozen: set[int] = set()
        self.phases: list[tuple[int, int]] = []

    def state_dict(self) -> dict[str, Any]:
        """For resumable checkpoints: the phases so far (the freezing itself is recomputed from the
        epoch by `apply_phase`, which is idempotent)."""
        return {"phases": [list(p) for p in self.phases], "frozen": sorted(self.frozen)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.phases = [(int(e), int(n)) for e, n in state_dict["phases"]]
        self.frozen = {int(i) for i in state_dict["frozen"]}

    def _encoder(self, pl_module: L.LightningModule) -> StagedEncoder:
        if self.encoder is None:
            encoder = getattr(getattr(pl_module, "net", None), "encoder", None)
            if encoder is None or not hasattr(encoder, "stages"):
                raise ConfigError("TransferSchedule: pass encoder=...; pl_module.net.encoder with stages() not found")
            self.encoder = encoder
        return self.encoder

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        encoder = self._encoder(pl_module)
        if self.bn is None:
            self.bn = FreezeBN(encoder, self.plan.bn_mode)
        frozen = apply_phase(encoder, self.plan, trainer.current_epoch, self.bn)
        if not self.phases or frozen != self.frozen:
            self.phases.append((trainer.current_epoch, len(frozen)))
        self.frozen = frozen

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.bn is not None:
            self.bn.apply(self.frozen, training=pl_module.training)
