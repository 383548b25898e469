"""Estimator for a table with two or more encoder columns (two texts and an image, ...) and any
tabular columns beside them: one network (`waypost.models.fusion.MultiColumnNet`), trained end to
end by the engine, saved as safetensors + a JSON entry, exported as one ONNX graph.

Each column's encoder is built the way the one-column estimator of its kind builds it
(`ImageModel` / `TextModel`: the registry factory, `.encoder` taken), and keeps that estimator's
transfer-learning plan (`_transfer_plan`): a pretrained CNN gets the image schedule, a pretrained
Transformer the text one. Each encoder gets its own `TransferSchedule` and its own discriminative
learning-rate groups (`multi_param_groups`), so a frozen MiniLM and a fine-tuned CNN can share a
fit; scratch encoders train at the full rate from the first step. Everything that is not an
encoder (projections, the tabular MLP, the combiner) is the head and trains at the base rate.

Works in the encoded target space: class codes in, probabilities (n, k) out for classification;
standardised values in and out for regression (`waypost.tasks`). A new column kind adds one
`ColumnSpec` subclass (build, plan, feed, prepare, ONNX inputs) to `COLUMN_SPECS`.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from waypost.config import ImageConfig, MLPConfig, TextConfig, TrainingConfig
from waypost.errors import ConfigError, ModelFileError, NotFittedError
from waypost.data.types import TABULAR_TYPES
from waypost.models.registry import register
from waypost.plan import Decision


def _config(cls: Any, value: Any) -> Any:
    """A pydantic config from itself, its dump, or None (its defaults)."""
    if isinstance(value, cls):
        return value
    return cls.model_validate(value or {})


class ColumnSpec:
    """One encoder column: `spec` is the constructor's `columns[name]` dict."""

    kind = ""
    inputs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: dict[str, Any], owner: MultiColumnModel) -> None:
        self.name, self.spec, self.owner = name, dict(spec), owner

    def input_names(self) -> list[str]:
        return [f"{self.name}/{i}" for i in self.inputs]

    def column_model(self) -> Any:
        raise NotImplementedError

    def build(self, pretrained: bool) -> torch.nn.Module:
        """The encoder, built by the one-column estimator of the kind (its head is dropped)."""
        return self.column_model()._classifier(self.pretrained_arg(pretrained)).encoder

    def pretrained_arg(self, pretrained: bool) -> Any:
        return pretrained

    def setup(self, encoder: torch.nn.Module) -> None:
        """Record what the fitted encoder fixes (an image column's normalisation)."""

    def plan(self, n: int, batch_size: int, encoder: torch.nn.Module) -> tuple[Any, str]:
        raise NotImplementedError

    def feed(self, arrays: tuple[np.ndarray, ...], *, training: bool) -> Any:
        raise NotImplementedError

    def resolve_augment(self, n: int) -> tuple[Any, list[Decision]]:
        """The column's training augmentation and the plan's entries for it (none by default)."""
        return None, []

    def prepare(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tensors

    def lengths(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray | None:
        return None

    def onnx_example(self, arrays: tuple[np.ndarray, ...]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def entry(self) -> dict[str, Any]:
        """The spec as JSON (objects such as TextWeights left out), plus what the fit fixed."""
        return {k: v for k, v in self.spec.items() if k != "weights"}

    def common(self) -> dict[str, Any]:
        owner = self.owner
        return {"task": owner.task, "n_classes": owner.n_classes, "arch": self.spec["arch"],
                "training": owner.training, "class_names": owner.class_names}


class ImageSpec(ColumnSpec):
    kind = "image"
    inputs = ("image",)

    def column_model(self) -> Any:
        from waypost.models.image_model import ImageModel

        return ImageModel(in_chans=int(self.spec.get("in_chans", 3)),
                          image_size=tuple(self.spec.get("image_size", (32, 32))),
                          image=_config(ImageConfig, self.spec.get("image")), **self.common())

    def pretrained_arg(self, pretrained: bool) -> Any:
        if not pretrained:
            return False
        return self.spec.get("pretrained", _config(ImageConfig, self.spec.get("image")).pretrained)

    def setup(self, encoder: torch.nn.Module) -> None:
        self.mean = [float(v) for v in encoder.normalization["mean"]]
        self.std = [float(v) for v in encoder.normalization["std"]]

    def plan(self, n: int, batch_size: int, encoder: torch.nn.Module) -> tuple[Any, str]:
        model = self.column_model()
        model.batch_size_ = batch_size
        return model._transfer_plan(n, bool(getattr(getattr(encoder, "weights", None), "pretrained", False)))

    def resolve_augment(self, n: int) -> tuple[Any, list[Decision]]:
        from waypost.train.augment import labels_look_orientation_sensitive, resolve_augment

        cfg = _config(ImageConfig, self.spec.get("image")).augment
        augment, decisions = resolve_augment(
            cfg, n_images=n, channels=int(self.spec.get("in_chans", 3)),
            labels_are_orientation_sensitive=labels_look_orientation_sensitive(self.owner.class_names))
        decisions = [replace(d, subject=f"{d.subject} ('{self.name}')") for d in decisions]
        if augment.enabled is True and augment.mixes:
            augment = augment.model_copy(update={"mixup_alpha": 0.0, "cutmix_alpha": 0.0})
            decisions.append(Decision("training", f"mixing ('{self.name}')", "off", "mixup/cutmix mix pixels but "
                                      "not the other columns of the rows, so they are off beside other columns"))
        self.augment = augment
        return augment, decisions

    def feed(self, arrays: tuple[np.ndarray, ...], *, training: bool) -> Any:
        from waypost.train.column_batches import ImageFeed

        return ImageFeed(arrays[0], mean=self.mean, std=self.std,
                         augment=getattr(self, "augment", None) if training else None)

    def prepare(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        from waypost.train.augment import normalize

        return (normalize(tensors[0], self.mean, self.std),)

    def onnx_example(self, arrays: tuple[np.ndarray, ...]) -> dict[str, torch.Tensor]:
        return {f"{self.name}/image": self.prepare((torch.from_numpy(np.ascontiguousarray(arrays[0])),))[0]}

    def entry(self) -> dict[str, Any]:
        return {**super().entry(), "mean": self.mean, "std": self.std}


class TextSpec(ColumnSpec):
    kind = "text"
    inputs = ("input_ids", "attention_mask")

    def weights(self) -> Any:
        from waypost.models.text_encoder import TextWeights, resolve_text_weights

        if self.spec.get("weights") is not None:
            return self.spec["weights"]
        if self.spec.get("hf_config"):  # a saved fine-tuned model: its architecture, rebuilt without the hub
            from transformers import AutoConfig

            config = dict(self.spec["hf_config"])
            return TextWeights("config", None, "saved fine-tuned weights",
                               AutoConfig.for_model(config.pop("model_type"), **config))
        text = _config(TextConfig, self.spec.get("text"))
        return resolve_text_weights(text.pretrained if self.spec["arch"] == "pretrained_transformer" else False)

    def column_model(self) -> Any:
        from waypost.models.text_model import TextModel

        return TextModel(vocab_size=int(self.spec["vocab_size"]), max_length=int(self.spec["max_length"]),
                         text=_config(TextConfig, self.spec.get("text")), weights=self.weights(), **self.common())

    def setup(self, encoder: torch.nn.Module) -> None:
        hf = getattr(encoder, "model", None)
        self.hf_config = hf.config.to_dict() if hf is not None and hasattr(hf, "config") else None

    def plan(self, n: int, batch_size: int, encoder: torch.nn.Module) -> tuple[Any, str]:
        pretrained = bool(getattr(getattr(encoder, "weights", None), "pretrained", False))
        return self.column_model()._transfer_plan(n, pretrained, max(0, len(encoder.stages()) - 1))

    def feed(self, arrays: tuple[np.ndarray, ...], *, training: bool) -> Any:
        from waypost.train.column_batches import TextFeed

        return TextFeed(arrays[0], arrays[1])

    def prepare(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        from waypost.train.column_batches import trim_to_longest

        return trim_to_longest(tensors[0], tensors[1])

    def lengths(self, arrays: tuple[np.ndarray, ...]) -> np.ndarray | None:
        return np.asarray(arrays[1]).sum(1)

    def onnx_example(self, arrays: tuple[np.ndarray, ...]) -> dict[str, torch.Tensor]:
        ids, mask = (torch.from_numpy(np.ascontiguousarray(a, np.int64)) for a in arrays)
        return {f"{self.name}/input_ids": ids, f"{self.name}/attention_mask": mask}

    def entry(self) -> dict[str, Any]:
        entry = super().entry()
        if getattr(self, "hf_config", None):
            entry["hf_config"] = self.hf_config
        return entry


COLUMN_SPECS: dict[str, type[ColumnSpec]] = {"image": ImageSpec, "text": TextSpec}


def multi_param_groups(encoders: dict[str, Any], plans: dict[str, Any], head: torch.nn.Module, base_lr: float,
                       weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups for several staged encoders, each on its own plan: the head's groups once, then
    every encoder's per-stage groups (`waypost.train.transfer.param_groups`), named "<column>/stageN"."""
    from waypost.train.transfer import param_groups

    groups: list[dict[str, Any]] = []
    for i, (name, encoder) in enumerate(encoders.items()):
        for group in param_groups(encoder, head, base_lr, weight_decay, plans[name]):
            if group["stage"] is None:  # the head's groups, the same in every call
                if i == 0:
                    groups.append(group)
                continue
            groups.append({**group, "name": f"{name}/{group['name']}"})
    return groups


class MultiColumnModel:
    kind = "multi_column"
    file = "multi_column.safetensors"

    def __init__(self, *, task: str, n_classes: int, columns: dict[str, dict[str, Any]], combiner: str = "auto",
                 training: TrainingConfig | None = None, mlp: MLPConfig | None = None, fusion_hidden: int = 128,
                 tabular: dict[str, Any] | None = None, class_names: list[Any] | None = None) -> None:
        from waypost.models.fusion import choose_combiner
        from waypost.tasks import get_task

        if len(columns) < 1:
            raise ConfigError("MultiColumnModel needs at least one encoder column")
        unknown = sorted({str(s.get("kind")) for s in columns.values()} - set(COLUMN_SPECS))
        if unknown:
            raise ConfigError(f"MultiColumnModel: column kind(s) {unknown}; known: {sorted(COLUMN_SPECS)}")
        self.task, self.task_ = task, get_task(task)
        self.n_classes = int(n_classes)
        self.n_outputs = int(self.task_.n_outputs(self.n_classes))
        self.training = training or TrainingConfig()
        self.mlp = mlp or MLPConfig()
        self.fusion_hidden = int(fusion_hidden)
        self.tabular = tabular  # {"n_numeric": d, "cardinalities": [...]} or None
        self.class_names = list(class_names or [])
        self.specs = {name: COLUMN_SPECS[s["kind"]](name, s, self) for name, s in columns.items()}
        self.combiner, self.combiner_reason = choose_combiner(len(columns) + (tabular is not None), combiner)

    # ---- the network -------------------------------------------------------------------------
    def _build(self, pretrained: bool) -> torch.nn.Module:
        from waypost.models.fusion import MultiColumnHead, MultiColumnNet

        encoders = {}
        for name, spec in self.specs.items():
            encoders[name] = spec.build(pretrained)
            spec.setup(encoders[name])
        head = MultiColumnHead({n: int(e.out_dim) for n, e in encoders.items()}, self.tabular, self.n_outputs,
                               combiner=self.combiner, hidden=list(self.mlp.hidden), fusion_hidden=self.fusion_hidden,
                               dropout=self.mlp.dropout, batchnorm=self.mlp.batchnorm,
                               max_embedding_dim=self.mlp.max_embedding_dim)
        return MultiColumnNet(encoders, {n: len(s.inputs) for n, s in self.specs.items()}, head)

    def input_names(self) -> list[str]:
        """The ONNX graph's inputs in order: each column's, then the tabular views that have columns."""
        names = [i for spec in self.specs.values() for i in spec.input_names()]
        if self.tabular is not None:
            names += ["numeric"] if int(self.tabular["n_numeric"]) > 0 else []
            names += ["categorical"] if self.tabular["cardinalities"] else []
        return names

    def _tabular_tensors(self, tabular: Any) -> tuple[torch.Tensor, ...]:
        if self.tabular is None:
            return ()
        if tabular is None:
            raise ConfigError("MultiColumnModel was built with tabular columns; the inputs have none")
        return (torch.from_numpy(np.ascontiguousarray(tabular.numeric, np.float32)),
                torch.from_numpy(np.ascontiguousarray(tabular.categorical, np.int64)))

    def _columns(self, inputs: Any) -> dict[str, tuple[np.ndarray, ...]]:
        missing = [n for n in self.specs if n not in inputs.columns]
        if missing:
            raise ConfigError(f"MultiColumnModel: inputs lack the column(s) {missing}")
        return {n: tuple(inputs.columns[n]) for n in self.specs}

    # ---- training ----------------------------------------------------------------------------
    def fit(self, x_train: Any, y_train: np.ndarray, x_valid: Any, y_valid: np.ndarray, *, tracker: Any = None,
            verbose: bool = False, time_limit: float | None = None) -> MultiColumnModel:
        from waypost.models.image_model import batch_device
        from waypost.train.batches import auto_batch_size, balanced_sample_weights
        from waypost.train.column_batches import ColumnBatches, column_schedules
        from waypost.train.engine import fit_network

        cfg = self.training
        torch.manual_seed(cfg.seed)
        cols_tr, cols_va = self._columns(x_train), self._columns(x_valid)
        self.net_ = self._build(True)
        encoders = self.net_.encoders()
        n = len(y_train)
        from waypost.kinds import get_kind

        pretrained_text = any(get_kind(s.kind).costly and getattr(getattr(encoders[c], "weights", None), "pretrained",
                                                                  False) for c, s in self.specs.items())
        cap = 32 if pretrained_text else 128  # a pretrained Transformer step on CPU is costly: more, smaller steps
        self.batch_size_ = cfg.batch_size if cfg.batch_size != "auto" else int(min(cap, auto_batch_size(n)))
        self.decisions_ = [Decision("architecture", "fusion", self.combiner, self.combiner_reason)]
        plans = {}
        for name, spec in self.specs.items():
            plans[name], why = spec.plan(n, self.batch_size_, encoders[name])
            pretrained = bool(getattr(getattr(encoders[name], "weights", None), "pretrained", False))
            self.decisions_.append(Decision("training", f"transfer ('{name}')",
                                            "fine-tune" if pretrained else "from scratch", why))
            self.decisions_ += spec.resolve_augment(n)[1]
        self.loss_fn_, sampling, loss_decision = self.task_.choose_loss(cfg, y_train, self.n_classes)
        self.decisions_.append(loss_decision)
        weights = balanced_sample_weights(y_train) if sampling == "oversample" else None
        y_dtype = self.task_.target_dtype()
        images = [cols[c][0] for cols in (cols_tr, cols_va) for c, s in self.specs.items() if get_kind(s.kind).media]
        device = batch_device(cfg, *images) if images else None

        def batches(cols: dict[str, tuple[np.ndarray, ...]], tab: Any, y: np.ndarray, training: bool) -> ColumnBatches:
            feeds = {c: s.feed(cols[c], training=training) for c, s in self.specs.items()}
            return ColumnBatches(feeds, np.asarray(y, dtype=y_dtype), self.batch_size_ if training else 256,
                                 extra=self._tabular_tensors(tab), training=training,
                                 sample_weights=weights if training else None, seed=cfg.seed, drop_last=training,
                                 device=device)

        train = batches(cols_tr, x_train.tabular, y_train, True)
        valid = batches(cols_va, x_valid.tabular, y_valid, False)
        groups = multi_param_groups(encoders, plans, self.net_.head, cfg.learning_rate, cfg.weight_decay)
        schedules = column_schedules(plans, encoders)
        self.fit_ = fit_network(self.net_, train, valid, task=self.task, loss_fn=self.loss_fn_, cfg=cfg,
                                tracker=tracker, verbose=verbose, time_limit=time_limit,
                                description=f"{len(self.specs)} columns, {self.combiner}",
                                callbacks=schedules, param_groups=groups)
        return self

    # ---- prediction --------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_raw(self, inputs: Any, batch_size: int = 256) -> np.ndarray:
        """Probabilities (n, k) float64, or standardised values (n,) float64. Rows go through in order
        of their total text length, so each chunk pads little, and come back in the caller's order."""
        if not hasattr(self, "net_"):
            raise NotFittedError("MultiColumnModel is not fitted: call fit() first")
        cols = self._columns(inputs)
        n = len(next(iter(cols.values()))[0])
        lengths = [s.lengths(cols[c]) for c, s in self.specs.items()]
        lengths = [v for v in lengths if v is not None]
        order = np.argsort(np.sum(lengths, axis=0), kind="stable") if lengths else np.arange(n)
        order_t = torch.from_numpy(order)
        tensors = {c: tuple(torch.from_numpy(np.ascontiguousarray(a))[order_t] for a in arrays)
                   for c, arrays in cols.items()}
        tab = tuple(t[order_t] for t in self._tabular_tensors(inputs.tabular))
        softmax = self.task_.output_activation() == "softmax"
        self.net_.eval()
        out = []
        for i in range(0, n, batch_size):
            chunk: list[torch.Tensor] = []
            for c, spec in self.specs.items():
                chunk.extend(spec.prepare(tuple(t[i:i + batch_size] for t in tensors[c])))
            raw = self.net_(*chunk, *(t[i:i + batch_size] for t in tab)).float()
            out.append(torch.softmax(raw, dim=1) if softmax else raw.squeeze(-1))
        empty = np.zeros((0, self.n_outputs) if softmax else (0,))
        result = torch.cat(out).double().numpy() if out else empty
        inverse = np.empty_like(order)
        inverse[order] = np.arange(n)
        return result[inverse]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Weights as safetensors in `directory`; returns the manifest entry (JSON-safe)."""
        from safetensors.torch import save_file

        if not hasattr(self, "net_"):
            raise NotFittedError("MultiColumnModel is not fitted: call fit() first")
        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(Path(directory) / self.file))
        entry = {"kind": self.kind, "file": self.file, "task": self.task, "n_classes": self.n_classes,
                 "class_names": self.class_names, "combiner": self.combiner,
                 "columns": {c: s.entry() for c, s in self.specs.items()}, "inputs": self.input_names(),
                 "tabular": self.tabular, "mlp": self.mlp.model_dump(mode="json"), "fusion_hidden": self.fusion_hidden,
                 "training": self.training.model_dump(mode="json")}
        return json.loads(json.dumps(entry, default=_json_default))

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> MultiColumnModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from waypost.models.parts import part_file

        path = part_file(directory, entry)
        model = cls(task=entry["task"], n_classes=entry["n_classes"], columns=entry["columns"],
                    combiner=entry["combiner"], training=TrainingConfig(**entry.get("training") or {}),
                    mlp=MLPConfig(**entry["mlp"]), fusion_hidden=entry["fusion_hidden"], tabular=entry.get("tabular"),
                    class_names=entry.get("class_names"))
        model.net_ = model._build(False)
        try:
            model.net_.load_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{path}: not readable weights for the {entry['combiner']} multi-column model "
                                 f"({exc})") from None
        for name, spec in model.specs.items():  # the trained normalisation, as saved
            saved = entry["columns"][name]
            if isinstance(spec, ImageSpec):
                spec.mean, spec.std = list(saved["mean"]), list(saved["std"])
        model.net_.eval()
        return model

    # ---- export ------------------------------------------------------------------------------
    def to_onnx(self, sample: Any) -> Any:
        """One ONNX graph: inputs `input_names()` (images float32 normalised as the saved mean/std say;
        token ids and masks int64 with a dynamic sequence axis per text column), output `output`
        (probabilities, or the standardised value (n, 1)); dynamic batch axis."""
        from waypost.deploy.onnx_graph import export_multi_column_net

        if not hasattr(self, "net_"):
            raise NotFittedError("MultiColumnModel is not fitted: call fit() first")
        cols = self._columns(sample)
        rows = np.resize(np.arange(len(next(iter(cols.values()))[0])), 2)  # two example rows
        examples, sequence = {}, {}
        for i, (name, spec) in enumerate(self.specs.items()):
            examples[name] = spec.onnx_example(tuple(a[rows] for a in cols[name]))
            if isinstance(spec, TextSpec):
                sequence[name] = f"sequence{i}"
        tabular = None
        if self.tabular is not None:
            self._tabular_tensors(sample.tabular)  # a clear error when the sample lacks them
            tabular = sample.tabular
            from waypost.data.preprocess import TabularArrays

            tabular = TabularArrays(tabular.numeric[rows], tabular.categorical[rows], tabular.gbm[rows])
        self.net_.eval()
        return export_multi_column_net(self.net_, examples, sequence, tabular,
                                       softmax=self.task_.output_activation() == "softmax")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON-safe in a multi-column entry: {type(value).__name__}")


def _column_normalization(self: MultiColumnModel, name: str) -> tuple[list[float], list[float]]:
    """(mean, std) image column `name` was normalised with in training: the bundle's preprocessing
    must normalise the same way (pretrained encoders bring their own)."""
    spec = self.specs[name]
    return list(spec.mean), list(spec.std)


MultiColumnModel.column_normalization = _column_normalization  # type: ignore[attr-defined]


@register(
    "multi_column",
    data_types=TABULAR_TYPES | {"image", "text"},
    requires=("torch",),
    reason="several encoder columns: each column's encoder (chosen by its kind) and the tabular columns fused "
           "into one network, trained end to end",
    when="two or more image/text columns in one table (chosen by the plan, not by name)",
)
def build_multi_column(**kwargs: Any) -> MultiColumnModel:
    return MultiColumnModel(**kwargs)
