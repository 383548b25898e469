"""Turn a table + a config into a resolved job: task, feature types and architecture, each with a reason.

`waypost init` writes the result to waypost.yaml; `fit` runs the same function, so a config written by
init and one inferred on the fly give the same plan. Choices already in the config are kept.
"""
from __future__ import annotations

import pandas as pd

from waypost.config import FeatureConfig, WaypostConfig
from waypost.data.infer import infer_schema, infer_task
from waypost.data.types import TABULAR_TYPES
from waypost.errors import DataError
from waypost.models.registry import choose_architecture
from waypost.fitting_column import COLUMN_KINDS
from waypost.plan import Decision

#: column types trained by an encoder of their own (one per model), beside the tabular ones
ENCODER_TYPES = tuple(COLUMN_KINDS)


def require_target(df: pd.DataFrame, target: str, where: str = "the data") -> None:
    if target not in df.columns:
        cols = list(map(str, df.columns))
        shown = cols[:20] + (["..."] if len(cols) > 20 else [])
        raise DataError(f"target column '{target}' not found in {where}; columns are {shown}")


def resolve_job(df: pd.DataFrame, cfg: WaypostConfig) -> tuple[WaypostConfig, list[Decision]]:
    target = cfg.target
    require_target(df, target)
    plan: list[Decision] = []

    if cfg.task is not None:
        task, task_reason = cfg.task, cfg.task_reason or "set in the config"
    else:
        task, task_reason = infer_task(df[target], target)
    plan.append(Decision("task", f"target '{target}'", task, task_reason))

    if cfg.features:
        missing = [c for c in cfg.features if c not in df.columns]
        if missing:
            raise DataError(f"feature columns from the config are missing in the data: {missing}")
        features = dict(cfg.features)
        dropped = dict(cfg.dropped)
    else:
        schema = infer_schema(df, target)
        features = {n: FeatureConfig(type=d.type, reason=d.reason) for n, d in schema.features.items()}
        dropped = dict(schema.dropped)

    encoded = [n for n, f in features.items() if f.type in ENCODER_TYPES]  # image or text: one per model
    keep = encoded[0] if encoded else None
    for name, feat in list(features.items()):
        if feat.type in TABULAR_TYPES or name == keep:
            continue
        why = (f"one image or text column per model in this version ('{keep}' is used; list the one you want "
               "under features)" if feat.type in ENCODER_TYPES else f"no {feat.type} encoder in this waypost version")
        dropped[name] = f"{feat.type} column: {feat.reason}; {why}"
        del features[name]
    if not features:
        raise DataError(
            f"no usable feature columns besides the target '{target}' (dropped: {dropped or 'none'})"
        )
    for name, feat in features.items():
        plan.append(Decision("column", f"column '{name}'", feat.type, feat.reason))
    for name, why in dropped.items():
        plan.append(Decision("column", f"column '{name}'", "dropped", why))

    if keep is not None and features[keep].type == "image":
        arch = _image_architecture(df[keep], task, cfg.model.architecture, cfg.model.image.pretrained)
    elif keep is not None:
        arch = _text_architecture(df[keep], task, cfg.model.architecture, cfg.model.text.pretrained,
                                  cfg.model.text.latency_budget_ms)
    else:
        arch = choose_architecture({f.type for f in features.values()}, cfg.model.architecture)
    if cfg.model.architecture != "auto" and cfg.model.reason:
        arch = Decision(arch.step, arch.subject, arch.choice, cfg.model.reason)
    plan.append(arch)

    resolved = cfg.model_copy(deep=True)
    resolved.task, resolved.task_reason = task, task_reason
    resolved.features, resolved.dropped = features, dropped
    resolved.model.architecture = arch.choice  # type: ignore[assignment]
    resolved.model.reason = arch.reason
    return resolved, plan


def _requested_encoder(kind: str, task: str, requested: str) -> Decision | None:
    """Checks shared by the image and text choices: classification only, and a requested
    architecture must take the column's type. None when the choice is left to waypost."""
    from waypost.errors import ConfigError
    from waypost.models.registry import get

    if task == "regression":
        raise ConfigError(f"{kind} columns train classifiers in this version; regression on {kind} is not supported "
                          "yet (the target was read as numeric: if it holds class labels, set task: multiclass)")
    if requested == "auto":
        return None
    arch = get(requested)
    if kind not in arch.data_types:
        raise ConfigError(f"model.architecture {requested!r} does not take {kind} columns")
    return Decision("architecture", "architecture", requested, f"requested in the config; {arch.reason}")


def _image_architecture(column: pd.Series, task: str, requested: str, pretrained: bool | str = "auto") -> Decision:
    """The CNN for a table's image column (fused with any tabular columns): by data size, image size
    and the pretrained weights at hand (`waypost.models.image_cnn.choose_image_architecture`)."""
    from waypost.data.images import image_column_stats
    from waypost.models.image_cnn import PRETRAINED_PREFERENCE, choose_image_architecture
    from waypost.models.pretrained import weights_available

    fixed = _requested_encoder("image", task, requested)
    if fixed is not None:
        return fixed
    if isinstance(pretrained, str) and pretrained.lower() != "auto":
        return _architecture_of_weights(pretrained)
    stats = image_column_stats(column)
    name, source, reason = choose_image_architecture(
        int(column.notna().sum()), (stats.height[1], stats.width[1]), stats.channels,
        weights_available(list(PRETRAINED_PREFERENCE)) if pretrained is not False else {})
    return Decision("architecture", "architecture", name, reason)


def _architecture_of_weights(pretrained: str) -> Decision:
    """With `model.architecture: auto` and named weights, the weights decide the architecture: a timm
    hub name ("resnet50.a1_in1k", "timm/resnet50.a1_in1k") names it; a file does not, so ask."""
    from waypost.errors import ConfigError
    from waypost.models.registry import list_architectures

    name = pretrained.removeprefix("hf-hub:").removeprefix("timm/").split(".")[0].lower()
    known = {a.name: a for a in list_architectures("image")}
    if name in known:
        return Decision("architecture", "architecture", name,
                        f"model.image.pretrained names {pretrained!r}, weights for {name}; {known[name].reason}")
    raise ConfigError(
        f"model.image.pretrained is {pretrained!r} but model.architecture is auto: set model.architecture to the "
        f"architecture those weights belong to (one of {sorted(known)})")


def _text_architecture(column: pd.Series, task: str, requested: str, pretrained: bool | str = "auto",
                       latency_budget_ms: float | None = None) -> Decision:
    """The text encoder by data size, the weights at hand and the latency budget
    (`waypost.models.text_encoder.choose_text_architecture`)."""
    from waypost.models.text_encoder import choose_text_architecture, resolve_text_weights

    fixed = _requested_encoder("text", task, requested)
    if fixed is not None:
        return fixed
    name, reason = choose_text_architecture(int(column.notna().sum()), resolve_text_weights(pretrained),
                                            latency_budget_ms)
    return Decision("architecture", "architecture", name, reason)
