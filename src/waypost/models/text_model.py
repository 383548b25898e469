"""Estimator for one text column, alone or fused with the table's other columns: a pretrained
Transformer (fine-tuned top layers with layer-wise learning-rate decay, or frozen + head on tiny
data), or a small Transformer / bag of embeddings from scratch (`waypost.models.text_encoder`).
Classification or regression, as the task says (`waypost.models.column_model`)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from waypost.config import TextConfig
from waypost.models.column_model import ColumnModel, tabular_tensors, unpack
from waypost.plan import Decision

#: Below this many texts a pretrained encoder stays frozen: fine-tuning millions of weights on a few
#: hundred examples overfits, while a head on good sentence embeddings does not.
FROZEN_BELOW = 300
#: From this many texts, every layer is fine-tuned.
ALL_LAYERS_FROM = 5_000
ENCODER_LR = 3e-5  # the usual BERT fine-tuning rate (Devlin et al. 2019: 2e-5 .. 5e-5)


def trim_padding(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Cut (ids, mask, ...) to the batch's longest text: right padding past it is pure cost."""
    ids, mask, *rest = batch
    length = max(1, int(mask.sum(1).max()))
    return (ids[:, :length], mask[:, :length], *rest)


class TextModel(ColumnModel):
    kind = "text"
    file = "text.safetensors"

    def __init__(self, *, vocab_size: int, max_length: int, text: TextConfig | None = None, weights: Any = None,
                 **common: Any) -> None:
        super().__init__(**common)
        self.text = text or TextConfig()
        self.vocab_size, self.max_length = int(vocab_size), int(max_length)
        self.weights = weights  # waypost.models.text_encoder.TextWeights
        # hooks for distillation (waypost.deploy.distill_text): starting weights and the loss to train on
        self.init_state: dict[str, torch.Tensor] | None = None
        self.loss_override: tuple[torch.nn.Module, Decision] | None = None

    def _classifier(self, pretrained: Any) -> torch.nn.Module:
        from waypost.models.registry import get
        from waypost.models.text_encoder import resolve_text_weights

        weights = self.weights if self.weights is not None else resolve_text_weights(False)
        return get(self.arch).factory(num_classes=self.n_outputs, weights=weights, vocab_size=self.vocab_size,
                                      max_length=self.max_length, pooling=self.text.pooling)

    def _prepare(self, arrays: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return trim_padding(arrays)

    def _transfer_plan(self, n: int, pretrained: bool, n_layers: int) -> tuple[Any, str]:
        from waypost.train.transfer import TransferPlan

        if not pretrained:
            return TransferPlan(), "no pretrained weights: every layer trains from the first step at the full learning rate"
        cfg, lr = self.text, self.training.learning_rate
        encoder_lr = ENCODER_LR if cfg.encoder_lr == "auto" else float(cfg.encoder_lr)
        layers = cfg.fine_tune_layers
        if layers == "auto":
            layers = 0 if n < FROZEN_BELOW else (2 if n < ALL_LAYERS_FROM else "all")
            why = (f"{n:,} texts (< {FROZEN_BELOW}): the encoder stays frozen and only the head trains, since "
                   "fine-tuning millions of weights on so few examples overfits" if layers == 0 else
                   f"{n:,} texts: one head-only epoch, then the top {layers} of {n_layers} layers fine-tune"
                   if layers != "all" else f"{n:,} texts (>= {ALL_LAYERS_FROM:,}): one head-only epoch, then every layer fine-tunes")
        else:
            why = f"fine_tune_layers={layers} set in the config"
        factor = encoder_lr / lr
        if layers == 0:
            plan = TransferPlan(unfreeze_stages=0, backbone_lr_factor=min(factor, 10.0))  # no stage ever opens
        else:
            plan = TransferPlan(freeze_epochs=1, unfreeze_stages=None if layers == "all" else int(layers),
                                backbone_lr_factor=min(factor, 10.0), layer_decay=cfg.layer_decay)
            why += f"; top layer at {encoder_lr:g} (head {lr:g}), x{cfg.layer_decay} per layer down"
        return plan, why

    def fit(self, x_train: Any, y_train: np.ndarray, x_valid: Any, y_valid: np.ndarray, *,
            tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> TextModel:
        from waypost.train.batches import TensorBatches, auto_batch_size

        cfg = self.training
        torch.manual_seed(cfg.seed)
        arrays_tr, tab_tr = unpack(x_train)
        arrays_va, tab_va = unpack(x_valid)
        self.net_ = self._build(True)
        if self.init_state is not None:
            self.net_.load_state_dict(self.init_state)
        encoder = self.net_.encoder
        pretrained = bool(getattr(getattr(encoder, "weights", None), "pretrained", False))
        n = len(y_train)
        cap = 32 if pretrained else 128  # a Transformer step on CPU is costly: more, smaller steps
        self.batch_size_ = cfg.batch_size if cfg.batch_size != "auto" else int(min(cap, auto_batch_size(n)))
        plan, why = self._transfer_plan(n, pretrained, max(0, len(encoder.stages()) - 1))
        y_valid = self._targets(y_valid)  # the true targets: early stopping follows the real task
        if self.loss_override is not None:  # distillation: targets packed for its own loss, as given
            (self.loss_fn_, loss_decision), self.sample_weights_ = self.loss_override, None
        else:
            y_train = self._targets(y_train)
            loss_decision = self._loss(y_train)
        self.decisions_ = [Decision("training", "transfer", "fine-tune" if pretrained else "from scratch", why),
                           loss_decision]

        def tensors(arrays: tuple[np.ndarray, ...], tab: Any, y: np.ndarray) -> tuple[torch.Tensor, ...]:
            y_dtype = torch.float32 if np.asarray(y).dtype.kind == "f" else torch.int64  # values, packed soft labels
            return (*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays), *tabular_tensors(tab),
                    torch.as_tensor(y, dtype=y_dtype))

        # length-bucketed (fortunes: median 30 tokens, 95th percentile ~190), padding trimmed per batch
        train = TensorBatches(tensors(arrays_tr, tab_tr, y_train), self.batch_size_, shuffle=True, seed=cfg.seed,
                              drop_last=True, collate=trim_padding, lengths=arrays_tr[1].sum(1),
                              sample_weights=self.sample_weights_)
        valid = TensorBatches(tensors(arrays_va, tab_va, y_valid), 64, collate=trim_padding,
                              lengths=arrays_va[1].sum(1))
        self._train(train, valid, plan, tracker=tracker, verbose=verbose, time_limit=time_limit)
        return self

    def predict_raw(self, inputs: Any, batch_size: int = 64) -> np.ndarray:
        """Rows sorted by length so each chunk pads little, then put back in the caller's order."""
        from waypost.data.frame_preprocess import ColumnInputs

        arrays, tabular = unpack(inputs)
        order = np.argsort(arrays[1].sum(1), kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        sorted_tab = None
        if tabular is not None:
            from waypost.data.preprocess import TabularArrays

            sorted_tab = TabularArrays(tabular.numeric[order], tabular.categorical[order], tabular.gbm[order])
        out = super().predict_raw(ColumnInputs(tuple(a[order] for a in arrays), sorted_tab), batch_size)
        return out[inverse]

    def to_onnx(self, inputs: Any, **names: Any) -> Any:
        """One graph: `input_ids` / `attention_mask` int64 with dynamic batch and sequence axes (+ tabular);
        `names`: the output's name, and `features` to output the encoder's features too."""
        from waypost.deploy.onnx_graph import export_text_net

        return export_text_net(self.net_, *inputs.arrays, inputs.tabular, task=self.task, **names)

    def _entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"vocab_size": self.vocab_size, "max_length": self.max_length,
                                 "pooling": self.text.pooling}
        hf = getattr(self.net_.encoder, "model", None)
        if hf is not None and hasattr(hf, "config"):  # the architecture, to rebuild without the hub
            entry["hf_config"] = hf.config.to_dict()
        return entry

    @classmethod
    def _from_entry(cls, entry: dict[str, Any], common: dict[str, Any]) -> TextModel:
        from waypost.models.text_encoder import TextWeights

        weights = None
        if entry.get("hf_config"):
            from transformers import AutoConfig

            config = dict(entry["hf_config"])
            weights = TextWeights("config", None, "saved fine-tuned weights",
                                  AutoConfig.for_model(config.pop("model_type"), **config))
        return cls(vocab_size=entry["vocab_size"], max_length=entry["max_length"], weights=weights,
                   text=TextConfig(pooling=entry.get("pooling", "mean")), **common)
