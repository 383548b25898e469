"""One fit, top to bottom: read -> plan -> split -> preprocess every column through its kind ->
fit candidate parts -> ensemble/select -> track -> a `FittedModel`.

Every table takes this one path: tabular, one encoder column fused with the tabular ones, or several
encoder columns. What differs per data type is asked of its kind (`waypost.kinds`), what differs per
task of the task (`waypost.tasks`), and the parts come from the registry's factories
(`waypost.pipelines.candidates`). Tracking and the console are fit-level callbacks
(`waypost.pipelines.callbacks`), as are the user's.

Durability lives in `waypost.train`: the whole fit runs under an interrupt guard (SIGINT/SIGTERM
stop it at the next safe point with `FitInterrupted`; the tracker ends the run KILLED) and a
`FitSession` that carries the time budget and the checkpoint folder to every training loop.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from waypost.config import WaypostConfig
from waypost.pipelines.callbacks import Callbacks, ConsoleCallback, FitCallback, FitContext, TrackingCallback
from waypost.pipelines.commit import commit_model, open_session, run_tracker
from waypost.pipelines.fitted import FittedModel
from waypost.plan import Decision
from waypost.train import interrupt


def fit(cfg: WaypostConfig, train_data: Any, valid_data: Any | None = None, *, callbacks: list[FitCallback] = (),
        verbose: bool = True, resume: bool = False, save_to: Path | None = None,
        started: float | None = None) -> FittedModel:
    """Fit `cfg` on `train_data` (validation split off it unless `valid_data` is given). `resume`:
    continue from the checkpoint of an interrupted fit of the same config and data (needs
    `training.checkpoint_dir`). `save_to`: also write the model directory there, as part of the
    commit, so the time limit covers it and a signal cannot leave a registered model without its
    directory. `started`: when the caller's clock for `time_limit` started."""
    started = time.perf_counter() if started is None else started
    state: dict[str, Any] = {}
    with interrupt.interrupt_guard():
        try:
            return _fit(cfg, train_data, valid_data, list(callbacks), verbose, resume, save_to, started, state)
        except interrupt.FitInterrupted as exc:
            tracker, store = state.get("tracker"), state.get("store")
            exc.run_id = getattr(tracker, "run_id", None)
            if store is not None and store.exists():
                exc.checkpoint, exc.checkpoint_note = str(store.path), store.describe()
            raise


