"""Estimator for one image column, alone or fused with the table's other columns: a registered CNN
trained by the engine, with the transfer-learning schedule and batch augmentation, and saved as
safetensors + JSON like the tabular MLP.

Works in the encoded target space (class codes), like MLPModel; `predict_raw` returns probabilities.
Inputs are `ImageInputs` (uint8 images, plus the tabular views for a fused table); a bare uint8
array is taken as images alone.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from waypost.config import ImageConfig, MLPConfig, TrainingConfig
from waypost.errors import ModelFileError, NotFittedError
from waypost.plan import Decision


def _unpack(inputs: Any) -> tuple[np.ndarray, Any]:
    if isinstance(inputs, np.ndarray):
        return inputs, None
    return inputs.images, inputs.tabular


def _tabular_tensors(tabular: Any) -> tuple[torch.Tensor, ...]:
    if tabular is None:
        return ()
    return (torch.from_numpy(np.ascontiguousarray(tabular.numeric, np.float32)),
            torch.from_numpy(np.ascontiguousarray(tabular.categorical, np.int64)))


class ImageModel:
    kind = "image"

    def __init__(self, *, task: str, n_classes: int, arch: str, pretrained: Any = None, in_chans: int = 3,
                 image_size: tuple[int, int] = (32, 32), training: TrainingConfig | None = None,
                 class_names: list[Any] | None = None, image: ImageConfig | None = None,
                 tabular: dict[str, Any] | None = None, mlp: MLPConfig | None = None) -> None:
        self.task, self.n_classes, self.arch = task, n_classes, arch
        self.image = image or ImageConfig()
        self.pretrained = self.image.pretrained if pretrained is None else pretrained
        self.in_chans, self.image_size = in_chans, tuple(image_size)
        self.training = training or TrainingConfig()
        self.class_names = list(class_names or [])
        self.tabular = tabular  # {"n_numeric": d, "cardinalities": [...]} for a fused table
        self.mlp = mlp or MLPConfig()

    def _build(self, pretrained: Any) -> torch.nn.Module:
        from waypost.models.registry import get

        net = get(self.arch).factory(num_classes=self.n_classes, in_chans=self.in_chans,
                                     pretrained=pretrained, image_size=self.image_size)
        if self.tabular is None:
            return net
        from waypost.models.fusion import build_fusion

        return build_fusion(net, n_numeric=int(self.tabular["n_numeric"]),
                            cardinalities=[int(c) for c in self.tabular["cardinalities"]], out_dim=self.n_classes,
                            hidden=list(self.mlp.hidden), dropout=self.mlp.dropout, batchnorm=self.mlp.batchnorm,
                            max_embedding_dim=self.mlp.max_embedding_dim, fusion_hidden=self.image.fusion_hidden)

    def _transfer_plan(self, n: int, pretrained: bool) -> tuple[Any, str]:
        """The data-size default, with any value the config sets instead."""
        from waypost.train.transfer import plan_transfer

        plan, why = plan_transfer(n, pretrained, batch_size=self.batch_size_)
        cfg = self.image.transfer
        overrides = {k: v for k, v in cfg.model_dump().items() if v != "auto"}
        if overrides and pretrained:
            if overrides.get("unfreeze_stages") == "all":
                overrides["unfreeze_stages"] = None
            plan = replace(plan, **overrides)
            why += f"; set in the config: {', '.join(f'{k}={v}' for k, v in cfg.model_dump().items() if v != 'auto')}"
        return plan, why

    def fit(self, x_train: Any, y_train: np.ndarray, x_valid: Any, y_valid: np.ndarray, *,
            tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> ImageModel:
        from waypost.data.image_batches import ImageBatches
        from waypost.train.augment import labels_look_orientation_sensitive, resolve_augment
        from waypost.train.batches import auto_batch_size
        from waypost.train.engine import fit_network
        from waypost.train.losses import choose_loss
        from waypost.train.transfer import TransferSchedule, param_groups

        cfg = self.training
        torch.manual_seed(cfg.seed)
        images_tr, tab_tr = _unpack(x_train)
        images_va, tab_va = _unpack(x_valid)
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
            self.image.augment, n_images=n, channels=self.in_chans,
            labels_are_orientation_sensitive=labels_look_orientation_sensitive(self.class_names))
        if tab_tr is not None and augment.mixes:  # mixing images would need the rows' columns mixed too
            augment = augment.model_copy(update={"mixup_alpha": 0.0, "cutmix_alpha": 0.0})
            self.decisions_.append(Decision("training", "mixing", "off", "mixup/cutmix mix pixels but not the "
                                            "tabular columns beside them, so they are off for a fused table"))
        plan, why = self._transfer_plan(n, pretrained)
        self.decisions_.append(Decision("training", "transfer", "fine-tune" if pretrained else "from scratch", why))
        counts = np.bincount(y_train, minlength=self.n_classes)
        loss_fn, _, loss_decision = choose_loss(self.task, cfg.loss, cfg.imbalance, cfg.focal_gamma, counts)
        self.decisions_.append(loss_decision)
        train = ImageBatches(images_tr, y_train, self.batch_size_, mean=self.mean_, std=self.std_, augment=augment,
                             training=True, n_classes=self.n_classes, seed=cfg.seed, drop_last=True,
                             extra=_tabular_tensors(tab_tr))
        valid = ImageBatches(images_va, y_valid, 256, mean=self.mean_, std=self.std_, training=False,
                             extra=_tabular_tensors(tab_va))
        groups = param_groups(encoder, self.net_.head, cfg.learning_rate, cfg.weight_decay, plan)
        self.fit_ = fit_network(self.net_, train, valid, task=self.task, loss_fn=loss_fn, cfg=cfg, tracker=tracker,
                                verbose=verbose, time_limit=time_limit, description=self.arch,
                                callbacks=[TransferSchedule(plan, encoder)], param_groups=groups)
        return self

    @torch.inference_mode()
    def predict_raw(self, inputs: Any, batch_size: int = 256) -> np.ndarray:
        from waypost.train.augment import normalize

        if not hasattr(self, "net_"):
            raise NotFittedError("ImageModel is not fitted: call fit() first")
        images, tabular = _unpack(inputs)
        extra = _tabular_tensors(tabular)
        self.net_.eval()
        out = []
        for i in range(0, len(images), batch_size):
            x = normalize(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])), self.mean_, self.std_)
            out.append(torch.softmax(self.net_(x, *(t[i:i + batch_size] for t in extra)).float(), dim=1))
        return torch.cat(out).double().numpy()

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(directory / "image.safetensors"))
        return {"kind": self.kind, "file": "image.safetensors", "task": self.task, "n_classes": self.n_classes,
                "arch": self.arch, "in_chans": self.in_chans, "image_size": list(self.image_size),
                "mean": self.mean_, "std": self.std_, "class_names": self.class_names,
                "tabular": self.tabular, "mlp": self.mlp.model_dump(),
                "fusion_hidden": self.image.fusion_hidden}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> ImageModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = directory / entry["file"]
        if not path.is_file():
            raise ModelFileError(f"model file missing: {path}")
        model = cls(task=entry["task"], n_classes=entry["n_classes"], arch=entry["arch"], pretrained=False,
                    in_chans=entry["in_chans"], image_size=tuple(entry["image_size"]),
                    class_names=entry.get("class_names"), tabular=entry.get("tabular"),
                    mlp=MLPConfig(**entry["mlp"]) if entry.get("mlp") else None,
                    image=ImageConfig(fusion_hidden=entry.get("fusion_hidden", 128)))
        model.net_ = model._build(False)
        model.mean_, model.std_ = list(entry["mean"]), list(entry["std"])
        try:
            model.net_.load_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{path}: not readable weights for {entry['arch']} ({exc})") from None
        model.net_.eval()
        return model
