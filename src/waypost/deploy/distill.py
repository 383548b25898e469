"""Knowledge distillation: one small MLP that imitates the whole fitted model (GBM + MLP blend).

Why distil the blend rather than the MLP alone: the teacher's probabilities carry what the GBM
learned, so the student is one small network that replaces two models, and deploys as a single
ONNX graph with no tree runtime. Soft labels (Hinton et al. 2015) say how similar the classes look
to the teacher, which is more signal per row than the 0/1 label; a temperature T > 1 spreads that
signal out, and the KL term is scaled by T^2 so its gradients stay comparable to cross entropy.

Classification loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, true),
with the usual KL direction (teacher distribution as the reference). The CE term is unweighted even
on imbalanced data: the teacher's probabilities were selected on log loss, and the student should
copy that calibration rather than re-skew it. Regression: the student regresses on
alpha * teacher + (1 - alpha) * true, both on the standardised scale.

Early stopping and the restored best weights follow the unweighted loss on the *true* validation
labels, so the student is judged on the task, not on how well it mimics the teacher.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from waypost.errors import ConfigError
from waypost.plan import Decision

STUDENTS: dict[str, list[int]] = {"small": [64, 32], "tiny": [32]}


class DistillationLoss(nn.Module):
    """Targets are one float tensor (batch, k + 1): the teacher's probabilities at T=1, then the
    true class code. Packing both into the batch's single target keeps the engine's step generic."""

    def __init__(self, n_classes: int, temperature: float = 2.0, alpha: float = 0.5) -> None:
        super().__init__()
        self.n_classes, self.temperature, self.alpha = n_classes, temperature, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k, t = self.n_classes, self.temperature
        logits = logits.float()
        soft, hard = target[:, :k].float(), target[:, k].long()
        # p^(1/T), renormalised: the teacher's distribution at temperature T from its probabilities.
        teacher_t = torch.softmax(torch.log(soft.clamp_min(1e-8)) / t, dim=-1)
        kd = F.kl_div(F.log_softmax(logits / t, dim=-1), teacher_t, reduction="batchmean") * (t * t)
        ce = F.cross_entropy(logits, hard)
        return self.alpha * kd + (1.0 - self.alpha) * ce


def student_hidden(student: str | list[int] | tuple[int, ...]) -> list[int]:
    """'small' / 'tiny', a list of layer widths, or the CLI's '64,32'."""
    if isinstance(student, str):
        if student in STUDENTS:
            return list(STUDENTS[student])
        try:
            hidden = [int(x) for x in student.replace(" ", "").split(",") if x]
        except ValueError:
            hidden = []
        if not hidden:
            raise ConfigError(f"student: expected one of {sorted(STUDENTS)} or layer widths like '64,32', "
                              f"got {student!r}")
    else:
        hidden = [int(x) for x in student]
    if not hidden or any(h < 1 for h in hidden):
        raise ConfigError(f"student: layer widths must be positive integers, got {student!r}")
    return hidden


def _files_bytes(predictor: Any) -> dict[str, int]:
    """Bytes of each part's saved model file(s) (safetensors, LightGBM text): the deployable size."""
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="waypost-size-") as tmp:
        for name, part in predictor.parts_.items():
            entry = part.save(Path(tmp))
            files = [entry["file"]] if "file" in entry else []
            sizes[name] = sum(os.path.getsize(Path(tmp) / f) for f in files if (Path(tmp) / f).is_file())
    return sizes


def student_predictor(teacher: Any, cfg: Any, name: str, part: Any, raw: np.ndarray, y_valid: np.ndarray,
                      distilled_from: dict[str, Any]) -> Any:
    """A predictor around a trained student `part`, with copies of the teacher's preprocessor and
    label map (so it takes the same tables), scored on the validation outputs `raw`; the caller
    adds the plan."""
    from waypost.pipelines.fitted import FittedModel
    from waypost.tasks import get_task

    task = get_task(teacher.task_)
    lineage = getattr(teacher, "lineage_", {})
    fitted = FittedModel(
        config=cfg, task=teacher.task_, target=teacher.target_, features=dict(teacher.features_),
        preprocessor=copy.deepcopy(teacher.preprocessor_), target_encoder=copy.deepcopy(teacher.target_encoder_),
        parts={name: part}, weights={name: 1.0}, selected=name,
        validation_scores={name: task.validation_loss(raw, y_valid)},
        validation_metrics=task.metrics(y_valid, raw, teacher.target_encoder_), history=part.fit_.history,
        lineage={**lineage, "distilled_from": {**distilled_from, "mlflow_run_id": lineage.get("mlflow_run_id")}})
    out = type(teacher)(teacher.target_, config=cfg, preset=teacher.preset, track=False,
                        seed=teacher.seed, verbose=teacher.verbose)
    out.fitted_ = fitted
    return out