def _fit(cfg: WaypostConfig, train_data: Any, valid_data: Any | None, user_callbacks: list[FitCallback],
         verbose: bool, resume: bool, save_to: Path | None, started: float, state: dict[str, Any]) -> FittedModel:
    from waypost.data.io import read_table
    from waypost.data.target import TargetEncoder, drop_missing_target
    from waypost.kinds import get_kind
    from waypost.pipelines.plan import require_target, resolve_job
    from waypost.tasks import get_task
    from waypost.train.session import fit_session

    callbacks = Callbacks([ConsoleCallback(), *([TrackingCallback()] if cfg.tracking.enabled else []), *user_callbacks])
    # ---- read ---------------------------------------------------------------------------------
    train_df = read_table(train_data)
    valid_df = read_table(valid_data) if valid_data is not None else None
    require_target(train_df, cfg.target, "the training data")
    interrupt.check("reading the data")
    session = state["session"] = open_session(cfg, [train_df, valid_df], resume, save_to, started, verbose)
    state["store"] = session.checkpoints

    # ---- plan ---------------------------------------------------------------------------------
    train_df, n_missing_target = drop_missing_target(train_df, cfg.target)
    cfg, plan = resolve_job(train_df, cfg)
    if n_missing_target:
        plan.insert(0, Decision("data", f"target '{cfg.target}'", "dropped rows",
                                f"{n_missing_target} training rows have no target value"))
    if session.plan_note is not None:
        plan.append(session.plan_note)
    task = get_task(cfg.task)
    ctx = FitContext(cfg, plan, session=session, verbose=verbose)
    callbacks.on_plan(ctx)

    # ---- split --------------------------------------------------------------------------------
    from waypost.pipelines.train_parts import bagging_folds

    full_train = train_df
    tabular_only = not any(get_kind(f.type).encoder for f in cfg.features.values())
    folds, bag_reason = bagging_folds(cfg, len(train_df), tabular_only, valid_df is not None)
    if folds:
        plan.append(Decision("data", "validation", f"{folds}-fold bagging",
                             f"{bag_reason}; each part trains {folds} times, on {folds - 1} folds, early-stopping on the "
                             "fold it leaves out; the out-of-fold predictions (every row, once) fit the ensemble "
                             f"weights, and the model averages the {folds} fold models of each part"))
    elif valid_df is None:
        from waypost.data.split import split_frame

        train_df, valid_df = split_frame(train_df, cfg.target, task.name, cfg.data.valid_fraction, cfg.training.seed)
        plan.append(Decision("data", "validation", f"{len(valid_df)} rows",
                             f"{cfg.data.valid_fraction:.0%} of the training data held out (stratified on "
                             f"{task.split_reason()}) for early stopping, blending and selection"
                             + (f"; not bagged: {bag_reason}" if bag_reason else "")))
    else:
        require_target(valid_df, cfg.target, "the validation data")
        valid_df, _ = drop_missing_target(valid_df, cfg.target)
        plan.append(Decision("data", "validation", f"{len(valid_df)} rows", "given by the caller"
                             + (f"; {bag_reason}" if bag_reason else "")))

    with fit_session(session):
        # ---- preprocess every column through its kind ---------------------------------------------
        frame, train_df, valid_df, x_train, x_valid = _preprocess(cfg, plan, train_df, valid_df)
        encoder = TargetEncoder(task.name).fit(train_df[cfg.target])
        y_train = encoder.transform(train_df[cfg.target])
        y_valid = encoder.transform(valid_df[cfg.target]) if valid_df is not None else None
        n_classes = len(encoder.classes_) if task.is_classification else 0
        interrupt.check("preprocessing")

        tracker = state["tracker"] = run_tracker(cfg, session.checkpoints.run_id if session.checkpoints else None)
        with tracker:
            if session.checkpoints is not None:  # so the next resume can continue this run too
                session.checkpoints.bind_run(tracker.run_id, getattr(tracker, "tracking_uri", None))
            ctx.tracker = tracker
            ctx.data.update(train_rows=len(train_df), valid_rows=len(valid_df) if valid_df is not None else 0,
                            folds=folds, features=len(cfg.features))
            callbacks.on_fit_start(ctx)

            # ---- fit the candidate parts ----------------------------------------------------------
            from waypost.pipelines.candidates import candidates
            from waypost.pipelines.train_parts import fold_indices, fold_splits, holdout_split, train_parts

            tabular = getattr(x_train, "tabular", x_train)  # FrameInputs' views, or the TabularArrays themselves
            n_numeric = int(tabular.numeric.shape[1]) if frame.tabular is not None else 0
            class_names = list(encoder.classes_) if task.is_classification else None

            def make(fold: int) -> list[Any]:  # fresh parts; the plan hears about them once
                return candidates(cfg, task, n_classes, frame, n_numeric=n_numeric, class_names=class_names,
                                  plan=plan if fold == 0 else None, n_folds=folds)

            if folds:
                splits = fold_splits(x_train, y_train, fold_indices(task, train_df[cfg.target], folds, cfg.training.seed))
                y_valid = y_train  # scored out of fold: every training row
            else:
                splits = holdout_split(x_train, y_train, x_valid, y_valid)
            trained = train_parts(ctx, callbacks, task, make, splits, y_valid)
            parts, raws, scores = trained.parts, trained.raws, trained.scores
            network = next((p for p in parts.values() if hasattr(p, "fit_")), None)  # the trained network, if any
            for name, pre in frame.columns.items():
                get_kind(pre.kind).after_fit(pre, network, name)

            # ---- ensemble / select ------------------------------------------------------------------
            from waypost.ensemble.greedy import combine, fit_weights, selection
            from waypost.ensemble.stack import maybe_stack

            family_weights, loss = fit_weights(task, raws, y_valid)
            if len(raws) > 1:  # the ensemble's own validation loss (equal to its best part's when it keeps one)
                scores["blend"] = loss
            choice = selection(task, scores, family_weights)
            plan.append(choice)
            valid_raw = combine(raws, family_weights)
            weights = trained.part_weights(family_weights)  # fold models share their family's weight
            selected = choice.choice if len(weights) == 1 else "blend"
            stack = maybe_stack(cfg, task, n_classes, frame.tabular.category_cardinalities_ if frame.tabular else [],
                                trained, x_train, y_valid, [s.held for s in splits] if folds else [], loss, plan)
            if stack is not None:  # the level-2 model replaces the weighted sum; it runs the parts itself
                parts, weights, selected = {**parts, "stack": stack}, {"stack": 1.0}, "stack"
                scores["stack"], valid_raw = stack.loss_, stack.oof_raw_
            threshold, why = task.choose_threshold(y_valid, valid_raw, cfg.model.decision)
            if threshold is not None:  # travels in the target codec: predict, the runtime and the server apply it
                encoder.threshold_ = threshold
                plan.append(Decision("decision", "threshold", f"{threshold:.4f}", why))

            # ---- the fitted model -------------------------------------------------------------------
            from waypost.track.lineage import collect_lineage

            source = train_data if isinstance(train_data, (str, Path)) else None
            lineage = {**collect_lineage(_digest_frame(full_train, cfg), source), "mlflow_run_id": tracker.run_id,
                       "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None)}
            model = FittedModel(
                config=cfg, task=task.name, target=cfg.target, features={n: f.type for n, f in cfg.features.items()},
                preprocessor=frame, target_encoder=encoder, parts=_kept_parts(parts, weights), weights=weights,
                selected=selected, plan=plan, validation_metrics=task.metrics(y_valid, valid_raw, encoder),
                validation_scores=scores, history=network.fit_.history if network is not None else {},
                lineage=lineage)
            ctx.data.update(valid_raw=valid_raw, y_valid=y_valid)
            callbacks.on_fit_end(ctx, model)
            model.registered_model = commit_model(model, tracker, save_to, verbose)
    if session.checkpoints is not None:  # the fit succeeded: its checkpoint is no longer needed
        session.checkpoints.remove()
    return model


def _preprocess(cfg: WaypostConfig, plan: list[Decision], train_df: Any, valid_df: Any) -> tuple[Any, ...]:
    """(FramePreprocessor, train rows, validation rows, their inputs): each encoder column's
    preprocessor fitted by its kind, then the kind's row augmentation (after fitting, so the
    preprocessing describes real rows; never the validation rows), then the tabular preprocessor on
    every training row (a bad image does not make its other columns wrong); rows a kind's policy
    skips are dropped from every view at once."""
    from waypost.data.frame_preprocess import FramePreprocessor
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.kinds import get_kind

    columns, policies = {}, {}
    for name, feat in cfg.features.items():
        kind = get_kind(feat.type)
        if not kind.encoder:
            continue
        arch = feat.encoder or cfg.model.architecture
        pre = kind.fit_preprocessor(cfg, name, train_df[name], arch)
        plan.insert(1, pre.decision_)
        columns[name] = pre
        policies[name] = kind.bad_cell_policy(cfg)
    for name, pre in columns.items():
        train_df = get_kind(pre.kind).augment_rows(train_df, name, cfg, plan)
    tabular = {n: f.type for n, f in cfg.features.items() if not get_kind(f.type).encoder}
    frame = FramePreprocessor(columns, TabularPreprocessor(tabular).fit(train_df) if tabular else None)
    x_train, kept_tr, skipped_tr = frame.transform_rows(train_df, policies)
    x_valid, kept_va, skipped_va = frame.transform_rows(valid_df, policies) if valid_df is not None else (None, None, [])
    skipped = skipped_tr + skipped_va
    if skipped:
        first = skipped[0]
        plan.append(Decision("data", f"column '{first['column']}'", f"{len(skipped)} skipped",
                             f"on_bad_image: skip; first: row {first['row']}: {first['reason']}"))
        train_df = train_df.iloc[kept_tr]
        valid_df = valid_df.iloc[kept_va] if valid_df is not None else None
    return frame, train_df, valid_df, x_train, x_valid


def _kept_parts(parts: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """The weighted parts, plus any part one of them reads at predict time (its `reads`: the column
    GBM computes its features with the network, which stays in the model even at weight 0; the stack
    runs every fold model)."""
    from waypost.models.parts import read_parts

    names = list(weights)
    for name in weights:
        names += [n for n in read_parts(parts[name]) if n not in names]
    return {n: parts[n] for n in names}


def _digest_frame(df: Any, cfg: WaypostConfig) -> Any:
    """The training table with each encoder column's cells replaced by its kind's digest key
    (arrays and bytes by content hash): what the data digest is computed on."""
    from waypost.kinds import get_kind

    keys = {n: get_kind(f.type).digest_key for n, f in cfg.features.items() if get_kind(f.type).encoder}
    return df.assign(**{n: df[n].map(key) for n, key in keys.items()}) if keys else df


__all__ = ["fit", "FittedModel"]
