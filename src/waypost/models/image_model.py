"""Estimator for one image column, alone or fused with the table's other columns: a registered CNN
trained by the engine, with the transfer-learning schedule and batch augmentation
(`waypost.models.column_model` holds what it shares with the text model). Classification or
regression, as the task says: a regression CNN has one output and trains on MSE, without mixup."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from waypost.config import ImageConfig
from waypost.models.column_model import ColumnModel, tabular_tensors, unpack
from waypost.plan import Decision


#: the uint8 images go to the GPU when they take at most this share of its free memory
GPU_DATA_SHARE = 0.25


def batch_device(cfg: Any, *images: Any) -> str | None:
    """Where training batches are cut and augmented: the GPU when the fit runs there and the uint8
    images fit in a quarter of its free memory, else the CPU (None). On an H100, augmenting on the
    CPU doubled small_cnn's epoch (benchmarks/gpu_check.py); the augmentation code is the same on
    either device."""
    from waypost.train.engine import resolve_device

    if resolve_device(cfg)[0] != "gpu":
        return None
    free, _ = torch.cuda.mem_get_info()
    return "cuda" if sum(int(a.nbytes) for a in images) <= GPU_DATA_SHARE * free else None


class ImageModel(ColumnModel):
    kind = "image"
    file = "image.safetensors"

    def __init__(self, *, in_chans: int = 3, image_size: tuple[int, int] = (32, 32),
                 image: ImageConfig | None = None, **common: Any) -> None:
        self.image = image or ImageConfig()
        super().__init__(**common)
        self.in_chans, self.image_size = in_chans, tuple(image_size)

    def _classifier(self, pretrained: Any) -> torch.nn.Module:
        from waypost.models.registry import get

        return get(self.arch).factory(num_classes=self.n_outputs, in_chans=self.in_chans,
                                      pretrained=pretrained, image_size=self.image_size)

    def _prepare(self, arrays: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        from waypost.train.augment import normalize

        return (normalize(arrays[0], self.mean_, self.std_),)

    def _transfer_plan(self, n: int, pretrained: bool) -> tuple[Any, str]:
        """The data-size default, with any value the config sets instead."""
        from waypost.train.transfer import plan_transfer

        plan, why = plan_transfer(n, pretrained, batch_size=self.batch_size_)
        set_here = {k: v for k, v in self.image.transfer.model_dump().items() if v != "auto"}
        if set_here and pretrained:
            plan = replace(plan, **{k: (None if v == "all" else v) for k, v in set_here.items()})
            why += "; set in the config: " + ", ".join(f"{k}={v}" for k, v in set_here.items())
        return plan, why

    def fit(self, x_train: Any, y_train: np.ndarray, x_valid: Any, y_valid: np.ndarray, *,
            tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> ImageModel:
        from waypost.data.image_batches import ImageBatches
        from waypost.train.augment import labels_look_orientation_sensitive, resolve_augment
        from waypost.train.batches import auto_batch_size

        cfg = self.training
        torch.manual_seed(cfg.seed)
        (images_tr,), tab_tr = unpack(x_train)
        (images_va,), tab_va = unpack(x_valid)
        y_train, y_valid = self._targets(y_train), self._targets(y_valid)
        self.net_ = self._build(self.image.pretrained)
        encoder = self.net_.encoder
        self.mean_, self.std_ = list(encoder.normalization["mean"]), list(encoder.normalization["std"])
        pretrained = bool(getattr(getattr(encoder, "weights", None), "pretrained", False))
        n = len(y_train)
        self.batch_size_ = cfg.batch_size if cfg.batch_size != "auto" else int(min(128, auto_batch_size(n)))
        augment, self.decisions_ = resolve_augment(
            self.image.augment, n_images=n, channels=self.in_chans,
            labels_are_orientation_sensitive=labels_look_orientation_sensitive(self.class_names))
        if not self.task_.is_classification and augment.mixes:  # the config asked; the task cannot have it
            augment = augment.model_copy(update={"mixup_alpha": 0.0, "cutmix_alpha": 0.0})
            self.decisions_ = [d for d in self.decisions_ if d.subject != "mixing"]
            self.decisions_.append(Decision("training", "mixing", "off", f"mixup/cutmix blend two images' class "
                                            f"labels into soft targets; a {self.task} target has no classes, and "
                                            "a blend of two images is not an image of their mean value"))
        if tab_tr is not None and augment.mixes:  # mixing images would need the rows' columns mixed too
            augment = augment.model_copy(update={"mixup_alpha": 0.0, "cutmix_alpha": 0.0})
            self.decisions_.append(Decision("training", "mixing", "off", "mixup/cutmix mix pixels but not the "
                                            "tabular columns beside them, so they are off for a fused table"))
        plan, why = self._transfer_plan(n, pretrained)
        self.decisions_.append(Decision("training", "transfer", "fine-tune" if pretrained else "from scratch", why))
        self.decisions_.append(self._loss(y_train))
        device = batch_device(cfg, images_tr, images_va)
        train = ImageBatches(images_tr, y_train, self.batch_size_, mean=self.mean_, std=self.std_, augment=augment,
                             training=True, n_classes=self.n_classes, seed=cfg.seed, drop_last=True,
                             extra=tabular_tensors(tab_tr), sample_weights=self.sample_weights_, device=device)
        valid = ImageBatches(images_va, y_valid, 256, mean=self.mean_, std=self.std_, training=False,
                             extra=tabular_tensors(tab_va), device=device)
        self._train(train, valid, plan, tracker=tracker, verbose=verbose, time_limit=time_limit)
        return self

    def to_onnx(self, inputs: Any, **names: Any) -> Any:
        """One graph: input `image` float32 (N, C, H, W) normalised (+ `numeric`/`categorical` when fused);
        `names`: the output's name, and `features` to output the encoder's features too."""
        from waypost.deploy.onnx_graph import export_image_net

        return export_image_net(self.net_, self.in_chans, self.image_size, inputs.tabular, task=self.task, **names)

    def _entry(self) -> dict[str, Any]:
        return {"in_chans": self.in_chans, "image_size": list(self.image_size), "mean": self.mean_, "std": self.std_}

    @classmethod
    def _from_entry(cls, entry: dict[str, Any], common: dict[str, Any]) -> ImageModel:
        model = cls(in_chans=entry["in_chans"], image_size=tuple(entry["image_size"]), **common)
        model.mean_, model.std_ = list(entry["mean"]), list(entry["std"])
        return model
