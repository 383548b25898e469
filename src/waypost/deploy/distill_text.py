"""Distil a fine-tuned text Transformer into a shallower, narrower student (DistilBERT's recipe).

The student is the teacher's architecture with fewer layers: same tokenizer and width, its
embeddings, the teacher's layers taken at even spacing (e.g. layers 0 and 3 of 6 for two) and the
teacher's head copied as the starting point (Sanh et al. 2019 initialise DistilBERT the same way;
a random start would need far more data than a fine-tuning set to recover). It then trains on
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(true) (`DistillationLoss`), every layer
at one low learning rate (1e-4: the weights are already good, the head included). A regression
teacher's student regresses on alpha * teacher + (1 - alpha) * true instead (standardised), as the
tabular distillation does.

Narrower too: each kept layer keeps a quarter of its feed-forward units (`ffn_fraction`), those with the
largest ||w_in|| * ||w_out|| (structured pruning of the teacher's weights), so the student still
starts from them. The hidden width stays: every tensor of the embeddings, attention and LayerNorms
is sized by it, and cutting it would leave nothing of the teacher to start from. Depth cuts the
most latency (each layer is a full attention + feed-forward pass); the narrower feed-forward block
(two thirds of a layer's weights) cuts most of what is left.
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
FFN_FRACTION = 0.25  # of the teacher's feed-forward units the student keeps (benchmarks/text.py)


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


def _ffn_keep(state: dict[str, Any], layer_prefix: str, n_keep: int) -> torch.Tensor:
    """The feed-forward units to keep in one layer: the largest ||w_in|| * ||w_out|| (how much a unit
    can carry from the attention output to the residual), in their original order."""
    w_in = state[f"{layer_prefix}.intermediate.dense.weight"]  # (units, hidden)
    w_out = state[f"{layer_prefix}.output.dense.weight"]  # (hidden, units)
    score = w_in.norm(dim=1) * w_out.norm(dim=0)
    return torch.sort(torch.topk(score, n_keep).indices).values


def student_state(teacher_net: torch.nn.Module, student_net: torch.nn.Module, mapping: list[int]) -> dict[str, Any]:
    """The student's state dict filled from the teacher: every tensor whose name matches, with the
    student's layer i taken from the teacher's layer mapping[i]. A narrower feed-forward block
    (BERT-family names) keeps the teacher's most important units (`_ffn_keep`)."""
    from waypost.models.text_encoder import _layer_stack

    teacher_state = teacher_net.state_dict()
    t_layers = _layer_stack(teacher_net.encoder.model)
    s_layers = _layer_stack(student_net.encoder.model)
    t_prefix = next(n for n, m in teacher_net.named_modules() if m is t_layers)
    s_prefix = next(n for n, m in student_net.named_modules() if m is s_layers)
    out, keep = {}, {}
    for name, tensor in student_net.state_dict().items():
        source, value = name, None
        if name.startswith(s_prefix + "."):
            index, rest = name[len(s_prefix) + 1:].split(".", 1)
            layer = f"{t_prefix}.{mapping[int(index)]}"
            source = f"{layer}.{rest}"
            if source in teacher_state and teacher_state[source].shape != tensor.shape:
                if rest.startswith("intermediate.dense.") or rest == "output.dense.weight":
                    idx = keep.setdefault(layer, _ffn_keep(teacher_state, layer, int(tensor.shape[-1 if rest == "output.dense.weight" else 0])))
                    value = teacher_state[source][:, idx] if rest == "output.dense.weight" else teacher_state[source][idx]
        if value is None:
            value = teacher_state.get(source)
        if value is None or value.shape != tensor.shape:
            raise ConfigError(f"distillation: no teacher weight for student tensor {name!r} (looked for {source!r})")
        out[name] = value.clone()
    return out


