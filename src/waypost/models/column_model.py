"""The estimator shared by the one-column encoder models (image, text), alone or fused with the
table's tabular columns: build -> train with the engine and the transfer schedule -> predict ->
save as safetensors + JSON. Subclasses say how to build the network, batch the column's arrays and
plan the transfer; everything else is here once.

Works in the encoded target space, like MLPModel, and follows the task (`waypost.tasks`): class
codes in and probabilities (n, k) out for a classifier; standardised values in and out, (n,)
float64, for regression (the network's one output, MSE loss).
Inputs are `ColumnInputs` (the column's arrays plus the tabular views of a fused table); a bare
array is taken as the column alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from waypost.config import MLPConfig, TrainingConfig
from waypost.errors import ModelFileError, NotFittedError


def unpack(inputs: Any) -> tuple[tuple[np.ndarray, ...], Any]:
    if isinstance(inputs, np.ndarray):
        return (inputs,), None
    return tuple(inputs.arrays), inputs.tabular


def tabular_tensors(tabular: Any) -> tuple[torch.Tensor, ...]:
    if tabular is None:
        return ()
    return (torch.from_numpy(np.ascontiguousarray(tabular.numeric, np.float32)),
            torch.from_numpy(np.ascontiguousarray(tabular.categorical, np.int64)))


class ColumnModel:
    kind = "column"
    file = "column.safetensors"

    def __init__(self, *, task: str, n_classes: int, arch: str, training: TrainingConfig | None = None,
                 class_names: list[Any] | None = None, tabular: dict[str, Any] | None = None,
                 mlp: MLPConfig | None = None, fusion_hidden: int = 128) -> None:
        from waypost.tasks import get_task

        self.task, self.n_classes, self.arch = task, n_classes, arch
        self.task_ = get_task(task)
        self.n_outputs = self.task_.n_outputs(n_classes)  # the network's output width: k, or 1
        self.training = training or TrainingConfig()
        self.class_names = list(class_names or [])
        self.tabular = tabular  # {"n_numeric": d, "cardinalities": [...]} for a fused table
        self.mlp = mlp or MLPConfig()
        self.fusion_hidden = fusion_hidden

    # ---- what a subclass provides ------------------------------------------------------------
    def _classifier(self, pretrained: Any) -> torch.nn.Module:
        raise NotImplementedError

    def _prepare(self, arrays: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The column's arrays as the network takes them at predict time (e.g. normalised images)."""
        return arrays

    def _entry(self) -> dict[str, Any]:
        return {}

    # ---- shared ------------------------------------------------------------------------------
    def _build(self, pretrained: Any) -> torch.nn.Module:
        net = self._classifier(pretrained)
        if self.tabular is None:
            return net
        from waypost.models.fusion import build_fusion

        return build_fusion(net, n_numeric=int(self.tabular["n_numeric"]),
                            cardinalities=[int(c) for c in self.tabular["cardinalities"]], out_dim=self.n_outputs,
                            hidden=list(self.mlp.hidden), dropout=self.mlp.dropout, batchnorm=self.mlp.batchnorm,
                            max_embedding_dim=self.mlp.max_embedding_dim, fusion_hidden=self.fusion_hidden)

    def _train(self, train: Any, valid: Any, plan: Any, *, tracker: Any, verbose: bool,
               time_limit: float | None) -> None:
        from waypost.train.engine import fit_network
        from waypost.train.transfer import TransferSchedule, param_groups

        cfg = self.training
        encoder = self.net_.encoder
        groups = param_groups(encoder, self.net_.head, cfg.learning_rate, cfg.weight_decay, plan)
        self.fit_ = fit_network(self.net_, train, valid, task=self.task, loss_fn=self.loss_fn_, cfg=cfg,
                                tracker=tracker, verbose=verbose, time_limit=time_limit, description=self.arch,
                                callbacks=[TransferSchedule(plan, encoder)], param_groups=groups)

    def _loss(self, y_train: np.ndarray) -> Any:
        """The task's loss, and `sample_weights_` for the training batches when the rule oversamples."""
        from waypost.train.batches import balanced_sample_weights

        self.loss_fn_, sampling, decision = self.task_.choose_loss(self.training, y_train, self.n_classes)
        self.sample_weights_ = balanced_sample_weights(y_train) if sampling == "oversample" else None
        return decision

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Encoded targets in the task's dtype (int64 codes, float32 standardised values)."""
        return np.ascontiguousarray(y, dtype=self.task_.target_dtype())

    @torch.inference_mode()
    def _batched(self, inputs: Any, step: Any, batch_size: int) -> np.ndarray:
        """`step(column tensors, tabular tensors)` over batches of `inputs`, concatenated (float64)."""
        if not hasattr(self, "net_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() first")
        arrays, tabular = unpack(inputs)
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays) + tabular_tensors(tabular)
        n_col = len(arrays)
        self.net_.eval()
        out = [step(self._prepare(tuple(chunk[:n_col])), chunk[n_col:])
               for chunk in ([t[i:i + batch_size] for t in tensors] for i in range(0, len(arrays[0]), batch_size))]
        return torch.cat(out).double().numpy()

    def predict_raw(self, inputs: Any, batch_size: int = 256) -> np.ndarray:
        softmax = self.task_.output_activation() == "softmax"

        def step(columns: tuple[torch.Tensor, ...], tabular: list[torch.Tensor]) -> torch.Tensor:
            raw = self.net_(*columns, *tabular).float()
            return torch.softmax(raw, dim=1) if softmax else raw[:, 0]

        return self._batched(inputs, step, batch_size)

    def features(self, inputs: Any, batch_size: int = 256) -> np.ndarray:
        """The column encoder's features (n, encoder width): what the fusion head reads, and what a
        GBM beside the network takes as the column's embedding (`waypost.models.column_gbm`)."""
        return self._batched(inputs, lambda columns, tabular: self.net_.encoder(*columns).float(), batch_size)

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(directory / self.file))
        return {"kind": self.kind, "file": self.file, "task": self.task, "n_classes": self.n_classes,
                "arch": self.arch, "class_names": self.class_names, "tabular": self.tabular,
                "mlp": self.mlp.model_dump(), "fusion_hidden": self.fusion_hidden, **self._entry()}

    @classmethod
    def _from_entry(cls, entry: dict[str, Any], common: dict[str, Any]) -> ColumnModel:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> ColumnModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from waypost.models.parts import part_file

        path = part_file(directory, entry)
        common = {"task": entry["task"], "n_classes": entry["n_classes"], "arch": entry["arch"],
                  "class_names": entry.get("class_names"), "tabular": entry.get("tabular"),
                  "mlp": MLPConfig(**entry["mlp"]) if entry.get("mlp") else None,
                  "fusion_hidden": entry.get("fusion_hidden", 128)}
        model = cls._from_entry(entry, common)
        model.net_ = model._build(False)
        try:
            model.net_.load_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{path}: not readable weights for {entry['arch']} ({exc})") from None
        model.net_.eval()
        return model
