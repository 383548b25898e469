"""The candidate parts of a fit, built only through the registry's factories.

Tabular tables: the architecture's parts (`blend` -> the preset's or `model.parts`' list: a GBM
and the MLP, plus the linear model and the forests; `lightgbm`, `xgboost`, `mlp`, `linear`,
`extra_trees`, `random_forest` -> that one). One encoder column: that column's model (its kind builds it; the column's
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
TABULAR_PARTS = {"entity_gbm": ("mlp", "entity_gbm"), "lightgbm": ("gbm",), "xgboost": ("gbm",), "mlp": ("mlp",), "linear": ("linear",),
                 "catboost": ("catboost",), "extra_trees": ("extra_trees",), "random_forest": ("random_forest",)}
#: per tabular part: the share of the time left it may use when others train too (the session's
#: `part(share=...)`; the MLP, trained last, takes what is left) and the seconds below which it is
#: skipped once another part has trained
_BUDGET = {"gbm": (0.5, 0.0), "lightgbm": (0.5, 0.0), "xgboost": (0.5, 0.0), "catboost": (0.4, 2.0),
           "linear": (0.1, 1.0), "extra_trees": (0.2, 2.0), "random_forest": (0.2, 2.0), "mlp": (1.0, 1.0),
           "entity_gbm": (1.0, 1.0)}
#: the MLP's share when the entity-embedding GBM still has to train after it
MLP_SHARE_BEFORE_ENTITY = 0.7


def _registry_name(name: str, cfg: Any) -> str:
    """The registry entry a tabular part is built by: "gbm" is the GBM the architecture names, or
    `model.gbm.library`."""
    if name != "gbm":
        return name
    arch = cfg.model.architecture
    return arch if arch in ("lightgbm", "xgboost") else cfg.model.gbm.library


def tabular_part_names(cfg: Any) -> tuple[str, ...]:
    """The tabular candidates of `cfg.model.architecture`, in training order (`PART_NAMES`: cheap
    parts first, the MLP last); a ConfigError names the tabular architectures when it is none."""
    from waypost.ensemble.greedy import PART_NAMES
    from waypost.models.registry import get

    arch = cfg.model.architecture
    names = get(arch).factory(cfg) if arch == "blend" else TABULAR_PARTS.get(arch)
    if names is None:
        from waypost.errors import ConfigError

        raise ConfigError(f"model.architecture {arch!r} is not a tabular architecture "
                          f"({sorted([*TABULAR_PARTS, 'blend'])})")
    return tuple(sorted(names, key=PART_NAMES.index))


def _gbm_kwargs(cfg: Any, tab: Any) -> dict[str, Any]:
    """What a GBM part reads: model.gbm and the GBM view's names and categorical columns."""
    return {"gbm": cfg.model.gbm, "feature_names": tab.gbm_names_, "categorical": tab.gbm_categorical_,
            "seed": cfg.training.seed}