def distill_text_predictor(teacher: Any, train_df: Any, valid_df: Any | None = None, *, layers: int = 2,
                           ffn_fraction: float = FFN_FRACTION, temperature: float = 2.0, alpha: float = 0.5,
                           max_epochs: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(student predictor, report) for a predictor whose selected part is a pretrained text Transformer."""
    from waypost.deploy.distill import student_predictor
    from waypost.deploy.prune import n_classes as class_count, prepare_data
    from waypost.metrics import raw_metrics
    from waypost.data.frame_preprocess import ColumnInputs
    from waypost.deploy.report import comparison_row, headline_metric, measure_latency, parameter_count, take_rows
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
    n_classes = class_count(teacher)
    data = prepare_data(teacher, train_df, valid_df)
    soft = part.predict_raw(data.train)
    loss_fn, loss_text, y_train = _distillation_targets(teacher.task_, n_classes, soft, data.y_train,
                                                        temperature, alpha)

    if not 0.0 < ffn_fraction <= 1.0:
        raise ConfigError(f"ffn_fraction must be in (0, 1], got {ffn_fraction!r}")
    config = copy.deepcopy(hf.config)
    config.num_hidden_layers = layers
    if ffn_fraction < 1.0:
        if not hasattr(config, "intermediate_size"):
            raise ConfigError(f"a narrower feed-forward block needs a BERT-family teacher; use ffn_fraction=1 for {config.model_type}")
        config.intermediate_size = max(64, int(config.intermediate_size * ffn_fraction) // 64 * 64)
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
    units = getattr(hf.config, "intermediate_size", None)
    ffn_text = (f"{config.intermediate_size} of {units} feed-forward units each" if units else "full width")
    student.init_state = student_state(part.net_, student._build(False), mapping)
    student.loss_override = (loss_fn, Decision("training", "loss", "distillation", loss_text))
    student.fit(data.train, y_train, data.valid, data.y_valid)

    t_raw, s_raw = part.predict_raw(data.valid), student.predict_raw(data.valid)
    out = student_predictor(teacher, cfg, "text", student, s_raw, data.y_valid, {"layers": n_teacher})
    metric = headline_metric(teacher.task_, n_classes)
    teacher_metrics, student_metrics = raw_metrics(teacher, t_raw, data.y_valid), out.validation_metrics_
    params = {"teacher": parameter_count(part.net_), "student": parameter_count(student.net_)}
    out.fitted_.plan = [*teacher.plan_, student.decisions_[-1],
                 Decision("deploy", "distillation", f"student {layers} of {n_teacher} layers",
                          f"teacher layers {mapping} copied ({ffn_text}), then trained on soft + true labels ({loss_text}); "
                          f"{params['student']:,} vs {params['teacher']:,} parameters; validation {metric} "
                          f"{student_metrics[metric]:.4f} vs teacher {teacher_metrics[metric]:.4f}")]
    one = ColumnInputs(tuple(a[:1] for a in data.valid.arrays),
                       None if data.valid.tabular is None else take_rows(data.valid.tabular, 1))
    latency = {"teacher": measure_latency(lambda: part.predict_raw(one), 50)["p50_ms"],
               "student": measure_latency(lambda: student.predict_raw(one), 50)["p50_ms"]}
    report = {"kind": "text distillation", "layers": {"teacher": n_teacher, "student": layers}, "layer_map": mapping,
              "feed_forward": ffn_text,
              "headline": f"distillation: {n_teacher}-layer teacher -> {layers}-layer student, {ffn_text} (T={temperature}, "
                          f"alpha={alpha}, {student.fit_.epochs_run} epochs)",
              "columns": ["teacher", "student"],
              "metric": metric, "teacher_metrics": teacher_metrics, "student_metrics": student_metrics,
              "parameters": params, "latency_batch_1_ms": latency, "epochs_run": student.fit_.epochs_run,
              "seconds": student.fit_.seconds,
              "table": [comparison_row(f"validation {metric}", teacher_metrics[metric], student_metrics[metric]),
                        comparison_row("parameters", params["teacher"], params["student"], ratio=True),
                        comparison_row("latency b=1 p50", latency["teacher"], latency["student"], ratio=True, unit="ms")]}
    return out, report


def _distillation_targets(task: str, n_classes: int, soft: np.ndarray, y: np.ndarray, temperature: float,
                          alpha: float) -> tuple[torch.nn.Module, str, np.ndarray]:
    """(loss, its description, the packed training targets) for the task: soft labels + the true
    code for a classifier (`DistillationLoss`), alpha * teacher + (1 - alpha) * true for regression
    (both standardised), as the tabular distillation does."""
    from waypost.deploy.distill import DistillationLoss
    from waypost.tasks import get_task
    from waypost.train.losses import MSELoss

    if not get_task(task).is_classification:
        return (MSELoss(), f"MSE on alpha * teacher + (1 - alpha) * true, alpha={alpha}",
                (alpha * np.asarray(soft, np.float64) + (1.0 - alpha) * y).astype(np.float32))
    return (DistillationLoss(n_classes, temperature, alpha),
            f"{alpha} * T^2 * KL(teacher_T || student_T) + {1 - alpha:g} * CE(true), T={temperature}",
            np.column_stack([soft, y]).astype(np.float32))
