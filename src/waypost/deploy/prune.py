"""Global magnitude pruning of the MLP part, with a short recovery fine-tune.

Why global and unstructured: one L1 threshold across the hidden Linear layers lets the wide,
redundant layers give up most weights while the narrow ones keep theirs, which loses less accuracy
than a fixed fraction per layer. Unstructured zeros do not make a dense matmul faster on CPU, so
the gain is size (the weights compress, and a sparse kernel or format could use them); the report
measures latency anyway so nobody has to assume.

What stays dense, by default: the output layer (`prune_head=False`) and the embeddings. The head is
a few hundred weights that every prediction goes through; a regression head's weights are small, so
a global threshold took 94% of them at amount=0.8 and diabetes R2 fell 0.41 -> 0.24, against 0.48
with the head kept. Embeddings are lookups: a zeroed row silently merges a category with "unknown".

The fine-tune runs with the pruning masks in place (torch.nn.utils.prune re-applies them in a
forward pre-hook), so the pruned weights stay zero while the rest adapts; `prune.remove` then bakes
the zeros into plain `weight` tensors, which save and export like any dense model.

This module also holds the two helpers distillation shares: `prepare_data` (the same validation
split the fit used) and `train_network` (the engine on tensors the caller chose).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from waypost.config import TrainingConfig
from waypost.data.preprocess import TabularArrays
from waypost.errors import ConfigError, DataError
from waypost.plan import Decision

if TYPE_CHECKING:  # the engine imports Lightning: only load it when a fine-tune actually runs
    from waypost.train.engine import FitResult

FINETUNE_LR_FACTOR = 0.1  # recovery fine-tune: a tenth of the training LR, so the survivors adjust
                          # without undoing what they learned


# ---- shared with distillation -------------------------------------------------------------------
@dataclass
class PreparedData:
    """The rows and their encoded arrays, split the same way the fit split them."""

    train_df: Any
    valid_df: Any
    train: TabularArrays
    y_train: np.ndarray
    valid: TabularArrays
    y_valid: np.ndarray


def prepare_data(predictor: Any, train_data: Any, valid_data: Any | None = None) -> PreparedData:
    """Read, drop rows without a target, and split off validation rows if none were given.

    The split uses the fit's own fraction and seed, so passing the original training table gives
    back the validation rows the predictor was early-stopped and blended on, not rows it trained on.
    """
    from waypost.data.io import read_table
    from waypost.data.split import split_frame
    from waypost.data.target import drop_missing_target
    from waypost.pipelines.plan import require_target

    predictor._check_fitted()
    target, cfg = predictor.target_, predictor.config_
    train_df = read_table(train_data)
    require_target(train_df, target, "the training data")
    train_df, _ = drop_missing_target(train_df, target)
    if valid_data is None:
        train_df, valid_df = split_frame(train_df, target, predictor.task_, cfg.data.valid_fraction,
                                         cfg.training.seed)
    else:
        valid_df = read_table(valid_data)
        require_target(valid_df, target, "the validation data")
        valid_df, _ = drop_missing_target(valid_df, target)
    for name, df in (("training", train_df), ("validation", valid_df)):
        missing = [c for c in predictor.features_ if c not in df.columns]
        if missing:
            raise DataError(f"the {name} data lacks columns the model was trained with: {missing}")
        if len(df) < 2:
            raise DataError(f"the {name} data has {len(df)} rows with a target; need at least 2")
    pre, enc = predictor.preprocessor_, predictor.target_encoder_
    return PreparedData(train_df, valid_df, pre.transform(train_df), enc.transform(train_df[target]),
                        pre.transform(valid_df), enc.transform(valid_df[target]))


def train_network(net: nn.Module, train: TabularArrays, y_train: torch.Tensor, valid: TabularArrays,
                  y_valid: torch.Tensor, *, task: str, loss_fn: nn.Module, cfg: TrainingConfig,
                  batch_size: int, sample_weights: np.ndarray | None = None,
                  description: str = "MLP") -> FitResult:
    """The MLP's own training routine on an existing network (fine-tune, distillation)."""
    from waypost.models.tabular_mlp import fit_tabular_net

    return fit_tabular_net(net, train, y_train, valid, y_valid, task=task, loss_fn=loss_fn, cfg=cfg,
                           batch_size=batch_size, sample_weights=sample_weights, description=description)