def _part_kwargs(name: str, cfg: Any, tab: Any, n_folds: int) -> dict[str, Any]:
    """What the part's registry factory takes beyond the task: the views it reads and its settings."""
    if name in ("gbm", "lightgbm", "xgboost"):
        return _gbm_kwargs(cfg, tab)
    if name == "entity_gbm":  # a GBM subclass: the library is model.gbm's, not a registry name's
        return {**_gbm_kwargs(cfg, tab), "library": cfg.model.gbm.library}
    if name == "mlp":
        return {"cardinalities": tab.category_cardinalities_, "mlp": cfg.model.mlp, "training": cfg.training}
    if name == "linear":
        return {"cardinalities": tab.category_cardinalities_}
    if name == "catboost":
        return {"seed": cfg.training.seed}
    from waypost.models.forest import N_TREES  # the forests: bagged, each fold model holds its share of the trees

    return {"seed": cfg.training.seed, "n_trees": max(20, N_TREES // n_folds) if n_folds else N_TREES}


def _tabular_candidates(cfg: Any, task: Any, n_classes: int, tab: Any, plan: list[Decision],
                        n_folds: int = 0) -> list[Candidate]:
    from waypost.models.registry import get

    names = _entity_check(tabular_part_names(cfg), tab, plan)
    if len(names) > 1:
        why = "model.parts in the config" if cfg.model.parts != "auto" else f"preset {cfg.preset}"
        plan.append(Decision("architecture", "ensemble parts", ", ".join(names),
                             f"{why}; each trains on the same rows and the greedy ensemble weighs them on validation: "
                             + "; ".join(f"{n}: {get(_registry_name(n, cfg)).reason}" for n in names)))
    out = []
    for name in names:
        part = get(_registry_name(name, cfg)).factory(task=task.name, n_classes=n_classes,
                                                      **_part_kwargs(name, cfg, tab, n_folds))
        share, min_seconds = _BUDGET[name]
        if name == "mlp" and "entity_gbm" in names:
            share = MLP_SHARE_BEFORE_ENTITY
        describe = (lambda p: _network_notes("mlp", p, cfg)) if name == "mlp" else _NOTES[type(part).kind]
        out.append(Candidate(name, part, share if len(names) > 1 else 1.0, describe, min_seconds=min_seconds))
    return out


#: a column network's share of the time when the GBM on its embeddings still has to train after it
COLUMN_NET_SHARE = 0.85


def _column_gbm(cfg: Any, task: Any, n_classes: int, frame: Any, family: str, column: str,
                plan: list[Decision] | None) -> list[Candidate]:
    """The GBM on the tabular columns + the network's embedding of `column` (`model.column_gbm`: auto
    = preset best), when the table has tabular columns to give it."""
    asked = cfg.model.column_gbm
    if frame.tabular is None or asked is False or (asked == "auto" and cfg.preset != "best"):
        return []
    from waypost.models.registry import get

    entry = get("column_gbm")
    if not entry.available():
        return []
    part = entry.factory(uses=family, column=column, task=task.name, n_classes=n_classes,
                         library=cfg.model.gbm.library, **_gbm_kwargs(cfg, frame.tabular))
    if plan is not None:
        why = "model.column_gbm: true" if asked is True else "preset best"
        plan.append(Decision("architecture", "column_gbm", cfg.model.gbm.library, f"{why}; {entry.reason}"))
    return [Candidate("column_gbm", part, 1.0, _column_gbm_notes, min_seconds=1.0)]


def _column_gbm_notes(part: Any) -> list[Decision]:
    notes = [Decision("training", "column_gbm", f"{part.library}, {part.best_iteration_} rounds",
                      f"the GBM view + {len(part.pca_components_)} principal components of the {part.uses} network's "
                      f"'{part.column}' features ({part.explained_:.0%} of their variance, PCA fitted on the training "
                      "rows); early stopping on validation")]
    if part.time_note_:
        notes.append(Decision("training", "column_gbm", "cut by time_limit", part.time_note_))
    return notes


def _entity_check(names: tuple[str, ...], tab: Any, plan: list[Decision]) -> tuple[str, ...]:
    """`entity_gbm` reads the MLP's embeddings of category columns with more than two levels: a
    ConfigError when the MLP is not listed, left out (with a plan note) when no column qualifies."""
    if "entity_gbm" not in names:
        return names
    if "mlp" not in names:
        from waypost.errors import ConfigError

        raise ConfigError("model.parts: entity_gbm reads the MLP's category embeddings; list 'mlp' too")
    from waypost.models.entity_gbm import MIN_ROWS, useful_columns

    if useful_columns(tab.category_cardinalities_):
        return names
    plan.append(Decision("architecture", "entity_gbm", "left out",
                         f"no category column with more than {MIN_ROWS - 2} levels: an embedding of a binary code "
                         "adds nothing a tree cannot split on the code itself"))
    return tuple(n for n in names if n != "entity_gbm")


def candidates(cfg: Any, task: Any, n_classes: int, frame: Any, *, n_numeric: int = 0,
               class_names: list[Any] | None = None, plan: list[Decision] | None = None,
               n_folds: int = 0) -> list[Candidate]:
    """`n_numeric`: width of the tabular numeric view; `class_names`: the labels (image augmentation
    asks whether they sound orientation-sensitive); `plan`: where the choice of parts is written;
    `n_folds`: the bagging folds each candidate is trained for (0: one holdout fit)."""
    from waypost.kinds import get_kind
    from waypost.models.registry import get

    arch = cfg.model.architecture
    encoded = list(frame.columns)  # the encoder columns, in the table's order
    if not encoded:
        return _tabular_candidates(cfg, task, n_classes, frame.tabular, plan if plan is not None else [], n_folds)
    tabular = None
    if frame.tabular is not None:
        tabular = {"n_numeric": int(n_numeric), "cardinalities": frame.tabular.category_cardinalities_}
    common = {"task": task.name, "n_classes": n_classes, "training": cfg.training, "tabular": tabular,
              "mlp": cfg.model.mlp, "fusion_hidden": cfg.model.fusion_hidden}
    if len(encoded) == 1:
        name = encoded[0]
        kind = get_kind(cfg.features[name].type)
        part = kind.build_part(cfg, frame.columns[name], arch=arch, class_names=list(class_names or []), **common)
        hybrid = _column_gbm(cfg, task, n_classes, frame, kind.name, name, plan)
        fusion = []
        if tabular is not None:
            n_tab = len(cfg.features) - 1
            fusion.append(Decision(
                "architecture", "fusion", "concat",
                f"{kind.name} column '{name}' beside {n_tab} tabular column(s): the encoder's features and the MLP "
                f"encoder's (hidden {cfg.model.mlp.hidden}) are concatenated into a {cfg.model.fusion_hidden}-unit "
                "combiner, one network trained end to end"))
        network = Candidate(kind.name, part, COLUMN_NET_SHARE if hybrid else 1.0,
                            lambda p: fusion + _network_notes(kind.name, p, cfg))
        return [network, *hybrid]
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


def _linear_notes(part: Any) -> list[Decision]:
    from waypost.models.linear import STRENGTHS

    what = "logistic regression, C" if part.classifier else "ridge regression, alpha"
    value = 1.0 / part.strength_ if part.classifier else part.strength_
    return [Decision("training", "linear", f"{what} {value:g}",
                     f"the penalty with the lowest validation loss of {len(STRENGTHS)} tried")]


def _catboost_notes(part: Any) -> list[Decision]:
    notes = [Decision("training", "catboost", f"{part.best_iteration_} rounds",
                      f"early stopping on validation; {part.n_nodes_} nodes, {part.seconds_:.1f}s")]
    if part.time_note_:
        notes.append(Decision("training", "catboost", "cut by time_limit", part.time_note_))
    return notes


def _entity_notes(part: Any) -> list[Decision]:
    widths = ", ".join(str(t.shape[1]) for t in part.tables_)
    notes = [Decision("training", "entity_gbm", f"{part.library}, {part.best_iteration_} rounds",
                      f"the GBM view + {part.n_embedded} embedding features ({len(part.tables_)} category column(s), "
                      f"widths {widths}) from the MLP trained on the same rows; early stopping on validation")]
    if part.time_note_:
        notes.append(Decision("training", "entity_gbm", "cut by time_limit", part.time_note_))
    return notes


def _forest_notes(part: Any) -> list[Decision]:
    return [Decision("training", part.variant, f"{part.n_trees} trees",
                     f"at most {part.max_leaves} leaves each ({part.n_nodes_} nodes in all), {part.seconds_:.1f}s")]


#: part kind -> the plan entries it adds once trained (the MLP's need the config: `_network_notes`)
_NOTES: dict[str, Callable[[Any], list[Decision]]] = {
    "gbm": _gbm_notes, "linear": _linear_notes, "catboost": _catboost_notes, "forest": _forest_notes,
    "entity_gbm": _entity_notes}


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
