"""The image branch of a fit: one image column -> decode/resize -> CNN (engine) -> tracked model.
Tabular columns beside it go through the tabular preprocessor into the same network (fusion:
`waypost.models.fusion`), so a mixed table still trains and deploys as one model.

Same outputs as the tabular branch (plan, parts, metrics, lineage, MLflow run), so `Predictor`'s
predict/evaluate/save/load serve both. Bad images are errors naming the row and path, or with
`data.on_bad_image: skip` skipped and counted in the plan.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from waypost.plan import Decision


def fit_image_predictor(predictor: Any, cfg: Any, plan: list[Decision], train_df: pd.DataFrame,
                        valid_df: pd.DataFrame, full_train: pd.DataFrame, train_data: Any, started: float) -> None:
    from waypost.data.image_preprocess import ImageFramePreprocessor, ImageInputs, ImagePreprocessor
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.target import TargetEncoder
    from waypost.ensemble.blend import BlendModel, validation_loss
    from waypost.fitting import _console, _log_run, run_tracker, validation_metrics
    from waypost.models.image_model import ImageModel
    from waypost.track.lineage import collect_lineage

    column = next(name for name, f in cfg.features.items() if f.type == "image")
    tab_features = {name: f.type for name, f in cfg.features.items() if name != column}
    task = cfg.task
    image_pre = ImagePreprocessor(column, size=cfg.model.image.size,
                                  on_bad_image=cfg.data.on_bad_image).fit(train_df[column])
    plan.insert(1, image_pre.decision_)
    x_train, kept_tr, skipped_tr = image_pre.transform(train_df[column])
    x_valid, kept_va, skipped_va = image_pre.transform(valid_df[column])
    skipped = skipped_tr + skipped_va
    if skipped:
        plan.append(Decision("data", f"column '{column}'", f"{len(skipped)} skipped",
                             f"on_bad_image: skip; first: row {skipped[0]['row']}: {skipped[0]['reason']}"))
    train_df, valid_df = train_df.iloc[kept_tr], valid_df.iloc[kept_va]
    encoder = TargetEncoder(task).fit(train_df[cfg.target])
    y_train, y_valid = encoder.transform(train_df[cfg.target]), encoder.transform(valid_df[cfg.target])
    image_pre.on_bad_image = "error"  # at predict time a bad image is always an error, never a silent gap
    tab_pre, tabular = None, None
    if tab_features:
        tab_pre = TabularPreprocessor(tab_features).fit(train_df)
        a_train, a_valid = tab_pre.transform(train_df), tab_pre.transform(valid_df)
        tabular = {"n_numeric": int(a_train.numeric.shape[1]), "cardinalities": tab_pre.category_cardinalities_}
        x_train, x_valid = ImageInputs(x_train, a_train), ImageInputs(x_valid, a_valid)
        plan.append(Decision("architecture", "fusion", "concat",
                             f"image column '{column}' beside {len(tab_features)} tabular column(s): the CNN's "
                             f"features and the MLP encoder's (hidden {cfg.model.mlp.hidden}) are concatenated into a "
                             f"{cfg.model.image.fusion_hidden}-unit combiner, one network trained end to end"))

    tracker = run_tracker(cfg)
    with tracker:
        tracker.log_params({"config": cfg.to_dict()})
        limit = cfg.training.time_limit
        remaining = None if limit is None else max(1.0, limit - (time.perf_counter() - started))
        model = ImageModel(task=task, n_classes=len(encoder.classes_), arch=cfg.model.architecture,
                           in_chans=image_pre.channels_, image_size=image_pre.size_, training=cfg.training,
                           class_names=list(encoder.classes_), image=cfg.model.image, tabular=tabular,
                           mlp=cfg.model.mlp)
        model.fit(x_train, y_train, x_valid, y_valid, tracker=tracker, verbose=predictor.verbose,
                  time_limit=remaining)
        fr = model.fit_
        # the saved preprocessing must normalise as the network was trained (pretrained weights bring
        # their own mean/std, e.g. 0.5/0.5 for the TF-ported EfficientNet-Lite0)
        image_pre.mean_, image_pre.std_ = list(model.mean_), list(model.std_)
        plan += model.decisions_
        plan.append(Decision("training", "cnn", f"{fr.epochs_run} epochs",
                             f"best epoch {fr.best_epoch} restored; batch {model.batch_size_}, {fr.precision} on "
                             f"{fr.accelerator}, {fr.seconds:.1f}s"))
        valid_proba = model.predict_raw(x_valid)
        score = validation_loss(task, valid_proba, y_valid)
        predictor.config_, predictor.plan_, predictor.task_, predictor.target_ = cfg, plan, task, cfg.target
        predictor.features_ = {name: f.type for name, f in cfg.features.items()}
        predictor.preprocessor_ = ImageFramePreprocessor(column, image_pre, tab_pre)
        predictor.target_encoder_ = encoder
        predictor.parts_, predictor.selected_ = {"image": model}, "image"
        predictor.blend_weights_ = {"image": 1.0}
        predictor.model_ = BlendModel(predictor.parts_, predictor.blend_weights_)
        predictor.validation_scores_ = {"image": score}
        predictor.history_ = fr.history
        predictor.validation_metrics_ = validation_metrics(predictor, valid_proba, y_valid)  # images decoded once
        source = train_data if isinstance(train_data, (str, Path)) else None
        lineage_frame = full_train.assign(**{column: full_train[column].map(_cell_key)})
        predictor.lineage_ = {**collect_lineage(lineage_frame, source), "mlflow_run_id": tracker.run_id,
                              "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None)}
        predictor.registered_model_ = None
        _log_run(predictor, tracker, valid_proba, y_valid, model)
        _console(predictor, f"[bold green]trained[/] {cfg.model.architecture}: validation "
                 f"accuracy {predictor.validation_metrics_.get('accuracy', float('nan')):.4f}")


def _cell_key(value: Any) -> Any:
    """A hashable stand-in for the data digest: paths as they are, arrays/bytes by content hash."""
    import hashlib

    import numpy as np

    if isinstance(value, np.ndarray):
        return "sha256:" + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    return value