def label_tensor(task: str, y: np.ndarray) -> torch.Tensor:
    """Encoded targets as the engine takes them: the task's dtype (int64 codes, float32 values)."""
    from waypost.tasks import get_task

    return torch.from_numpy(np.ascontiguousarray(y, dtype=get_task(task).target_dtype()))


def n_classes(predictor: Any) -> int:
    """The predictor's class count, 0 for a task without classes."""
    from waypost.tasks import get_task

    return len(predictor.classes_) if get_task(predictor.task_).is_classification else 0


def mlp_latency(part: Any, arrays: TabularArrays, n_runs: int) -> dict[str, dict[str, float]]:
    """Median/p90 of `predict_raw` at batch 1 and batch 1024 (rows tiled when there are fewer)."""
    from waypost.deploy.report import measure_latency, take_rows

    one, batch = take_rows(arrays, 1), take_rows(arrays, 1024)
    return {"batch_1": measure_latency(lambda: part.predict_raw(one), n_runs),
            "batch_1024": measure_latency(lambda: part.predict_raw(batch), max(5, n_runs // 5),
                                          max_seconds=10.0)}


# ---- pruning ------------------------------------------------------------------------------------
def linear_layers(net: nn.Module, *, include_head: bool = True) -> list[tuple[str, nn.Linear]]:
    """The Linear layers; `include_head=False` leaves out the output layer (the net's `head`)."""
    head = getattr(net, "head", None)
    return [(name, m) for name, m in net.named_modules()
            if isinstance(m, nn.Linear) and (include_head or m is not head)]


def nonzero_parameters(net: nn.Module) -> int:
    return int(sum(int(torch.count_nonzero(p)) for p in net.parameters()))


def sparsity(net: nn.Module, *, include_head: bool = True) -> tuple[float, dict[str, float]]:
    """Fraction of exact zeros over the (prunable) Linear weights, and per Linear layer."""
    per_layer = {name: float((m.weight == 0).sum()) / m.weight.numel() for name, m in linear_layers(net)}
    layers = linear_layers(net, include_head=include_head)
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return (zeros / total if total else 0.0), per_layer


def weight_sizes(net: nn.Module) -> dict[str, int]:
    """Linear weights only: dense, zlib-compressed and CSR bytes (where pruning shows)."""
    from waypost.deploy.report import compressed_bytes, csr_bytes, dense_bytes

    weights = [m.weight for _, m in linear_layers(net)]
    return {"dense_bytes": dense_bytes(weights), "compressed_bytes": compressed_bytes(weights),
            "csr_bytes": sum(csr_bytes(w) for w in weights)}


def finetune_config(training: TrainingConfig, epochs: int) -> TrainingConfig:
    """A short, low-LR, cosine-to-zero run with no early stop: the masks, not the data, changed."""
    cfg = training.model_copy(deep=True)
    cfg.max_epochs = epochs
    cfg.learning_rate = training.learning_rate * FINETUNE_LR_FACTOR
    cfg.warmup_fraction = 0.0
    cfg.schedule = "warmup_cosine"
    cfg.early_stopping_patience = max(epochs, 1)
    cfg.weight_histograms = False
    cfg.time_limit = None
    return cfg


def _finetune(mlp: Any, data: PreparedData, task: str, training: TrainingConfig, epochs: int) -> FitResult:
    from waypost.tasks import get_task
    from waypost.train.batches import auto_batch_size, balanced_sample_weights

    cfg = finetune_config(training, epochs)
    loss_fn, sampling, _ = get_task(task).choose_loss(cfg, data.y_train, mlp.n_classes)
    batch = getattr(mlp, "batch_size_", None) or (cfg.batch_size if cfg.batch_size != "auto"
                                                  else auto_batch_size(len(data.y_train)))
    weights = balanced_sample_weights(data.y_train) if sampling == "oversample" else None
    return train_network(mlp.net_, data.train, label_tensor(task, data.y_train), data.valid,
                         label_tensor(task, data.y_valid), task=task, loss_fn=loss_fn, cfg=cfg,
                         batch_size=batch, sample_weights=weights, description="prune fine-tune")


def prune_predictor(predictor: Any, train_df: Any, valid_df: Any | None = None, *, amount: float = 0.5,
                    finetune_epochs: int = 5, prune_head: bool = False,
                    latency_runs: int = 100) -> tuple[Any, dict[str, Any]]:
    """Prune `amount` of the MLP's hidden Linear weights by global magnitude, fine-tune, make it permanent.

    Works on a deep copy; `predictor` is untouched. A blend gets its weight re-fitted on the
    validation rows, since a pruned MLP may deserve less (or more) trust than the dense one.
    `valid_df=None` splits validation rows off `train_df` exactly as the fit did.
    Returns (pruned predictor, report dict; `format_report` prints it).
    """
    from waypost.deploy.report import headline_metric

    predictor._check_fitted()
    if not 0.0 < float(amount) < 1.0:
        raise ConfigError(f"prune amount must be a fraction in (0, 1) of the MLP weights to zero, got {amount!r}")
    if finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs must be >= 0, got {finetune_epochs!r}")
    if any(name.startswith("mlp.") for name in predictor.parts_):
        raise ConfigError("pruning fine-tunes one MLP, but this model bags fold MLPs "
                          f"({', '.join(n for n in predictor.parts_ if n.startswith('mlp.'))}); retrain with "
                          "training.bagging: 0 (or preset fast) to prune, or distil it into one student")
    if "mlp" not in predictor.parts_ or predictor.selected_ == "gbm":
        raise ConfigError(
            f"pruning applies to the neural part, but this predictor's selected model is "
            f"{predictor.selected_!r} with no MLP (parts: {sorted(predictor.parts_)}); retrain with "
            "model='mlp' or 'blend', or use distillation / int8 export for tree models")
    task = predictor.task_
    data = prepare_data(predictor, train_df, valid_df)
    metric = headline_metric(task, n_classes(predictor))
    raws = {name: part.predict_raw(data.valid) for name, part in predictor.parts_.items()}  # each part once
    before = _measure(predictor, data, latency_runs, raws)

    pruned = copy.deepcopy(predictor)
    mlp = pruned.parts_["mlp"]
    layers = linear_layers(mlp.net_, include_head=prune_head)
    prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                              amount=float(amount))
    fit = _finetune(mlp, data, task, predictor.config_.training, finetune_epochs) if finetune_epochs else None
    for _, m in layers:
        prune.remove(m, "weight")
    mlp.net_.eval()

    raws["mlp"] = mlp.predict_raw(data.valid)  # only the MLP changed: the other parts' outputs stand
    weight_note = _refit_blend(pruned, data, raws)
    after = _measure(pruned, data, latency_runs, raws)
    pruned.fitted_ = replace(pruned.fitted_, validation_metrics=after["metrics"])
    achieved, per_layer = sparsity(mlp.net_, include_head=prune_head)

    scope = "Linear weights" if prune_head else "hidden Linear weights"
    kept = "embeddings" if prune_head else "output layer and embeddings"
    tuned = (f"{fit.epochs_run} epochs of recovery fine-tuning at lr "
             f"{predictor.config_.training.learning_rate * FINETUNE_LR_FACTOR:g} with the masks in place"
             if fit else "no fine-tuning")
    reason = (f"global L1 magnitude pruning of {len(layers)} MLP {scope[:-1]} matrices ({kept} kept dense), {tuned}; "
              f"validation {metric} {before['metrics'][metric]:.4f} -> {after['metrics'][metric]:.4f}; "
              f"compressed weights {before['size']['compressed_bytes']:,} -> "
              f"{after['size']['compressed_bytes']:,} bytes{weight_note}")
    pruned.fitted_ = replace(pruned.fitted_, plan=[*predictor.plan_, Decision("deploy", "pruning",
                                                                              f"{achieved:.0%} sparse", reason)])

    notes = ["unstructured zeros shrink the compressed size; dense CPU kernels run at the same speed"]
    if pruned.selected_ == "blend" and pruned.blend_weights_["mlp"] <= 0.0:
        notes.append("the re-fitted blend puts all weight on the GBM: the pruned MLP no longer helps")
    report = {
        "kind": "pruning",
        "headline": f"pruning: {achieved:.1%} of the MLP's {scope} zeroed (asked {amount:.0%}); "
                    f"selected model: {pruned.selected_}",
        "columns": ["dense", "pruned"], "metric": metric, "amount": float(amount),
        "sparsity": achieved, "per_layer_sparsity": per_layer,
        "metrics_before": before["metrics"], "metrics_after": after["metrics"],
        "mlp_metrics_before": before["mlp_metrics"], "mlp_metrics_after": after["mlp_metrics"],
        "parameters": after["parameters"],
        "nonzero_parameters_before": before["nonzero"], "nonzero_parameters": after["nonzero"],
        "size_before": before["size"], "size_after": after["size"],
        "latency_before": before["latency"], "latency_after": after["latency"],
        "blend_weights_before": dict(predictor.blend_weights_), "blend_weights_after": dict(pruned.blend_weights_),
        "finetune_epochs_run": fit.epochs_run if fit else 0, "finetune_seconds": fit.seconds if fit else 0.0,
        "notes": notes,
    }
    report["table"] = _table(metric, before, after)
    return pruned, report


