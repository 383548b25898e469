"""Distil a fine-tuned text Transformer into a shallower student (DistilBERT's recipe).

The student is the teacher's architecture with fewer layers: same tokenizer and width, its
embeddings, the teacher's layers taken at even spacing (e.g. layers 0 and 3 of 6 for two) and the
teacher's head copied as the starting point (Sanh et al. 2019 initialise DistilBERT the same way;
a random start would need far more data than a fine-tuning set to recover). It then trains on
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(true) (`DistillationLoss`), every layer
at one low learning rate (1e-4: the weights are already good, the head included).

Why not narrower: a narrower student cannot start from the teacher's weights, and from scratch it
loses more than the depth cut saves on a few thousand texts. Depth is where the latency is: each
layer is a full attention + feed-forward pass.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from waypost.errors import ConfigError
from waypost.plan import Decision

STUDENT_LR = 1e-4


STUDENT_LAYERS = {"small": 2, "tiny": 1}


def student_layers(student: str | int) -> int:
    """'small' (2 layers), 'tiny' (1) or a layer count, as the CLI's --student gives it."""
    if isinstance(student, int) or str(student).isdigit():
        return int(student)
    if student in STUDENT_LAYERS:
        return STUDENT_LAYERS[student]
    raise ConfigError(f"--student for a text teacher: small, tiny or a number of layers, got {student!r}")


