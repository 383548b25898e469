"""Heads over a column encoder (image CNN, text Transformer): `EncoderClassifier` for the column
alone, and fusion with the table's other columns.

Fusion: a column encoder and a tabular encoder feeding one concat combiner and head.

One network, trained end to end by the engine like the CNN alone: the image branch keeps its
transfer-learning schedule (`net.encoder` is the staged image encoder), and everything else -- the
tabular encoder (category embeddings + the MLP body, no head) and the combiner -- is the "head" the
schedule trains at the full learning rate from the first step.

Why concat + an MLP combiner: it is the baseline every multimodal paper compares to, and it is hard
to beat on small tables. The combiner's hidden layer lets the model learn interactions between the
branches (a class that depends on the picture *and* a column), which a linear head over the
concatenation cannot. Each branch is normalised before the concatenation (LayerNorm on the image
features): pretrained CNN features are often ten times larger than the tabular ones and would
otherwise drown them at the start of training.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class EncoderClassifier(nn.Module):
    """An encoder (image, text: anything with `out_dim` and, for transfer learning, `stages()`) +
    dropout + a new linear head sized for the task's classes. `forward(*inputs)` passes the inputs
    to the encoder: one image batch, or token ids and the attention mask."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(int(encoder.out_dim), num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)  # small logits at the start of fine-tuning
        nn.init.zeros_(self.head.bias)

    @property
    def reason(self) -> str:
        return str(getattr(self.encoder, "reason", ""))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(*inputs)))


class FusionHead(nn.Module):
    def __init__(self, image_dim: int, n_numeric: int, cardinalities: list[int], out_dim: int, *,
                 hidden: list[int], fusion_hidden: int = 128, dropout: float = 0.1, batchnorm: bool = True,
                 max_embedding_dim: int = 32, image_dropout: float = 0.2) -> None:
        super().__init__()
        self.config = {"image_dim": image_dim, "n_numeric": n_numeric, "cardinalities": list(cardinalities),
                       "out_dim": out_dim, "hidden": list(hidden), "fusion_hidden": fusion_hidden,
                       "dropout": dropout, "batchnorm": batchnorm, "max_embedding_dim": max_embedding_dim,
                       "image_dropout": image_dropout}
        from waypost.models.tabular_mlp import TabularMLP

        self.image_norm = nn.LayerNorm(image_dim)
        self.image_dropout = nn.Dropout(image_dropout) if image_dropout > 0 else nn.Identity()
        self.tabular = TabularMLP(n_numeric, cardinalities, 0, hidden, dropout, batchnorm, max_embedding_dim)
        self.combine = nn.Sequential(
            nn.Linear(image_dim + self.tabular.out_width, fusion_hidden), nn.SiLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(fusion_hidden, out_dim),
        )

    def forward(self, image_features: torch.Tensor, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        image = self.image_dropout(self.image_norm(image_features))
        return self.combine(torch.cat([image, self.tabular(x_num, x_cat)], dim=1))


class FusionNet(nn.Module):
    """(*encoder inputs, numeric float N,d, categorical int64 N,k) -> logits. The encoder inputs are
    one normalised image batch, or token ids + attention mask for text."""

    def __init__(self, encoder: nn.Module, head: FusionHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    @property
    def reason(self) -> str:
        return getattr(self.encoder, "reason", "")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *encoded, x_num, x_cat = inputs
        return self.head(self.encoder(*encoded), x_num, x_cat)


def build_fusion(net: nn.Module, *, n_numeric: int, cardinalities: list[int], out_dim: int,
                 **head: Any) -> FusionNet:
    """Replace a classifier's head with the fusion head (its encoder, pretrained or not, stays)."""
    encoder = net.encoder
    return FusionNet(encoder, FusionHead(int(encoder.out_dim), n_numeric, cardinalities, out_dim, **head))
