"""The encoder branch of a fit: one image or text column (and any tabular columns beside it,
fused into the same network: `waypost.models.fusion`) -> the column's preprocessor -> encoder
model (engine) -> tracked model.

Same outputs as the tabular branch (plan, parts, metrics, lineage, MLflow run), so `Predictor`'s
predict/evaluate/save/load serve every kind. Bad images are errors naming the row and path, or with
`data.on_bad_image: skip` skipped and counted in the plan.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from waypost.plan import Decision


def _image_column(cfg: Any, column: str, train_df: pd.DataFrame) -> tuple[Any, Any]:
    """(fitted image preprocessor, model factory)."""
    from waypost.data.image_preprocess import ImagePreprocessor
    from waypost.models.image_model import ImageModel

    pre = ImagePreprocessor(column, size=cfg.model.image.size).fit(train_df[column])

    def model(**common: Any) -> Any:
        return ImageModel(in_chans=pre.channels_, image_size=pre.size_, image=cfg.model.image, **common)

    return pre, model


def _text_column(cfg: Any, column: str, train_df: pd.DataFrame) -> tuple[Any, Any]:
    from waypost.data.text_preprocess import TextPreprocessor
    from waypost.models.text_encoder import resolve_text_weights
    from waypost.models.text_model import TextModel

    text = cfg.model.text
    weights = resolve_text_weights(text.pretrained if cfg.model.architecture == "pretrained_transformer" else False)
    tokenizer_json = weights.tokenizer_json()
    # A WordPiece trained on the data is not reproducible (huggingface/tokenizers#1794: hash-map order
    # decides ties), so a resumed fit must take the interrupted fit's tokenizer from the checkpoint.
    slot, saved = _tokenizer_slot(tokenizer_json)
    pre = TextPreprocessor(column, tokenizer_json=saved["tokenizer"] if saved else tokenizer_json,
                           max_length=text.max_length, vocab_size=text.vocab_size,
                           model_limit=weights.length_limit(tokenizer_json)).fit(train_df[column])
    if saved:
        pre.decision_ = Decision.from_dict(saved["decision"])
    elif slot is not None:
        slot.write_json(TOKENIZER_FILE, {"tokenizer": pre.tokenizer_, "decision": pre.decision_.to_dict()})

    def model(**common: Any) -> Any:
        return TextModel(vocab_size=pre.vocab_size_, max_length=pre.max_length_, text=text, weights=weights, **common)

    return pre, model


TOKENIZER_FILE = "tokenizer.json"


def _tokenizer_slot(pretrained_tokenizer: str | None) -> tuple[Any, dict[str, Any] | None]:
    """(the checkpoint slot of a tokenizer trained on the data, its saved state when resuming)."""
    from waypost.train.session import current_session

    session = current_session()
    if pretrained_tokenizer is not None or session is None or session.checkpoints is None:
        return None, None
    slot = session.checkpoints.slot("tokenizer")
    if session.checkpoints.resumed and slot.has(TOKENIZER_FILE):
        return slot, slot.read_json(TOKENIZER_FILE)
    return slot, None


COLUMN_KINDS = {"image": _image_column, "text": _text_column}


def fit_column_predictor(predictor: Any, cfg: Any, plan: list[Decision], train_df: pd.DataFrame,
                         valid_df: pd.DataFrame, full_train: pd.DataFrame, train_data: Any, state: dict[str, Any],
                         save_to: Path | None = None) -> None:
    """`state` holds the fit's `session` (time budget, checkpoints) and receives its `tracker`, so
    an interruption can name the run; `save_to` as in `waypost.fitting.fit_predictor`."""
    from waypost.data.frame_preprocess import ColumnFramePreprocessor
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.target import TargetEncoder
    from waypost.ensemble.blend import BlendModel, validation_loss
    from waypost.fitting import _console, _log_run, bind_run, commit_model, fit_notes, fit_tracker
    from waypost.metrics import raw_metrics
    from waypost.track.lineage import collect_lineage
    from waypost.train import interrupt

    column, kind = next((name, f.type) for name, f in cfg.features.items() if f.type in COLUMN_KINDS)
    tab_features = {name: f.type for name, f in cfg.features.items() if name != column}
    task = cfg.task
    column_pre, make_model = COLUMN_KINDS[kind](cfg, column, train_df)
    plan.insert(1, column_pre.decision_)
    if kind == "text" and cfg.model.text.augment.enabled:
        train_df = _augment_texts(train_df, column, cfg, plan)
    # the tabular preprocessor is fitted on every training row (a bad image does not make its other
    # columns wrong); the frame then drops the rows whose image is skipped, in every view at once
    tab_pre = TabularPreprocessor(tab_features).fit(train_df) if tab_features else None
    frame = ColumnFramePreprocessor(column, column_pre, tab_pre)
    policy = {"on_bad_image": cfg.data.on_bad_image} if kind == "image" else {}
    x_train, kept_tr, skipped_tr = frame.transform_rows(train_df, **policy)
    x_valid, kept_va, skipped_va = frame.transform_rows(valid_df, **policy)
    skipped = skipped_tr + skipped_va
    if skipped:
        plan.append(Decision("data", f"column '{column}'", f"{len(skipped)} skipped",
                             f"on_bad_image: skip; first: row {skipped[0]['row']}: {skipped[0]['reason']}"))
    train_df, valid_df = train_df.iloc[kept_tr], valid_df.iloc[kept_va]
    encoder = TargetEncoder(task).fit(train_df[cfg.target])
    y_train, y_valid = encoder.transform(train_df[cfg.target]), encoder.transform(valid_df[cfg.target])
    tabular = None
    if tab_pre is not None:
        tabular = {"n_numeric": int(x_train.tabular.numeric.shape[1]), "cardinalities": tab_pre.category_cardinalities_}
        plan.append(Decision("architecture", "fusion", "concat",
                             f"{kind} column '{column}' beside {len(tab_features)} tabular column(s): the encoder's "
                             f"features and the MLP encoder's (hidden {cfg.model.mlp.hidden}) are concatenated into a "
                             f"{cfg.model.fusion_hidden}-unit combiner, one network trained end to end"))

    interrupt.check("preprocessing")
    session = state["session"]
    tracker = state["tracker"] = fit_tracker(cfg, session)
    with tracker:
        bind_run(session, tracker)
        tracker.log_params({"config": cfg.to_dict()})
        model = make_model(task=task, n_classes=len(encoder.classes_), arch=cfg.model.architecture,
                           training=cfg.training, class_names=list(encoder.classes_), tabular=tabular,
                           mlp=cfg.model.mlp, fusion_hidden=cfg.model.fusion_hidden)
        with session.part(kind):  # the engine takes its deadline and checkpoint slot from the session
            model.fit(x_train, y_train, x_valid, y_valid, tracker=tracker, verbose=predictor.verbose)
        fr = model.fit_
        if kind == "image":
            # the saved preprocessing must normalise as the network was trained (pretrained weights bring
            # their own mean/std, e.g. 0.5/0.5 for the TF-ported EfficientNet-Lite0)
            column_pre.mean_, column_pre.std_ = list(model.mean_), list(model.std_)
        plan += model.decisions_
        plan.append(Decision("training", kind, f"{fr.epochs_run} epochs",
                             f"best epoch {fr.best_epoch} restored; batch {model.batch_size_}, {fr.precision} on "
                             f"{fr.accelerator}, {fr.seconds:.1f}s"))
        plan += fit_notes(kind, fr)
        interrupt.check(f"after the {kind} model")
        valid_proba = model.predict_raw(x_valid)
        score = validation_loss(task, valid_proba, y_valid)
        predictor.config_, predictor.plan_, predictor.task_, predictor.target_ = cfg, plan, task, cfg.target
        predictor.features_ = {name: f.type for name, f in cfg.features.items()}
        predictor.preprocessor_ = frame
        predictor.target_encoder_ = encoder
        predictor.parts_, predictor.selected_ = {kind: model}, kind
        predictor.blend_weights_ = {kind: 1.0}
        predictor.model_ = BlendModel(predictor.parts_, predictor.blend_weights_)
        predictor.validation_scores_ = {kind: score}
        predictor.history_ = fr.history
        predictor.validation_metrics_ = raw_metrics(predictor, valid_proba, y_valid)  # inputs decoded once
        source = train_data if isinstance(train_data, (str, Path)) else None
        lineage_frame = full_train.assign(**{column: full_train[column].map(_cell_key)})
        predictor.lineage_ = {**collect_lineage(lineage_frame, source), "mlflow_run_id": tracker.run_id,
                              "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None)}
        predictor.registered_model_ = None
        _log_run(predictor, tracker, valid_proba, y_valid, model)
        commit_model(predictor, tracker, save_to)
        _console(predictor, f"[bold green]trained[/] {cfg.model.architecture}: validation "
                 f"accuracy {predictor.validation_metrics_.get('accuracy', float('nan')):.4f}")


def _augment_texts(train_df: pd.DataFrame, column: str, cfg: Any, plan: list[Decision]) -> pd.DataFrame:
    """Training rows plus `n_aug` augmented copies of each (other columns and label unchanged). After
    the tokenizer and max_length are fitted, so they describe real texts; never the validation rows."""
    aug = cfg.model.text.augment
    rows = train_df[train_df[column].map(lambda v: isinstance(v, str) and bool(v.strip()))]
    new = aug.augment(rows[column].tolist(), seed=cfg.training.seed)
    # augment_texts returns the n_aug copies of each text together, text by text
    order = [i for i in range(len(rows)) for _ in range(aug.n_aug)]
    copies = rows.iloc[order].reset_index(drop=True).assign(**{column: new})
    plan.append(Decision("training", "text augmentation", f"+{len(new):,} texts",
                         f"EDA (WordNet synonyms {aug.synonym}, deletion {aug.delete}, swaps {aug.swap}) on "
                         f"{len(rows):,} training texts, {aug.n_aug} copy each; validation texts untouched"))
    return pd.concat([train_df, copies], ignore_index=True)


def _cell_key(value: Any) -> Any:
    """A hashable stand-in for the data digest: paths and texts as they are, arrays/bytes by content hash."""
    import hashlib

    import numpy as np

    if isinstance(value, np.ndarray):
        return "sha256:" + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    if isinstance(value, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    return value
