"""Turn a table + a config into a resolved job: task, each column's kind, and the architecture
(one per encoder column when there are several), each with a reason.

`waypost init` writes the result to waypost.yaml; `fit` runs the same function, so a config written by
init and one inferred on the fly give the same plan. Choices already in the config are kept.
"""
from __future__ import annotations

import pandas as pd

from waypost.config import FeatureConfig, WaypostConfig
from waypost.kinds.recognise import infer_schema
from waypost.tasks.infer import infer_task
from waypost.errors import DataError
from waypost.kinds import get_kind, is_registered
from waypost.plan import Decision

#: the architecture entry of a model over two or more encoder columns (`waypost.models.multi_column`)
MULTI_COLUMN = "multi_column"


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
        features = {n: f.model_copy() for n, f in cfg.features.items()}
        dropped = dict(cfg.dropped)
    else:
        schema = infer_schema(df, target)
        features = {n: FeatureConfig(type=d.type, reason=d.reason) for n, d in schema.features.items()}
        dropped = dict(schema.dropped)

    for name, feat in list(features.items()):
        if not is_registered(feat.type):
            dropped[name] = f"{feat.type} column: {feat.reason}; no {feat.type} encoder in this waypost version"
            del features[name]
    if not features:
        raise DataError(f"no usable feature columns besides the target '{target}' (dropped: {dropped or 'none'})")
    for name, feat in features.items():
        plan.append(Decision("column", f"column '{name}'", feat.type, feat.reason))
    for name, why in dropped.items():
        plan.append(Decision("column", f"column '{name}'", "dropped", why))

    arch = _architecture(df, cfg, features, task)
    if cfg.model.architecture != "auto" and cfg.model.reason:
        arch = Decision(arch.step, arch.subject, arch.choice, cfg.model.reason)
    plan.append(arch)

    resolved = cfg.model_copy(deep=True)
    resolved.task, resolved.task_reason = task, task_reason
    resolved.features, resolved.dropped = features, dropped
    resolved.model.architecture = arch.choice
    resolved.model.reason = arch.reason
    return resolved, plan


def _architecture(df: pd.DataFrame, cfg: WaypostConfig, features: dict[str, FeatureConfig], task: str) -> Decision:
    """Tabular columns alone: the registry's default for their kinds. One encoder column: its kind's
    choice (fused with the tabular columns by that model). Several: each column's encoder by its
    kind (kept in `features.<name>.encoder`), fused by the multi-column model's combiner."""
    from waypost.models.registry import choose_architecture, get

    encoded = [n for n, f in features.items() if get_kind(f.type).encoder]
    requested = cfg.model.architecture
    if not encoded:
        return choose_architecture({f.type for f in features.values()}, requested)
    if len(encoded) == 1:
        name = encoded[0]
        return get_kind(features[name].type).choose_encoder(df[name], task, cfg, features[name].encoder or requested)

    def asked(feat: FeatureConfig) -> str:
        """The column's own encoder, else a requested architecture that takes its kind, else auto."""
        if feat.encoder:
            return feat.encoder
        if requested not in ("auto", MULTI_COLUMN) and feat.type in get(requested).data_types:
            return requested
        return "auto"

    for name in encoded:
        feat = features[name]
        choice = get_kind(feat.type).choose_encoder(df[name], task, cfg, asked(feat))
        feat.encoder = choice.choice
        feat.encoder_reason = choice.reason
    from waypost.models.fusion import choose_combiner

    n_blocks = len(encoded) + (1 if len(encoded) < len(features) else 0)
    combiner, why = choose_combiner(n_blocks, cfg.model.combiner)
    shown = ", ".join(f"'{n}' -> {features[n].encoder}" for n in encoded)
    return Decision("architecture", "architecture", MULTI_COLUMN,
                    f"{len(encoded)} encoder columns ({shown}){' and the tabular columns' if n_blocks > len(encoded) else ''}"
                    f" fused into one network trained end to end; {combiner} combiner: {why}")
