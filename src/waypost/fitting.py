"""One fit, top to bottom: read -> plan -> split -> preprocess -> train parts -> blend/select -> track.

Kept apart from `Predictor` so the API class stays a thin, readable surface. Durability lives in
`waypost.train`: the whole fit runs under an interrupt guard (SIGINT/SIGTERM stop it at the next
safe point with `FitInterrupted`; the tracker ends the run KILLED) and a `FitSession` that carries
the time budget and the checkpoint folder to every training loop.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from waypost import __version__
from waypost.config import WaypostConfig
from waypost.errors import ConfigError, ModelFileError
from waypost.plan import Decision
from waypost.train import interrupt

GBM_ARCHS = ("lightgbm", "xgboost")


def _console(predictor: Any, message: str) -> None:
    if predictor.verbose:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(message)  # one line, never wrapped


def run_tracker(cfg: WaypostConfig, resume_run_id: str | None = None) -> Any:
    """The MLflow run of one fit (or a no-op tracker with tracking off), named and tagged;
    `resume_run_id` continues an interrupted run (see MlflowTracker)."""
    from waypost.track.tracker import make_tracker

    return make_tracker(
        cfg.tracking.enabled, experiment=cfg.tracking.experiment, tracking_uri=cfg.tracking.uri,
        run_name=f"{cfg.registered_model_name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"waypost.version": __version__, "waypost.task": cfg.task, "waypost.target": cfg.target},
        **({"resume_run_id": resume_run_id} if cfg.tracking.enabled else {}),
    )


def fit_predictor(predictor: Any, train_data: Any, valid_data: Any | None, *, resume: bool = False,
                  save_to: Path | None = None, started: float | None = None) -> None:
    """Fit `predictor` in place. `resume`: continue from the checkpoint of an interrupted fit of the
    same config and data (needs `training.checkpoint_dir`). `save_to`: also write the model directory
    there, as part of the commit (the CLI's runs/<name>), so the time limit covers it and a signal
    cannot leave a registered model without its directory. `started`: when the caller's clock for
    `time_limit` started (the CLI starts it before reading the config)."""
    started = time.perf_counter() if started is None else started
    state: dict[str, Any] = {}
    with interrupt.interrupt_guard():
        try:
            _fit(predictor, train_data, valid_data, resume, save_to, started, state)
        except interrupt.FitInterrupted as exc:
            tracker, store = state.get("tracker"), state.get("store")
            exc.run_id = getattr(tracker, "run_id", None)
            if store is not None and store.exists():
                exc.checkpoint, exc.checkpoint_note = str(store.path), store.describe()
            raise


def _open_session(predictor: Any, cfg: WaypostConfig, frames: list[Any], resume: bool, save_to: Path | None,
                  started: float) -> Any:
    """The fit's time budget and (with `training.checkpoint_dir`) its checkpoint folder."""
    from waypost.track.lineage import dataframe_digest
    from waypost.train.checkpoint import CheckpointStore, fit_key
    from waypost.train.session import FitSession, TimeBudget

    store, plan_note = None, None
    if cfg.training.checkpoint_dir:
        digests = [None if f is None else dataframe_digest(f) for f in frames]
        store = CheckpointStore(cfg.training.checkpoint_dir, fit_key(cfg.to_dict(), digests, __version__), cfg.target)
        note = store.open(resume=resume)
        if note:  # one line, and in the plan (so `--quiet` and the manifest have it too)
            _console(predictor, note)
            plan_note = Decision("training", "checkpoint", "resumed" if store.resumed else "fresh", note)
    elif resume:
        raise ConfigError("resume=True needs training.checkpoint_dir (the folder the interrupted fit checkpointed "
                          "into); `waypost train` uses .waypost/checkpoints")
    return FitSession(TimeBudget(cfg.training.time_limit, started), store, tracked=cfg.tracking.enabled,
                      saves=2 if save_to is not None else 1, plan_note=plan_note)


def _fit(predictor: Any, train_data: Any, valid_data: Any | None, resume: bool, save_to: Path | None,
         started: float, state: dict[str, Any]) -> None:
    from waypost.data.io import read_table
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.target import TargetEncoder, drop_missing_target
    from waypost.metrics import raw_metrics
    from waypost.planning import require_target, resolve_job
    from waypost.train.session import fit_session

    cfg: WaypostConfig = predictor.make_config()
    train_df = read_table(train_data)
    valid_df = read_table(valid_data) if valid_data is not None else None
    require_target(train_df, cfg.target, "the training data")
    interrupt.check("reading the data")
    session = state["session"] = _open_session(predictor, cfg, [train_df, valid_df], resume, save_to, started)
    state["store"] = session.checkpoints

    train_df, n_missing_target = drop_missing_target(train_df, cfg.target)
    cfg, plan = resolve_job(train_df, cfg)
    if n_missing_target:
        plan.insert(0, Decision("data", f"target '{cfg.target}'", "dropped rows",
                                f"{n_missing_target} training rows have no target value"))
    if session.plan_note is not None:
        plan.append(session.plan_note)
    task = cfg.task
    assert task is not None
    if valid_df is None:
        full_train = train_df
        from waypost.data.split import split_frame

        train_df, valid_df = split_frame(train_df, cfg.target, task, cfg.data.valid_fraction, cfg.training.seed)
        plan.append(Decision("data", "validation", f"{len(valid_df)} rows",
                             f"{cfg.data.valid_fraction:.0%} of the training data held out "
                             f"(stratified on the {'class' if task != 'regression' else 'target deciles'}) "
                             "for early stopping, blending and selection"))
    else:
        full_train = train_df
        require_target(valid_df, cfg.target, "the validation data")
        valid_df, _ = drop_missing_target(valid_df, cfg.target)
        plan.append(Decision("data", "validation", f"{len(valid_df)} rows", "given by the caller"))

    from waypost.fitting_column import COLUMN_KINDS, fit_column_predictor

    with fit_session(session):
        if any(f.type in COLUMN_KINDS for f in cfg.features.values()):
            fit_column_predictor(predictor, cfg, plan, train_df, valid_df, full_train, train_data, state, save_to)
            _finish(session)
            return

        features = {name: f.type for name, f in cfg.features.items()}
        target_encoder = TargetEncoder(task).fit(train_df[cfg.target])
        y_train = target_encoder.transform(train_df[cfg.target])
        y_valid = target_encoder.transform(valid_df[cfg.target])
        preprocessor = TabularPreprocessor(features).fit(train_df)
        a_train, a_valid = preprocessor.transform(train_df), preprocessor.transform(valid_df)
        n_classes = 0 if task == "regression" else len(target_encoder.classes_)
        interrupt.check("preprocessing")

        tracker = state["tracker"] = fit_tracker(cfg, session)
        with tracker:
            bind_run(session, tracker)
            tracker.log_params({"config": cfg.to_dict()})
            tracker.log_params({"data": {"train_rows": len(train_df), "valid_rows": len(valid_df),
                                         "features": len(features)}})
            parts, scores, val_raw = {}, {}, {}
            arch = cfg.model.architecture
            if arch in ("blend", *GBM_ARCHS):
                from waypost.models.gbm import GBMModel

                library = arch if arch in GBM_ARCHS else cfg.model.gbm.library
                _console(predictor, f"[bold]training[/] {library} on {len(train_df)} rows")
                gbm = GBMModel(task=task, n_classes=n_classes, library=library, gbm=cfg.model.gbm,
                               feature_names=preprocessor.gbm_names_, categorical=preprocessor.gbm_categorical_,
                               seed=cfg.training.seed)
                with session.part("gbm", share=0.5 if arch == "blend" else 1.0):
                    parts["gbm"] = gbm.fit(a_train, y_train, a_valid, y_valid, tracker=tracker)
                plan.append(Decision("training", "gbm", library,
                                     f"{gbm.best_iteration_} boosting rounds (early stopping on validation)"
                                     + ("; restored from the checkpoint" if gbm.restored_ else "")))
                if gbm.time_note_:
                    plan.append(Decision("training", "gbm", "cut by time_limit", gbm.time_note_))
                interrupt.check("after the gbm")
            if arch in ("blend", "mlp"):
                from waypost.models.tabular_mlp import MLPModel

                limit = cfg.training.time_limit
                with session.part("mlp"):
                    left = session.deadline_for(0)
                if left is not None and left - time.perf_counter() <= 1.0 and parts:
                    plan.append(Decision("training", "mlp", "skipped", f"time_limit of {limit:.0f}s used up by the GBM"))
                else:
                    mlp = MLPModel(task=task, n_classes=n_classes, cardinalities=preprocessor.category_cardinalities_,
                                   mlp=cfg.model.mlp, training=cfg.training)
                    with session.part("mlp"):
                        parts["mlp"] = mlp.fit(a_train, y_train, a_valid, y_valid, tracker=tracker,
                                               verbose=predictor.verbose)
                    fr = mlp.fit_
                    plan.append(mlp.loss_decision_)
                    plan.append(Decision(
                        "training", "mlp", f"{fr.epochs_run} epochs",
                        f"best epoch {fr.best_epoch} restored; AdamW lr {cfg.training.learning_rate} "
                        f"wd {cfg.training.weight_decay} ({cfg.training.schedule}), clip {cfg.training.grad_clip_norm}, "
                        f"batch {mlp.batch_size_}, {fr.precision} on {fr.accelerator}, {fr.seconds:.1f}s"))
                    plan.extend(fit_notes("mlp", fr))
                    interrupt.check("after the mlp")

            from waypost.ensemble.blend import BlendModel, fit_blend_weight, select, validation_loss

            for name, part in parts.items():
                val_raw[name] = part.predict_raw(a_valid)
                scores[name] = validation_loss(task, val_raw[name], y_valid)
            weight = None
            if len(parts) == 2:
                weight, scores["blend"] = fit_blend_weight(task, val_raw["gbm"], val_raw["mlp"], y_valid)
            selection = select(task, scores, weight)
            plan.append(selection)
            selected = selection.choice
            if selected == "blend":
                model = BlendModel(parts, {"gbm": weight, "mlp": 1.0 - weight})
            else:
                model = BlendModel({selected: parts[selected]}, {selected: 1.0})
                parts = {selected: parts[selected]}

            predictor.config_, predictor.plan_, predictor.task_, predictor.target_ = cfg, plan, task, cfg.target
            predictor.features_ = features
            predictor.preprocessor_, predictor.target_encoder_ = preprocessor, target_encoder
            predictor.model_, predictor.parts_, predictor.selected_ = model, parts, selected
            predictor.blend_weights_ = model.weights
            predictor.validation_scores_ = scores
            mlp_part = parts.get("mlp")
            predictor.history_ = mlp_part.fit_.history if mlp_part is not None else {}
            # the selected model's validation output, from the part predictions already in hand
            valid_raw = model.combine(val_raw)
            predictor.validation_metrics_ = raw_metrics(predictor, valid_raw, y_valid)

            from waypost.track.lineage import collect_lineage

            source = train_data if isinstance(train_data, (str, Path)) else None
            predictor.lineage_ = {**collect_lineage(full_train, source), "mlflow_run_id": tracker.run_id,
                                  "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None)}
            predictor.registered_model_ = None
            _log_run(predictor, tracker, valid_raw, y_valid, mlp_part)
            commit_model(predictor, tracker, save_to)
            _console(predictor, f"[bold green]selected[/] {selected}: {selection.reason}")
        _finish(session)


def fit_tracker(cfg: WaypostConfig, session: Any) -> Any:
    """The fit's tracker; when resuming from a checkpoint it continues the interrupted run."""
    store = session.checkpoints
    return run_tracker(cfg, resume_run_id=store.run_id if store is not None else None)


def bind_run(session: Any, tracker: Any) -> None:
    """Remember the run in the checkpoint folder, so the next resume can continue it too."""
    if session.checkpoints is not None:
        session.checkpoints.bind_run(tracker.run_id, getattr(tracker, "tracking_uri", None))


def fit_notes(part: str, fit: Any) -> list[Decision]:
    """Plan entries for what the time limit cut short and what came back from a checkpoint."""
    notes = []
    if fit.time_note:
        notes.append(Decision("training", part, "cut by time_limit", fit.time_note))
    if fit.restored:
        notes.append(Decision("training", part, "restored", "finished before the interruption; restored from the "
                              "checkpoint, not trained again"))
    elif fit.resumed_from is not None:
        notes.append(Decision("training", part, "resumed", f"continued from the checkpoint after epoch "
                              f"{fit.resumed_from + 1} (weights, optimizer, schedule, callbacks and RNG state)"))
    return notes


def _finish(session: Any) -> None:
    """The fit succeeded: its checkpoint is no longer needed."""
    if session.checkpoints is not None:
        session.checkpoints.remove()


def commit_model(predictor: Any, tracker: Any, save_to: Path | None) -> None:
    """The point of no return: log + register the model in MLflow, then write `save_to`.

    Before it, SIGINT/SIGTERM still stop the fit (the run ends KILLED, nothing registered); from
    here on a signal waits (`interrupt.commit`), because stopping half-way would leave a registered
    version of a KILLED run or a registered model without its directory."""
    interrupt.check("logging the run")
    interrupt.commit()
    with interrupt.critical():
        if tracker.run_id is not None:
            with tempfile.TemporaryDirectory(prefix="waypost-model-") as tmp:
                model_dir = save_predictor(predictor, Path(tmp) / "model")
                info = tracker.log_model(model_dir, predictor.config_.registered_model_name)
            predictor.registered_model_ = info
            _console(predictor, f"[bold]tracked[/] run {tracker.run_id}; registered "
                     f"{info.get('registered_model')} v{info.get('version')}")
        if save_to is not None:
            save_predictor(predictor, Path(save_to))
    from waypost.train.session import mark_committed

    mark_committed(tracker.run_id is not None)


def _log_run(predictor: Any, tracker: Any, raw: np.ndarray, y_valid: np.ndarray, part: Any) -> None:
    """`raw`: the model's validation output (probabilities, or standardised values); `part`: the
    network whose weight histograms to keep (None for a GBM). Interruptible between artifacts;
    the model itself is logged by `commit_model`."""
    if tracker.run_id is None:
        return
    from waypost.track import plots

    cfg = predictor.config_
    tracker.log_metrics({f"val_{k}": v for k, v in predictor.validation_metrics_.items()})
    tracker.log_metrics({f"val_score_{k}": v for k, v in predictor.validation_scores_.items()})
    tracker.log_dict([d.to_dict() for d in predictor.plan_], "plan.json")
    tracker.log_text(cfg.to_yaml(), "waypost.yaml")
    tracker.log_dict(predictor.lineage_, "lineage.json")
    tracker.set_tags({"waypost.selected": predictor.selected_,
                      "waypost.data_digest": predictor.lineage_.get("data_digest", "")})
    interrupt.check("logging the run")
    if predictor.history_:
        tracker.log_figure(plots.learning_curves(predictor.history_), "plots/learning_curves.png")
    if part is not None and part.fit_.weight_histograms:
        tracker.log_dict(part.fit_.weight_histograms, "weight_histograms.json")
    if predictor.task_ == "regression":
        y_true = predictor.target_encoder_.inverse_transform(y_valid)
        tracker.log_figure(plots.residuals_figure(y_true, predictor._decode(raw)), "plots/residuals.png")
    else:
        labels = [str(c) for c in predictor.classes_]
        tracker.log_figure(plots.confusion_matrix_figure(y_valid, raw.argmax(1), labels), "plots/confusion_matrix.png")
        interrupt.check("logging the run")
        tracker.log_figure(plots.roc_figure(y_valid, raw, labels), "plots/roc.png")
    gbm = predictor.parts_.get("gbm")
    if gbm is not None:
        imp = gbm.feature_importance()
        tracker.log_figure(plots.feature_importance_figure(list(imp), list(imp.values())), "plots/gbm_importance.png")


# ---- persistence -----------------------------------------------------------------------------
def save_predictor(predictor: Any, path: Path) -> Path:
    from waypost.persistence import atomic_directory, write_manifest

    with atomic_directory(path) as tmp:
        parts = {name: part.save(tmp) for name, part in predictor.parts_.items()}
        write_manifest(tmp, {
            "waypost_version": __version__,
            "target": predictor.target_,
            "task": predictor.task_,
            "features": predictor.features_,
            "config": predictor.config_.to_dict(),
            "preprocessor": predictor.preprocessor_.to_state(),
            "target_encoder": predictor.target_encoder_.to_state(),
            "selected": predictor.selected_,
            "blend_weights": predictor.blend_weights_,
            "parts": parts,
            "plan": [d.to_dict() for d in predictor.plan_],
            "validation_metrics": predictor.validation_metrics_,
            "validation_scores": predictor.validation_scores_,
            "history": predictor.history_,
            "lineage": predictor.lineage_,
        })
    return path


def load_predictor(cls: type, path: Path) -> Any:
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.target import TargetEncoder
    from waypost.ensemble.blend import BlendModel
    from waypost.persistence import check_model_manifest, read_manifest

    manifest = read_manifest(path)
    check_model_manifest(manifest, path)
    try:
        cfg = WaypostConfig.from_dict(manifest["config"], source=f"{path}/waypost_model.json")
        predictor = cls(cfg.target, config=cfg, verbose=False)
        predictor.config_, predictor.target_, predictor.task_ = cfg, manifest["target"], manifest["task"]
        predictor.features_ = dict(manifest["features"])
        if str(manifest["preprocessor"].get("kind")).endswith("_frame"):  # an image or text column
            from waypost.data.frame_preprocess import ColumnFramePreprocessor

            predictor.preprocessor_ = ColumnFramePreprocessor.from_state(manifest["preprocessor"])
        else:
            predictor.preprocessor_ = TabularPreprocessor.from_state(manifest["preprocessor"])
        predictor.target_encoder_ = TargetEncoder.from_state(manifest["target_encoder"])
        parts = {}
        for name, entry in manifest["parts"].items():
            if entry["kind"] == "mlp":
                from waypost.models.tabular_mlp import MLPModel

                parts[name] = MLPModel.load(path, entry)
            elif entry["kind"] == "image":
                from waypost.models.image_model import ImageModel

                parts[name] = ImageModel.load(path, entry)
            elif entry["kind"] == "text":
                from waypost.models.text_model import TextModel

                parts[name] = TextModel.load(path, entry)
            elif entry["kind"] == "gbm":
                from waypost.models.gbm import GBMModel

                parts[name] = GBMModel.load(path, entry)
            else:
                raise ModelFileError(f"{path}: unknown model part kind {entry['kind']!r}")
        predictor.parts_, predictor.selected_ = parts, manifest["selected"]
        predictor.blend_weights_ = manifest["blend_weights"]
        predictor.model_ = BlendModel(parts, predictor.blend_weights_)
        predictor.plan_ = [Decision.from_dict(d) for d in manifest["plan"]]
        predictor.validation_metrics_ = manifest.get("validation_metrics", {})
        predictor.validation_scores_ = manifest.get("validation_scores", {})
        predictor.history_ = manifest.get("history", {})
        predictor.lineage_ = manifest.get("lineage", {})
        predictor.registered_model_ = None
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}/waypost_model.json is incomplete or corrupt: {exc!r}") from None
    return predictor


warnings.filterwarnings("ignore", message=".*X does not have valid feature names.*")