def distill_predictor(teacher: Any, train_df: Any, valid_df: Any | None = None, *,
                      student: str | list[int] = "small", temperature: float = 2.0, alpha: float = 0.5,
                      max_epochs: int | None = None, latency_runs: int = 100) -> tuple[Any, dict[str, Any]]:
    """Train a small MLP on the teacher's full `predict_proba` (GBM included) plus the true labels.

    Returns (student predictor with `selected_ == "mlp"`, report dict). The teacher is untouched;
    the student gets copies of its preprocessor and target encoder, so it takes the same tables.
    `max_epochs` caps the student's training (default: the teacher's config).
    """
    from waypost.deploy.prune import label_tensor, mlp_latency, n_classes as class_count, prepare_data, train_network
    from waypost.metrics import raw_metrics
    from waypost.deploy.report import comparison_row, headline_metric, parameter_count
    from waypost.models.tabular_mlp import MLPModel, TabularMLP
    from waypost.train.batches import auto_batch_size
    from waypost.train.losses import MSELoss

    teacher._check_fitted()
    hidden = student_hidden(student)
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha (the weight of the teacher's soft labels) must lie in [0, 1], got {alpha!r}")
    from waypost.tasks import get_task

    task = teacher.task_
    n_classes = class_count(teacher)
    is_classification = get_task(task).is_classification
    data = prepare_data(teacher, train_df, valid_df)
    metric = headline_metric(task, n_classes)

    # Soft labels from the whole teacher: probabilities (classification) or standardised values.
    soft = teacher.model_.predict_raw(data.train)
    if not is_classification:
        y_train = torch.as_tensor(alpha * soft + (1.0 - alpha) * data.y_train, dtype=torch.float32)
        loss_fn: nn.Module = MSELoss()
        loss_text = f"MSE on alpha * teacher + (1 - alpha) * true, alpha={alpha}"
    else:
        y_train = torch.as_tensor(np.column_stack([soft, data.y_train]), dtype=torch.float32)
        loss_fn = DistillationLoss(n_classes, temperature, alpha)
        loss_text = f"{alpha} * T^2 * KL(teacher_T || student_T) + {1 - alpha:g} * CE(true), T={temperature}"

    cfg = teacher.config_.model_copy(deep=True)
    cfg.model.architecture = "mlp"
    cfg.model.mlp.hidden = hidden
    cfg.training.weight_histograms = False
    cfg.training.time_limit = None
    if max_epochs is not None:
        cfg.training.max_epochs = int(max_epochs)
    mlp = MLPModel(task=task, n_classes=n_classes, cardinalities=teacher.preprocessor_.category_cardinalities_,
                   mlp=cfg.model.mlp, training=cfg.training)
    out_dim = get_task(task).n_outputs(n_classes)
    m = cfg.model.mlp
    # Seed before building the net: fit_network seeds only after construction, so without this the
    # initial weights (and the student) would change from run to run.
    torch.manual_seed(cfg.training.seed)
    mlp.net_ = TabularMLP(data.train.numeric.shape[1], [int(c) for c in mlp.cardinalities], out_dim,
                          hidden, m.dropout, m.batchnorm, m.max_embedding_dim)
    tc = cfg.training
    mlp.batch_size_ = tc.batch_size if tc.batch_size != "auto" else auto_batch_size(len(y_train))
    mlp.loss_decision_ = Decision("training", "loss", "distillation", loss_text)
    mlp.fit_ = train_network(mlp.net_, data.train, y_train, data.valid, label_tensor(task, data.y_valid),
                             task=task, loss_fn=loss_fn, cfg=tc, batch_size=mlp.batch_size_,
                             description="student MLP")

    # each model runs once on the validation rows; metrics, agreement and scores share the outputs
    t_raw, s_raw = teacher.model_.predict_raw(data.valid), mlp.predict_raw(data.valid)
    out = student_predictor(teacher, cfg, "mlp", mlp, s_raw, data.y_valid, {"selected": teacher.selected_})
    teacher_metrics, student_metrics = raw_metrics(teacher, t_raw, data.y_valid), out.validation_metrics_
    lat = {"teacher": mlp_latency(teacher.model_, data.valid, latency_runs),
           "student": mlp_latency(mlp, data.valid, latency_runs)}
    t_mlp = teacher.parts_.get("mlp")
    params = {"teacher": parameter_count(t_mlp.net_) if t_mlp is not None else None,  # None: a GBM-only teacher
              "student": parameter_count(mlp.net_)}
    t_files, s_files = _files_bytes(teacher), _files_bytes(out)
    speedup_1 = lat["teacher"]["batch_1"]["p50_ms"] / max(lat["student"]["batch_1"]["p50_ms"], 1e-9)
    speedup_1024 = lat["teacher"]["batch_1024"]["p50_ms"] / max(lat["student"]["batch_1024"]["p50_ms"], 1e-9)
    agreement = _agreement(task, t_raw, s_raw)

    replaced = " + ".join(teacher.parts_) if teacher.selected_ == "blend" else teacher.selected_
    reason = (f"one {hidden} MLP ({params['student']:,} parameters) trained on the {teacher.selected_} "
              f"teacher's soft labels plus the true labels ({loss_text}) replaces {replaced}; validation "
              f"{metric} {student_metrics[metric]:.4f} vs teacher {teacher_metrics[metric]:.4f}; "
              f"batch-1 latency {speedup_1:.1f}x faster")
    out.fitted_.plan = [*teacher.plan_, mlp.loss_decision_,
                 Decision("training", "student mlp", f"{mlp.fit_.epochs_run} epochs",
                          f"best epoch {mlp.fit_.best_epoch} restored (early stopping on true-label validation loss)"),
                 Decision("deploy", "distillation", f"student mlp {hidden}", reason)]

    report: dict[str, Any] = {
        "kind": "distillation",
        "headline": f"distillation: {teacher.selected_} teacher -> student MLP {hidden} "
                    f"(T={temperature}, alpha={alpha}, {mlp.fit_.epochs_run} epochs)",
        "columns": ["teacher", "student"],
        "metric": metric, "student_hidden": hidden, "temperature": temperature, "alpha": alpha,
        "teacher_metrics": teacher_metrics, "student_metrics": student_metrics,
        "parameters": params, "file_bytes": {"teacher": t_files, "student": s_files},
        "latency": lat, "speedup_batch_1": speedup_1, "speedup_batch_1024": speedup_1024,
        "agreement": agreement, "epochs_run": mlp.fit_.epochs_run, "seconds": mlp.fit_.seconds,
        "notes": ["teacher latency is its full predict_raw (GBM + MLP); preprocessing, the same for both, "
                  "is not timed"],
    }
    report["table"] = [
        comparison_row(f"validation {metric}", teacher_metrics[metric], student_metrics[metric]),
        comparison_row("MLP parameters", params["teacher"], params["student"], ratio=True),
        comparison_row("model files", sum(t_files.values()), sum(s_files.values()), ratio=True, unit="B"),
        comparison_row("latency b=1 p50", lat["teacher"]["batch_1"]["p50_ms"],
                       lat["student"]["batch_1"]["p50_ms"], ratio=True, unit="ms"),
        comparison_row("latency b=1024 p50", lat["teacher"]["batch_1024"]["p50_ms"],
                       lat["student"]["batch_1024"]["p50_ms"], ratio=True, unit="ms"),
    ]
    return out, report


def _agreement(task: str, teacher_raw: np.ndarray, student_raw: np.ndarray) -> dict[str, float]:
    """How closely the student follows the teacher on validation rows."""
    from waypost.tasks import get_task

    if not get_task(task).is_classification:
        return {"pearson": float(np.corrcoef(teacher_raw, student_raw)[0, 1])}
    same = float(np.mean(teacher_raw.argmax(1) == student_raw.argmax(1)))
    corr = float(np.corrcoef(teacher_raw[:, -1], student_raw[:, -1])[0, 1]) if teacher_raw.shape[1] == 2 else \
        float(np.corrcoef(teacher_raw.ravel(), student_raw.ravel())[0, 1])
    return {"same_class": same, "pearson": corr}
