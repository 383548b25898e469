"""The candidate parts of a fit, built only through the registry's factories.

Tabular tables: the architecture's parts (`blend` -> a GBM and the MLP; `lightgbm`, `xgboost`,
`mlp` -> that one). One encoder column: that column's model (its kind builds it; the column's
encoder comes from the registry inside it), fused with the tabular columns. Several encoder
columns: the multi-column model. Each candidate is (name, part, share of the time left, decisions
to add to the plan once it has trained).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from waypost.plan import Decision


@dataclass
class Candidate:
    name: str
    part: Any
    share: float = 1.0
    #: plan entries once the part has trained (it knows its epochs, rounds and seconds then)
    describe: Callable[[Any], list[Decision]] = lambda part: []
    #: skip it when less than this many seconds are left and another part is already trained
    min_seconds: float = 0.0


#: the part each single-model tabular architecture trains (`blend` names its parts: its factory)
TABULAR_PARTS = {"lightgbm": ("gbm",), "xgboost": ("gbm",), "mlp": ("mlp",)}


def candidates(cfg: Any, task: Any, n_classes: int, frame: Any, *, n_numeric: int = 0,
               class_names: list[Any] | None = None) -> list[Candidate]:
    """`n_numeric`: width of the tabular numeric view; `class_names`: the labels (image augmentation
    asks whether they sound orientation-sensitive)."""
    from waypost.kinds import get_kind
    from waypost.models.registry import get

    arch = cfg.model.architecture
    encoded = list(frame.columns)  # the encoder columns, in the table's order
    if not encoded:
        tab = frame.tabular
        names = get(arch).factory() if arch == "blend" else TABULAR_PARTS.get(arch)
        if names is None:
            from waypost.errors import ConfigError

            raise ConfigError(f"model.architecture {arch!r} is not a tabular architecture "
                              f"({sorted([*TABULAR_PARTS, 'blend'])})")
        out = []
        for name in names:
            if name == "gbm":
                library = arch if arch != "blend" else cfg.model.gbm.library
                part = get(library).factory(task=task.name, n_classes=n_classes, gbm=cfg.model.gbm,
                                            feature_names=tab.gbm_names_, categorical=tab.gbm_categorical_,
                                            seed=cfg.training.seed)
                out.append(Candidate("gbm", part, 0.5 if len(names) > 1 else 1.0, _gbm_notes))
            else:
                part = get("mlp").factory(task=task.name, n_classes=n_classes, cardinalities=tab.category_cardinalities_,
                                          mlp=cfg.model.mlp, training=cfg.training)
                out.append(Candidate("mlp", part, 1.0, lambda p: _network_notes("mlp", p, cfg), min_seconds=1.0))
        return out
    tabular = None
    if frame.tabular is not None:
        tabular = {"n_numeric": int(n_numeric), "cardinalities": frame.tabular.category_cardinalities_}
    common = {"task": task.name, "n_classes": n_classes, "training": cfg.training, "tabular": tabular,
              "mlp": cfg.model.mlp, "fusion_hidden": cfg.model.fusion_hidden}
    if len(encoded) == 1:
        name = encoded[0]
        kind = get_kind(cfg.features[name].type)
        part = kind.build_part(cfg, frame.columns[name], arch=arch, class_names=list(class_names or []), **common)
        fusion = []
        if tabular is not None:
            n_tab = len(cfg.features) - 1
            fusion.append(Decision(
                "architecture", "fusion", "concat",
                f"{kind.name} column '{name}' beside {n_tab} tabular column(s): the encoder's features and the MLP "
                f"encoder's (hidden {cfg.model.mlp.hidden}) are concatenated into a {cfg.model.fusion_hidden}-unit "
                "combiner, one network trained end to end"))
        return [Candidate(kind.name, part, 1.0, lambda p: fusion + _network_notes(kind.name, p, cfg))]
    columns = {n: get_kind(cfg.features[n].type).column_spec(cfg, frame.columns[n], cfg.features[n].encoder)
               for n in encoded}
    # "auto" resolves inside the model by the rule the plan quoted (`models.fusion.choose_combiner`)
    part = get("multi_column").factory(columns=columns, combiner=cfg.model.combiner, class_names=list(class_names or []), **common)
    return [Candidate("multi_column", part, 1.0, lambda p: _network_notes("multi_column", p, cfg))]


def _gbm_notes(gbm: Any) -> list[Decision]:
    notes = [Decision("training", "gbm", gbm.library, f"{gbm.best_iteration_} boosting rounds (early stopping on "
                      "validation)" + ("; restored from the checkpoint" if gbm.restored_ else ""))]
    if gbm.time_note_:
        notes.append(Decision("training", "gbm", "cut by time_limit", gbm.time_note_))
    return notes


def _network_notes(name: str, part: Any, cfg: Any) -> list[Decision]:
    fr = part.fit_
    notes: list[Decision] = []
    if name == "mlp":
        notes.append(part.loss_decision_)
        notes.append(Decision(
            "training", "mlp", f"{fr.epochs_run} epochs",
            f"best epoch {fr.best_epoch} restored; AdamW lr {cfg.training.learning_rate} "
            f"wd {cfg.training.weight_decay} ({cfg.training.schedule}), clip {cfg.training.grad_clip_norm}, "
            f"batch {part.batch_size_}, {fr.precision} on {fr.accelerator}, {fr.seconds:.1f}s"))
    else:
        notes += list(getattr(part, "decisions_", []))
        notes.append(Decision("training", name, f"{fr.epochs_run} epochs",
                              f"best epoch {fr.best_epoch} restored; batch {part.batch_size_}, {fr.precision} on "
                              f"{fr.accelerator}, {fr.seconds:.1f}s"))
    if fr.time_note:
        notes.append(Decision("training", name, "cut by time_limit", fr.time_note))
    if fr.restored:
        notes.append(Decision("training", name, "restored", "finished before the interruption; restored from the "
                              "checkpoint, not trained again"))
    elif fr.resumed_from is not None:
        notes.append(Decision("training", name, "resumed", f"continued from the checkpoint after epoch "
                              f"{fr.resumed_from + 1} (weights, optimizer, schedule, callbacks and RNG state)"))
    return notes