def _measure(predictor: Any, data: PreparedData, latency_runs: int, raws: dict[str, np.ndarray]) -> dict[str, Any]:
    """Everything the report compares, measured the same way on the dense and the pruned model;
    `raws` holds each part's validation outputs."""
    from waypost.deploy.report import parameter_count
    from waypost.metrics import raw_metrics

    mlp = predictor.parts_["mlp"]
    model_raw = predictor.model_.combine(raws)
    return {
        "metrics": raw_metrics(predictor, model_raw, data.y_valid),
        "mlp_metrics": raw_metrics(predictor, raws["mlp"], data.y_valid),
        "size": weight_sizes(mlp.net_),
        "parameters": parameter_count(mlp.net_),
        "nonzero": nonzero_parameters(mlp.net_),
        "latency": mlp_latency(mlp, data.valid, latency_runs),
    }


def _refit_blend(pruned: Any, data: PreparedData, raws: dict[str, np.ndarray]) -> str:
    """Re-score the parts and, for a blend, re-fit its weight on validation rows; returns a plan note."""
    from waypost.ensemble.greedy import fit_weights
    from waypost.tasks import get_task

    task = get_task(pruned.task_)
    scores = dict(getattr(pruned, "validation_scores_", {}))
    scores.update({name: task.validation_loss(raws[name], data.y_valid) for name in pruned.parts_})
    note = ""
    if pruned.selected_ == "blend":  # the fit's ensembling, again, with the pruned MLP's outputs
        old = pruned.blend_weights_.get("gbm", 0.0)
        weights, scores["blend"] = fit_weights(task, {name: raws[name] for name in pruned.parts_}, data.y_valid)
        weights = {name: weights.get(name, 0.0) for name in pruned.parts_}  # the parts stay, maybe at weight 0
        pruned.fitted_ = replace(pruned.fitted_, weights=weights)
        note = f"; blend weight on GBM re-fitted {old:.2f} -> {weights['gbm']:.2f}"
    pruned.fitted_ = replace(pruned.fitted_, validation_scores=scores)
    return note


