"""Tabular MLP: category embeddings + standardised numbers -> Linear/BatchNorm/SiLU/Dropout blocks.

Registered as `mlp`. On its own it rarely beats boosted trees on tabular data, which is why the
default for tables is the blend; it earns its place in that blend on smooth, high-dimensional signal
and as the encoder that fuses with other column types.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from waypost.config import MLPConfig, TrainingConfig
from waypost.data.preprocess import TabularArrays
from waypost.errors import ModelFileError, NotFittedError
from waypost.data.types import TABULAR_TYPES
from waypost.models.registry import register
from waypost.models.inference import predict_network
from waypost.tasks import get_task
from waypost.train.batches import TensorBatches, auto_batch_size, balanced_sample_weights


def embedding_dim(cardinality: int, cap: int = 32) -> int:
    """fast.ai's rule of thumb: grows sublinearly with the vocabulary, capped."""
    return int(min(cap, max(2, round(1.6 * cardinality**0.56))))


class TabularMLP(nn.Module):
    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        out_dim: int,
        hidden: list[int],
        dropout: float = 0.1,
        batchnorm: bool = True,
        max_embedding_dim: int = 32,
    ) -> None:
        super().__init__()
        self.config = {
            "n_numeric": n_numeric, "cardinalities": list(cardinalities), "out_dim": out_dim,
            "hidden": list(hidden), "dropout": dropout, "batchnorm": batchnorm,
            "max_embedding_dim": max_embedding_dim,
        }
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_dim(c, max_embedding_dim)) for c in cardinalities
        )
        width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h) if batchnorm else nn.Identity(), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.out_width = width if out_dim == 0 else out_dim
        # out_dim 0: an encoder without a head, whose features a fusion combiner takes
        self.head = nn.Linear(width, out_dim) if out_dim > 0 else nn.Identity()

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1)))


def _tensors(arrays: TabularArrays) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(arrays.numeric, dtype=np.float32)), torch.from_numpy(
        np.ascontiguousarray(arrays.categorical, dtype=np.int64)
    )


def fit_tabular_net(
    net: nn.Module, train: TabularArrays, y_train: torch.Tensor, valid: TabularArrays, y_valid: torch.Tensor,
    *, task: str, loss_fn: nn.Module, cfg: TrainingConfig, batch_size: int,
    sample_weights: np.ndarray | None = None, tracker: Any = None, verbose: bool = False,
    time_limit: float | None = None, description: str = "MLP",
) -> Any:
    """Train `net` (new or already fitted) on tabular arrays with the engine (a `FitResult`).

    `y_train` may be anything `loss_fn` understands (class codes, or a teacher's soft labels packed
    as floats for distillation); `y_valid` stays the true labels, so early stopping and the
    best-weights restore follow the real task.
    """
    # drop_last avoids a 1-row batch, which BatchNorm cannot normalise.
    train_batches = TensorBatches((*_tensors(train), y_train), batch_size, shuffle=True,
                                  sample_weights=sample_weights, seed=cfg.seed, drop_last=True)
    valid_batches = TensorBatches((*_tensors(valid), y_valid), 4096)
    from waypost.train.engine import fit_network  # the training stack, only when training

    return fit_network(net, train_batches, valid_batches, task=task, loss_fn=loss_fn, cfg=cfg,
                       tracker=tracker, verbose=verbose, time_limit=time_limit, description=description)


class MLPModel:
    """Estimator around TabularMLP. Works in the encoded target space: class codes, or the
    standardised regression target; `predict_raw` returns probabilities or standardised values."""

    kind = "mlp"

    def __init__(self, *, task: str, n_classes: int = 0, cardinalities: list[int] | None = None,
                 mlp: MLPConfig | None = None, training: TrainingConfig | None = None) -> None:
        self.task = task
        self.n_classes = n_classes
        self.cardinalities = list(cardinalities or [])
        self.mlp = mlp or MLPConfig()
        self.training = training or TrainingConfig()

    def fit(
        self, train: TabularArrays, y_train: np.ndarray, valid: TabularArrays, y_valid: np.ndarray,
        *, tracker: Any = None, verbose: bool = False, time_limit: float | None = None,
    ) -> MLPModel:
        cfg = self.training
        task = get_task(self.task)
        out_dim = task.n_outputs(self.n_classes)
        torch.manual_seed(cfg.seed)  # weight init is part of what `seed` must make repeatable
        self.net_ = TabularMLP(
            train.numeric.shape[1], [int(c) for c in self.cardinalities], out_dim, self.mlp.hidden,
            self.mlp.dropout, self.mlp.batchnorm, self.mlp.max_embedding_dim,
        )
        loss_fn, sampling, self.loss_decision_ = task.choose_loss(cfg, y_train, self.n_classes)
        y_dtype = task.target_dtype()
        yt = torch.from_numpy(np.ascontiguousarray(y_train, dtype=y_dtype))
        yv = torch.from_numpy(np.ascontiguousarray(y_valid, dtype=y_dtype))
        self.batch_size_ = cfg.batch_size if cfg.batch_size != "auto" else auto_batch_size(len(yt))
        weights = balanced_sample_weights(y_train) if sampling == "oversample" else None
        self.fit_ = fit_tabular_net(
            self.net_, train, yt, valid, yv, task=self.task, loss_fn=loss_fn, cfg=cfg,
            batch_size=self.batch_size_, sample_weights=weights, tracker=tracker, verbose=verbose,
            time_limit=time_limit,
        )
        return self

    def predict_raw(self, arrays: TabularArrays) -> np.ndarray:
        if not hasattr(self, "net_"):
            raise NotFittedError("MLPModel is not fitted: call fit() first")
        out = predict_network(self.net_, _tensors(arrays))
        if get_task(self.task).output_activation() != "softmax":
            return out[:, 0].astype(np.float64)
        return torch.softmax(torch.from_numpy(out).double(), dim=1).numpy()

    def to_onnx(self, sample: TabularArrays) -> Any:
        """The network as the `mlp_out` graph the ensemble merges (`waypost.deploy.onnx_graph`)."""
        from waypost.deploy.onnx_graph import export_mlp

        return export_mlp(self.net_, self.task, sample)

    # ---- persistence: safetensors + the constructor arguments as JSON ------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(directory / "mlp.safetensors"))
        return {"kind": self.kind, "file": "mlp.safetensors", "task": self.task,
                "n_classes": self.n_classes, "net": self.net_.config}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> MLPModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from waypost.models.parts import part_file

        path = part_file(directory, entry)
        model = cls(task=entry["task"], n_classes=entry["n_classes"])
        model.net_ = TabularMLP(**entry["net"])
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
        try:
            model.net_.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f"{path}: weights do not match the manifest's network ({exc})") from None
        model.net_.eval()
        return model


@register(
    "mlp",
    data_types=TABULAR_TYPES,
    reason="MLP with category embeddings, batchnorm and dropout",
    when="tabular data when no gradient-boosting library is installed, or when asked",
    requires=("torch",),
    priority=10,
    tags=("default",),
)
def build_mlp(**kwargs: Any) -> MLPModel:
    return MLPModel(**kwargs)
