"""Estimator for one image column: a registered CNN trained by the engine, with the transfer-learning
schedule and batch augmentation, and saved as safetensors + JSON like the tabular MLP.

Works in the encoded target space (class codes), like MLPModel; `predict_raw` returns probabilities.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from waypost.config import TrainingConfig
from waypost.errors import ModelFileError, NotFittedError
from waypost.plan import Decision


class ImageModel:
    kind = "image"

    def __init__(self, *, task: str, n_classes: int, arch: str, pretrained: Any = "auto", in_chans: int = 3,
                 image_size: tuple[int, int] = (32, 32), training: TrainingConfig | None = None,
                 class_names: list[Any] | None = None) -> None:
        self.task, self.n_classes, self.arch, self.pretrained = task, n_classes, arch, pretrained
        self.in_chans, self.image_size = in_chans, tuple(image_size)
        self.training = training or TrainingConfig()
        self.class_names = list(class_names or [])

    def _build(self, pretrained: Any) -> torch.nn.Module:
        from waypost.models.registry import get

        return get(self.arch).factory(num_classes=self.n_classes, in_chans=self.in_chans,
                                      pretrained=pretrained, image_size=self.image_size)

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, *,
            tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> ImageModel:
        from waypost.data.image_batches import ImageBatches
        from waypost.train.augment import AugmentConfig, labels_look_orientation_sensitive, resolve_augment
        from waypost.train.batches import auto_batch_size
        from waypost.train.engine import fit_network
        from waypost.train.losses import choose_loss
        from waypost.train.transfer import TransferSchedule, param_groups, plan_transfer

        cfg = self.training
        torch.manual_seed(cfg.seed)
        self.net_ = self._build(self.pretrained)
        encoder = self.net_.encoder
        norm = getattr(encoder, "normalization", {}) or {}
        imagenet = ([0.449], [0.226]) if self.in_chans == 1 else ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        self.mean_ = list(norm.get("mean") or imagenet[0])
        self.std_ = list(norm.get("std") or imagenet[1])
        pretrained = bool(getattr(getattr(encoder, "weights", None), "pretrained", False))
        n = len(y_train)
        self.batch_size_ = cfg.batch_size if cfg.batch_size != "auto" else int(min(128, auto_batch_size(n)))
        augment, self.decisions_ = resolve_augment(
            AugmentConfig(), n_images=n, channels=self.in_chans,
            labels_are_orientation_sensitive=labels_look_orientation_sensitive(self.class_names))
        plan, why = plan_transfer(n, pretrained, batch_size=self.batch_size_)
        self.decisions_.append(Decision("training", "transfer", "fine-tune" if pretrained else "from scratch", why))
        counts = np.bincount(y_train, minlength=self.n_classes)
        loss_fn, _, loss_decision = choose_loss(self.task, cfg.loss, cfg.imbalance, cfg.focal_gamma, counts)
        self.decisions_.append(loss_decision)
        train = ImageBatches(x_train, y_train, self.batch_size_, mean=self.mean_, std=self.std_, augment=augment,
                             training=True, n_classes=self.n_classes, seed=cfg.seed, drop_last=True)
        valid = ImageBatches(x_valid, y_valid, 256, mean=self.mean_, std=self.std_, training=False)
        groups = param_groups(encoder, self.net_.head, cfg.learning_rate, cfg.weight_decay, plan)
        self.fit_ = fit_network(self.net_, train, valid, task=self.task, loss_fn=loss_fn, cfg=cfg, tracker=tracker,
                                verbose=verbose, time_limit=time_limit, description=self.arch,
                                callbacks=[TransferSchedule(plan, encoder)], param_groups=groups)
        return self

    @torch.inference_mode()
    def predict_raw(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        from waypost.train.augment import normalize

        if not hasattr(self, "net_"):
            raise NotFittedError("ImageModel is not fitted: call fit() first")
        self.net_.eval()
        out = []
        for i in range(0, len(images), batch_size):
            x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])), self.mean_, self.std_)
            out.append(torch.softmax(self.net_(x).float(), dim=1))
        return torch.cat(out).double().numpy()

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(directory / "image.safetensors"))
        return {"kind": self.kind, "file": "image.safetensors", "task": self.task, "n_classes": self.n_classes,
                "arch": self.arch, "in_chans": self.in_chans, "image_size": list(self.image_size),
                "mean": self.mean_, "std": self.std_, "class_names": self.class_names}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> ImageModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = directory / entry["file"]
        if not path.is_file():
            raise ModelFileError(f"model file missing: {path}")
        model = cls(task=entry["task"], n_classes=entry["n_classes"], arch=entry["arch"], pretrained=False,
                    in_chans=entry["in_chans"], image_size=tuple(entry["image_size"]),
                    class_names=entry.get("class_names"))
        model.net_ = model._build(False)
        model.mean_, model.std_ = list(entry["mean"]), list(entry["std"])
        try:
            model.net_.load_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{path}: not readable weights for {entry['arch']} ({exc})") from None
        model.net_.eval()
        return model