def _table(metric: str, before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    from waypost.deploy.report import comparison_row

    def row(name: str, key: tuple[str, ...], unit: str = "", ratio: bool = True) -> dict[str, Any]:
        a, b = before, after
        for k in key:
            a, b = a[k], b[k]
        return comparison_row(name, a, b, ratio=ratio, unit=unit)

    return [
        row(f"validation {metric}", ("metrics", metric), ratio=False),
        row(f"MLP alone {metric}", ("mlp_metrics", metric), ratio=False),
        row("MLP non-zero params", ("nonzero",)),
        row("weights dense", ("size", "dense_bytes"), "B"),
        row("weights zlib", ("size", "compressed_bytes"), "B"),
        row("weights CSR", ("size", "csr_bytes"), "B"),
        row("MLP latency b=1 p50", ("latency", "batch_1", "p50_ms"), "ms"),
        row("MLP latency b=1024 p50", ("latency", "batch_1024", "p50_ms"), "ms"),
    ]


def prune_command(model_dir: Any, train_data: Any, output: Any, amount: float = 0.5,
                  finetune_epochs: int = 5, valid_data: Any | None = None) -> dict[str, Any]:
    """`waypost prune MODEL_DIR --data train.csv -o pruned/`: load, prune, save, print the report."""
    from waypost.deploy.report import format_report
    from waypost.predictor import Predictor

    predictor = Predictor.load(model_dir)
    pruned, report = prune_predictor(predictor, train_data, valid_data, amount=amount,
                                     finetune_epochs=finetune_epochs)
    report["output"] = str(pruned.save(output))
    print(format_report(report))
    print(f"saved the pruned model to {report['output']}")
    return report