def _layer_map(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layer for each student layer, evenly spaced from the bottom: 6 -> 2 gives [0, 3]."""
    step = n_teacher / n_student
    return [int(i * step) for i in range(n_student)]


def student_state(teacher_net: torch.nn.Module, student_net: torch.nn.Module, mapping: list[int]) -> dict[str, Any]:
    """The student's state dict filled from the teacher: every tensor whose name matches, with the
    student's layer i taken from the teacher's layer mapping[i]."""
    from waypost.models.text_encoder import _layer_stack

    teacher_state = teacher_net.state_dict()
    t_layers = _layer_stack(teacher_net.encoder.model)
    s_layers = _layer_stack(student_net.encoder.model)
    t_prefix = next(n for n, m in teacher_net.named_modules() if m is t_layers)
    s_prefix = next(n for n, m in student_net.named_modules() if m is s_layers)
    out = {}
    for name, tensor in student_net.state_dict().items():
        source = name
        if name.startswith(s_prefix + "."):
            index, rest = name[len(s_prefix) + 1:].split(".", 1)
            source = f"{t_prefix}.{mapping[int(index)]}.{rest}"
        if source not in teacher_state or teacher_state[source].shape != tensor.shape:
            raise ConfigError(f"distillation: no teacher weight for student tensor {name!r} (looked for {source!r})")
        out[name] = teacher_state[source].clone()
    return out


def distill_text_predictor(teacher: Any, train_df: Any, valid_df: Any | None = None, *, layers: int = 2,
                           temperature: float = 2.0, alpha: float = 0.5,
                           max_epochs: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(student predictor, report) for a predictor whose selected part is a pretrained text Transformer."""
    from waypost.deploy.distill import DistillationLoss
    from waypost.deploy.prune import part_metrics, prepare_data
    from waypost.data.frame_preprocess import ColumnInputs
    from waypost.deploy.report import comparison_row, headline_metric, measure_latency, parameter_count, take_rows
    from waypost.ensemble.blend import BlendModel, validation_loss
    from waypost.models.text_encoder import TextWeights
    from waypost.models.text_model import TextModel

    teacher._check_fitted()
    part = teacher.parts_.get("text")
    hf = getattr(getattr(getattr(part, "net_", None), "encoder", None), "model", None)
    if part is None or hf is None:
        raise ConfigError("text distillation needs a teacher whose model is a pretrained text Transformer "
                          f"(selected part: {teacher.selected_!r})")
    n_teacher = int(hf.config.num_hidden_layers)
    if not 1 <= layers < n_teacher:
        raise ConfigError(f"student layers must be between 1 and {n_teacher - 1} (the teacher has {n_teacher}), got {layers}")
    n_classes = len(teacher.classes_)
    data = prepare_data(teacher, train_df, valid_df)
    soft = part.predict_raw(data.train)
    y_train = np.column_stack([soft, data.y_train]).astype(np.float32)

    config = copy.deepcopy(hf.config)
    config.num_hidden_layers = layers
    cfg = teacher.config_.model_copy(deep=True)
    cfg.training.learning_rate = STUDENT_LR
    cfg.training.weight_histograms = False
    if max_epochs is not None:
        cfg.training.max_epochs = int(max_epochs)
    student = TextModel(task=teacher.task_, n_classes=n_classes, arch=part.arch, training=cfg.training,
                        class_names=part.class_names, tabular=part.tabular, mlp=part.mlp,
                        fusion_hidden=part.fusion_hidden, vocab_size=part.vocab_size, max_length=part.max_length,
                        text=part.text, weights=TextWeights("config", None, f"{layers}-layer student of the teacher", config))
    mapping = _layer_map(n_teacher, layers)
    student.init_state = student_state(part.net_, student._build(False), mapping)
    loss_text = f"{alpha} * T^2 * KL(teacher_T || student_T) + {1 - alpha:g} * CE(true), T={temperature}"
    student.loss_override = (DistillationLoss(n_classes, temperature, alpha),
                             Decision("training", "loss", "distillation", loss_text))
    student.fit(data.train, y_train, data.valid, data.y_valid)

    out = type(teacher)(teacher.target_, config=cfg, preset=teacher.preset, track=False,
                        seed=teacher.seed, verbose=teacher.verbose)
    out.config_, out.task_, out.target_ = cfg, teacher.task_, teacher.target_
    out.features_ = dict(teacher.features_)
    out.preprocessor_ = copy.deepcopy(teacher.preprocessor_)
    out.target_encoder_ = copy.deepcopy(teacher.target_encoder_)
    out.parts_, out.selected_, out.blend_weights_ = {"text": student}, "text", {"text": 1.0}
    out.model_ = BlendModel(out.parts_, out.blend_weights_)
    t_raw, s_raw = part.predict_raw(data.valid), student.predict_raw(data.valid)
    out.validation_scores_ = {"text": validation_loss(teacher.task_, s_raw, data.y_valid)}
    out.history_ = student.fit_.history
    out.lineage_ = {**getattr(teacher, "lineage_", {}), "distilled_from": {
        "layers": n_teacher, "mlflow_run_id": getattr(teacher, "lineage_", {}).get("mlflow_run_id")}}
    out.registered_model_ = None
    metric = headline_metric(teacher.task_, n_classes)
    teacher_metrics, student_metrics = part_metrics(teacher, t_raw, data.y_valid), part_metrics(out, s_raw, data.y_valid)
    out.validation_metrics_ = student_metrics
    params = {"teacher": parameter_count(part.net_), "student": parameter_count(student.net_)}
    out.plan_ = [*teacher.plan_, student.decisions_[-1],
                 Decision("deploy", "distillation", f"student {layers} of {n_teacher} layers",
                          f"teacher layers {mapping} copied, then trained on soft + true labels ({loss_text}); "
                          f"{params['student']:,} vs {params['teacher']:,} parameters; validation {metric} "
                          f"{student_metrics[metric]:.4f} vs teacher {teacher_metrics[metric]:.4f}")]
    one = ColumnInputs(tuple(a[:1] for a in data.valid.arrays),
                       None if data.valid.tabular is None else take_rows(data.valid.tabular, 1))
    latency = {"teacher": measure_latency(lambda: part.predict_raw(one), 50)["p50_ms"],
               "student": measure_latency(lambda: student.predict_raw(one), 50)["p50_ms"]}
    report = {"kind": "text distillation", "layers": {"teacher": n_teacher, "student": layers}, "layer_map": mapping,
              "headline": f"distillation: {n_teacher}-layer teacher -> {layers}-layer student (T={temperature}, "
                          f"alpha={alpha}, {student.fit_.epochs_run} epochs)",
              "columns": ["teacher", "student"],
              "metric": metric, "teacher_metrics": teacher_metrics, "student_metrics": student_metrics,
              "parameters": params, "latency_batch_1_ms": latency, "epochs_run": student.fit_.epochs_run,
              "seconds": student.fit_.seconds,
              "table": [comparison_row(f"validation {metric}", teacher_metrics[metric], student_metrics[metric]),
                        comparison_row("parameters", params["teacher"], params["student"], ratio=True),
                        comparison_row("latency b=1 p50", latency["teacher"], latency["student"], ratio=True, unit="ms")]}
    return out, report
