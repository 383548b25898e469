"""One schema for a waypost job: data, features, model, training and tracking.

`waypost init` writes it with every inferred choice and its reason beside it, so the YAML file is both
the plan a person reviews and the exact input `waypost train` runs. Unknown keys and bad values are
errors that name the key: a typo must never silently fall back to a default.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from waypost.data.types import FeatureType, Task
from waypost.errors import ConfigError

CONFIG_VERSION = 1
Preset = Literal["fast", "medium", "best"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureConfig(_Strict):
    type: FeatureType
    reason: str = ""
    encoder: str | None = Field(None, description="An encoder column's architecture when the table has several "
                                "(a registered name; unset: chosen by the column's kind).")
    encoder_reason: str = ""


class DataConfig(_Strict):
    train: str | None = Field(None, description="Training table (CSV/Parquet); relative to the YAML file.")
    valid: str | None = Field(None, description="Optional validation table; else split from train.")
    valid_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    on_bad_image: Literal["error", "skip"] = "error"


class MLPConfig(_Strict):
    hidden: list[int] = Field(default_factory=lambda: [256, 128])
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    batchnorm: bool = True
    max_embedding_dim: int = Field(32, ge=1)


class GBMConfig(_Strict):
    library: Literal["lightgbm", "xgboost"] = "lightgbm"
    n_estimators: int = Field(2000, ge=1)
    learning_rate: float = Field(0.05, gt=0.0)
    num_leaves: int = Field(31, ge=2)
    max_depth: int = Field(-1, ge=-1)
    min_child_samples: int | Literal["auto"] = "auto"
    early_stopping_rounds: int = Field(50, ge=1)
    n_jobs: int | Literal["auto"] = "auto"


Policy = Literal["none", "randaugment", "trivialaugment"]


class AugmentConfig(BaseModel):
    """What augmentation a training run uses; every field shows up in waypost.yaml.

    `enabled` is the master switch: when False nothing below applies (mixup/cutmix included).
    "auto" values are settled by `resolve_augment`, which also says why.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool | Literal["auto"] = "auto"
    random_resized_crop_scale: tuple[float, float] = Field(
        (0.6, 1.0), description="Area fraction range of the random crop; (1, 1) keeps the whole image."
    )
    hflip: bool | Literal["auto"] = "auto"
    vflip: bool = False
    color_jitter: float = Field(0.2, ge=0.0, le=1.0, description="Brightness/contrast/saturation strength.")
    policy: Policy = "none"
    mixup_alpha: float = Field(0.0, ge=0.0)
    cutmix_alpha: float = Field(0.0, ge=0.0)

    @field_validator("random_resized_crop_scale")
    @classmethod
    def _check_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"expected 0 < low <= high <= 1, got ({lo}, {hi})")
        return value

    @property
    def resolved(self) -> bool:
        return self.enabled != "auto" and self.hflip != "auto"

    @property
    def mixes(self) -> bool:
        """True when batches get mixup or cutmix (and so soft targets)."""
        return self.enabled is True and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def _no_quoted_bool(value: bool | str) -> bool | str:
    """`pretrained: "false"` in YAML is a string, which would read as a hub name: refuse it."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "none", ""):
        raise ValueError("use true/false (YAML booleans), 'auto', a weights file or folder, or a hub name")
    return value


class TransferConfig(_Strict):
    """Overrides for the transfer-learning schedule; "auto" keeps the data-size default that
    `waypost.train.transfer.plan_transfer` picks and explains in the plan."""

    freeze_epochs: int | Literal["auto"] = Field("auto", description="Head-only epochs before unfreezing.")
    unfreeze_stages: int | Literal["all", "auto"] = Field("auto", description="Top stages trained after that.")
    backbone_lr_factor: float | Literal["auto"] = "auto"
    layer_decay: float | Literal["auto"] = "auto"
    bn_mode: Literal["auto", "freeze_frozen", "freeze_all", "train"] = "auto"


class ImageConfig(_Strict):
    pretrained: bool | str = Field(
        "auto", description="auto: packaged or cached weights for the architecture; false: from scratch; "
        "a .safetensors/.pth path or a hub name (hf-hub:org/name) for other weights.")
    size: tuple[int, int] | None = Field(None, description="(height, width) the images are resized to; "
                                         "default: the median image, capped at 224 px.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)

    _pretrained = field_validator("pretrained")(classmethod(lambda cls, v: _no_quoted_bool(v)))


class TextAugmentConfig(_Strict):
    """EDA text augmentation (`waypost.data.text_augment`): off by default; it helps a few hundred
    texts per class and costs accuracy on large sets. Each new copy gets one operation."""

    enabled: bool = False
    n_aug: int = Field(1, ge=0, description="New texts per training text.")
    synonym: float = Field(0.1, ge=0.0, le=1.0, description="Share of words replaced by a WordNet synonym.")
    delete: float = Field(0.1, ge=0.0, le=1.0, description="Probability of deleting each word.")
    swap: float = Field(0.1, ge=0.0, le=1.0, description="Share of words swapped with another.")

    def augment(self, texts: list[str], seed: int = 0) -> list[str]:
        """The new texts to add to the training set (none when disabled)."""
        if not self.enabled or self.n_aug == 0:
            return []
        from waypost.data.text_augment import augment_texts

        return augment_texts(texts, n_aug=self.n_aug, synonym=self.synonym, delete=self.delete,
                             swap=self.swap, seed=seed)


class TextConfig(_Strict):
    pretrained: bool | str = Field(
        "auto", description="auto: the packaged all-MiniLM-L6-v2 (offline) or the hub's; false: from scratch; "
        "a transformers checkpoint folder or a hub name (bert-base-uncased, distilbert-base-uncased, ...).")
    max_length: int | Literal["auto"] = Field("auto", description="Tokens per text; auto: 95th percentile, capped at 256.")
    pooling: Literal["mean", "cls"] = "mean"
    fine_tune_layers: int | Literal["auto", "all"] = Field(
        "auto", description="Top Transformer layers fine-tuned after one head-only epoch; 0 keeps the encoder frozen.")
    encoder_lr: float | Literal["auto"] = Field("auto", description="Learning rate of the top fine-tuned layer; auto: 3e-5.")
    layer_decay: float = Field(0.8, gt=0.0, le=1.0, description="Learning-rate factor per layer further down.")
    vocab_size: int = Field(8000, ge=100, description="WordPiece vocabulary trained on the data when no weights are used.")
    augment: TextAugmentConfig = Field(default_factory=TextAugmentConfig)
    latency_budget_ms: float | None = Field(
        None, gt=0.0, description="Milliseconds per text at batch 1 the deployed model may take; below what a "
        "pretrained Transformer needs (~3 ms as an int8 bundle on 2 CPU cores), a bag of embeddings is chosen.")

    _pretrained = field_validator("pretrained")(classmethod(lambda cls, v: _no_quoted_bool(v)))


class DecisionConfig(_Strict):
    metric: Literal["accuracy", "f1", "balanced_accuracy", "cost"] = Field(
        "accuracy", description="What a binary model's predicted class optimises: accuracy (the most probable "
        "class), or a threshold chosen on validation for f1 (of the second class), balanced_accuracy or cost.")
    false_positive_cost: float = Field(1.0, ge=0.0, description="With metric cost: the cost of predicting the "
                                       "second class for a row of the first.")
    false_negative_cost: float = Field(1.0, ge=0.0, description="With metric cost: the cost of missing the "
                                       "second class.")


class ModelConfig(_Strict):
    architecture: str = Field("auto", description="auto, or a registered name: blend, mlp, lightgbm, xgboost, "
                              "small_cnn, resnet18, efficientnet_lite0, mobilenetv2_100, ...")
    reason: str = ""
    mlp: MLPConfig = Field(default_factory=MLPConfig)
    gbm: GBMConfig = Field(default_factory=GBMConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    fusion_hidden: int = Field(128, ge=1, description="Width of the combiner layer that fuses an image or text "
                               "column's features with the tabular ones.")
    parts: list[str] | Literal["auto"] = Field(
        "auto", description="The tabular ensemble's candidate parts: auto (by preset: fast = gbm + mlp; medium = "
        "gbm, linear, extra_trees, mlp; best = both GBM libraries, catboost, linear, extra_trees, random_forest, "
        "mlp, entity_gbm) or a list of gbm, lightgbm, xgboost, catboost, linear, extra_trees, random_forest, mlp, "
        "entity_gbm (a GBM on the table plus the MLP's category embeddings; needs mlp).")
    column_gbm: bool | Literal["auto"] = Field(
        "auto", description="Beside a network over one image or text column and tabular columns, also train a GBM "
        "on the tabular columns plus the network's column embedding (PCA to <= 32 dims) and ensemble the two: "
        "auto (preset best), true or false.")
    stack: bool | Literal["auto"] = Field(
        "auto", description="Stacking for bagged tabular ensembles: a linear model on the parts' out-of-fold "
        "outputs plus the row's features, kept when its cross-validated loss beats the weighted ensemble's: "
        "auto (preset best), true or false.")
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    combiner: Literal["auto", "concat", "transformer"] = Field(
        "auto", description="How several encoder columns are fused: concat + MLP (auto for two or three column "
        "blocks) or a Transformer over one token per column (auto for more).")


class TrainingConfig(_Strict):
    max_epochs: int = Field(200, ge=1)
    batch_size: int | Literal["auto"] = "auto"
    learning_rate: float = Field(3e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    schedule: Literal["warmup_cosine", "onecycle", "constant"] = "warmup_cosine"
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    grad_clip_norm: float | None = Field(1.0, gt=0.0)
    early_stopping_patience: int = Field(20, ge=1)
    select_on: Literal["val_loss", "val_error"] = Field(
        "val_loss", description="The validation number that picks the epoch whose weights are kept and stops "
        "training: val_loss, or val_error (classification error, RMSE for regression; ties go to the lower "
        "loss). val_error was tried as the default for fine-tuned image classifiers and was not better "
        "(docs/decisions.md).")
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    loss: Literal["auto", "cross_entropy", "focal", "mse", "huber"] = "auto"
    focal_gamma: float = Field(2.0, ge=0.0)
    imbalance: Literal["auto", "none", "class_weights", "oversample", "focal"] = "auto"
    seed: int = 0
    time_limit: float | None = Field(None, gt=0.0, description="Seconds for the whole fit, post-training work "
                                     "(plots, MLflow logging, saving) included; training stops between "
                                     "batches/boosting rounds to stay within it, and the plan says what it cut.")
    bagging: int | Literal["auto"] = Field(
        "auto", description="k-fold bagging of the tabular parts: auto (5 folds for tabular tables up to 10,000 "
        "rows, presets medium and best; none for fast, larger tables or given validation data), 0 (never), "
        "or a number of folds >= 2.")

    @field_validator("bagging")
    @classmethod
    def _folds(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or v == 1 or v < 0):
            raise ValueError("expected auto, 0 (no bagging) or a number of folds >= 2")
        return v

    weight_histograms: bool = True
    checkpoint_dir: str | None = Field(
        None, description="Folder for resumable checkpoints: one subfolder per config + training-data digest, "
        "written every epoch and removed when the fit succeeds; None: no checkpoints (waypost train uses "
        ".waypost/checkpoints). A relative path is relative to the current directory.")


class TrackingConfig(_Strict):
    enabled: bool = True
    uri: str | None = Field(None, description="MLflow URI; default WAYPOST_TRACKING_URI or .waypost/mlflow.db")
    experiment: str = "waypost"
    model_name: str | None = Field(None, description="Registered model name; default waypost-<target>.")


class WaypostConfig(_Strict):
    version: int = CONFIG_VERSION
    target: str
    task: Task | None = None
    task_reason: str = ""
    preset: Preset = "medium"
    data: DataConfig = Field(default_factory=DataConfig)
    features: dict[str, FeatureConfig] = Field(default_factory=dict)
    dropped: dict[str, str] = Field(default_factory=dict)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, target: str, preset: Preset = "medium", **overrides: Any) -> WaypostConfig:
        """Preset values first, then the caller's overrides (nested dicts merge key by key)."""
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        raw = _deep_merge(copy.deepcopy(PRESETS[preset]), {"target": target, "preset": preset})
        raw = _deep_merge(raw, overrides)
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> WaypostConfig:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> WaypostConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    # ---- output ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = _HEADER + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)
        if path is not None:
            Path(path).write_text(text)
        return text

    @property
    def registered_model_name(self) -> str:
        return self.tracking.model_name or f"waypost-{self.target}"


_HEADER = (
    "# waypost job. Every inferred choice carries its reason; edit any value and run `waypost train`.\n"
    "# Feature types: numeric, category, binary, datetime, text, image, audio, video, sequence.\n"
)

# Presets trade time for accuracy. They only set defaults: anything the user passes wins.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "training": {"max_epochs": 40, "early_stopping_patience": 6},
        "model": {"gbm": {"n_estimators": 300, "learning_rate": 0.1, "early_stopping_rounds": 20}},
    },
    "medium": {},
    "best": {
        "training": {"max_epochs": 500, "early_stopping_patience": 40, "learning_rate": 2e-3},
        "model": {"gbm": {"n_estimators": 5000, "learning_rate": 0.02, "early_stopping_rounds": 100}},
    },
}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """Turn pydantic's report into lines that name the dotted key, the problem and the value given."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        else:
            lines.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(lines)
