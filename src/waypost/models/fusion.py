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


# ------------------------------------------------------------------ several encoder columns
#
# A table with two or more encoder columns (two texts and an image, ...) beside its tabular columns.
# Each column keeps its own encoder (`encoders[name]`, staged for transfer learning); every column's
# features are LayerNorm'ed (as FusionHead does for the image: pretrained features are often ten
# times larger than the rest and would drown them) and projected to a common width, so a 768-d text
# encoder does not outweigh a 128-d CNN by sheer width. Then one of two combiners:
# - "concat": the projected blocks and the tabular MLP's features, concatenated, into an MLP
#   combiner (fusion_hidden) -> head: FusionHead's recipe, the baseline that is hard to beat on few blocks.
# - "transformer": each block (each column, and the tabular block) is one token plus a learned
#   block embedding; a CLS token and a small pre-norm Transformer over the tokens -> head. One set of
#   weights serves every block and every pair of blocks can interact through attention, so its size
#   does not grow with the number of pairs the way a concat MLP's interactions must be learned.

#: Blocks (encoder columns + the tabular block) up to which the concat combiner is the default.
CONCAT_MAX_BLOCKS = 3
COMBINERS = ("concat", "transformer")


def choose_combiner(n_blocks: int, requested: str = "auto") -> tuple[str, str]:
    """(combiner, reason): concat for 2-3 blocks, a token Transformer for more; a requested one is kept."""
    from waypost.errors import ConfigError

    if requested != "auto":
        if requested not in COMBINERS:
            raise ConfigError(f"fusion combiner {requested!r}: expected auto, {' or '.join(COMBINERS)}")
        return requested, f"{requested} combiner requested in the config ({n_blocks} blocks)"
    if n_blocks <= CONCAT_MAX_BLOCKS:
        return "concat", (f"{n_blocks} blocks (<= {CONCAT_MAX_BLOCKS}): an MLP over the concatenated block "
                          "features sees every pair of blocks at once and is the strongest small-data baseline")
    return "transformer", (f"{n_blocks} blocks (> {CONCAT_MAX_BLOCKS}): one token per block and attention over "
                           "them share weights across blocks, where a concat MLP would have to learn every "
                           "pairwise interaction from a wider input")


class MultiColumnHead(nn.Module):
    """(features by column, numeric, categorical) -> outputs: per-column LayerNorm + dropout +
    projection, the tabular MLP encoder (out_dim 0) as in FusionHead, then the combiner and head."""

    def __init__(self, feature_dims: dict[str, int], tabular: dict[str, Any] | None, out_dim: int, *,
                 combiner: str = "concat", hidden: list[int], fusion_hidden: int = 128, dropout: float = 0.1,
                 batchnorm: bool = True, max_embedding_dim: int = 32, column_dropout: float = 0.2,
                 token_dim: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        if combiner not in COMBINERS:
            raise ValueError(f"combiner {combiner!r}: expected one of {COMBINERS}")
        self.combiner, self.names = combiner, list(feature_dims)
        dims = [int(d) for d in feature_dims.values()]  # modules by position: any column name is safe
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.project = nn.ModuleList(nn.Linear(d, token_dim) for d in dims)
        self.column_dropout = nn.Dropout(column_dropout) if column_dropout > 0 else nn.Identity()
        self.tabular = None
        if tabular is not None:
            from waypost.models.tabular_mlp import TabularMLP

            self.tabular = TabularMLP(int(tabular["n_numeric"]), [int(c) for c in tabular["cardinalities"]], 0,
                                      list(hidden), dropout, batchnorm, max_embedding_dim)
        drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if combiner == "concat":
            width = token_dim * len(self.names) + (self.tabular.out_width if self.tabular is not None else 0)
            self.combine = nn.Sequential(nn.Linear(width, fusion_hidden), nn.SiLU(), drop,
                                         nn.Linear(fusion_hidden, out_dim))
            return
        n_tokens = len(self.names) + (self.tabular is not None)
        self.tabular_token = nn.Linear(self.tabular.out_width, token_dim) if self.tabular is not None else None
        self.block_embedding = nn.Parameter(torch.zeros(1, n_tokens, token_dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, token_dim))
        nn.init.trunc_normal_(self.block_embedding, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(token_dim, heads, 2 * token_dim, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(token_dim)
        self.combine = nn.Sequential(drop, nn.Linear(token_dim, out_dim))

    def forward(self, features: dict[str, torch.Tensor], x_num: torch.Tensor | None = None,
                x_cat: torch.Tensor | None = None) -> torch.Tensor:
        blocks = [self.project[i](self.column_dropout(self.norms[i](features[c]))) for i, c in enumerate(self.names)]
        tab = self.tabular(x_num, x_cat) if self.tabular is not None else None
        if self.combiner == "concat":
            return self.combine(torch.cat(blocks + ([tab] if tab is not None else []), dim=1))
        if tab is not None:
            blocks.append(self.tabular_token(tab))
        tokens = torch.stack(blocks, dim=1) + self.block_embedding
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.combine(self.norm(self.layers(tokens))[:, 0])


class EncoderSet(nn.ModuleList):
    """The column encoders in column order (a list, not a dict: a column may be called "type" or
    "a.b", which nn.ModuleDict refuses), presented to `waypost.train.transfer` as one staged encoder
    (`stages()`: every encoder's stages, column after column, each from its stem up) for callers that
    want one schedule; `waypost.models.multi_column` schedules each encoder on its own plan."""

    def stages(self) -> list[list[nn.Parameter]]:
        return [stage for encoder in self for stage in encoder.stages()]


class MultiColumnNet(nn.Module):
    """(*each column's tensors in `arity` order, [numeric N,d, categorical int64 N,k]) -> outputs.

    `arity[name]` is how many tensors the column's encoder takes: one normalised image batch, or
    token ids + attention mask. The tabular pair comes last, only when the head has a tabular block.
    """

    def __init__(self, encoders: dict[str, nn.Module], arity: dict[str, int], head: MultiColumnHead) -> None:
        super().__init__()
        self.encoder, self.head = EncoderSet(encoders.values()), head
        self.arity = {name: int(arity[name]) for name in encoders}

    def encoders(self) -> dict[str, nn.Module]:
        """The encoders by column name."""
        return dict(zip(self.arity, self.encoder))

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {getattr(enc, 'reason', '')}" for name, enc in self.encoders().items())

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features, at = {}, 0
        for (name, k), encoder in zip(self.arity.items(), self.encoder):
            features[name] = encoder(*inputs[at:at + k])
            at += k
        if self.head.tabular is None:
            return self.head(features)
        return self.head(features, inputs[at], inputs[at + 1])
