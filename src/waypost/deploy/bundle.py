"""Export a fitted Predictor to a bundle: `waypost.json` (everything the runtime needs, as JSON)
and `model.onnx` (MLP + trees + blend in one graph). Nothing pickled.

The export proves itself before the bundle is renamed into place: the torch-free runtime reloads
it and must reproduce the in-memory model (1e-4 for fp32). Optimised graphs (int8, fp16) are
compared on labelled data when given, and a metric drop over one point is reported loudly.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waypost import __version__
from waypost.errors import ConfigError, DataError

PARITY_TOLERANCE = 1e-4
MAX_METRIC_DROP = 0.01


def synthetic_rows(predictor: Any, n: int = 16) -> pd.DataFrame:
    """Rows built from the fitted state alone, each column's values by its kind (tabular: medians,
    known categories, one row with every value missing; images: random pixels of the trained size;
    texts: words from the tokenizer's vocabulary): lets an export trace, check parity and time
    latency when the caller passes no data. Tables with an encoder column get `n // 2` rows (an
    encoder row costs far more)."""
    from waypost.kinds import get_kind
    from waypost.kinds.frame import encoder_columns, tabular_columns

    rng = np.random.default_rng(0)
    state = predictor.preprocessor_.to_state()
    encoders = encoder_columns(state)
    n = n // 2 if encoders else n
    data: dict[str, list[Any]] = {}
    for entry in encoders:
        data[entry["name"]] = get_kind(entry["kind"]).synthetic_cells(entry, n, rng)
    for col in tabular_columns(state):
        vals = get_kind(col["kind"]).synthetic_cells(col, n, rng)
        vals[-1] = None  # one row with every tabular value missing
        data[col["name"]] = vals
    return pd.DataFrame(data)[list(predictor.features_)]


def _graphs(predictor: Any, sample: pd.DataFrame, inputs: Any, state: dict[str, Any],
            optimize: str) -> tuple[Any, Any]:
    """(fp32 graph, the graph to ship) of the fitted model.

    Tabular parts: one graph with the trees, the MLP and the ensemble (`build_model_graph`). One
    encoder column: its kind's export and int8 recipe. Several: the multi-column network's graph.
    Static int8 calibrates on feeds built by the runtime's own transform: exactly what the bundle
    will feed."""
    from waypost.deploy.onnx_graph import build_model_graph
    from waypost.deploy.quantize import optimize_model
    from waypost.kinds import get_kind

    pre = predictor.preprocessor_
    if not pre.columns:
        fp32 = build_model_graph(predictor, inputs)
        return fp32, optimize_model(fp32, optimize)

    def calibration(graph: Any) -> list[dict[str, np.ndarray]]:
        from waypost.runtime.bundle import input_transform

        transform = input_transform(state)
        records = records_from_frame(sample, list(predictor.features_))
        names = {i.name for i in graph.graph.input}
        feeds = []
        for i in range(0, len(sample), 16):
            chunk = {c: v[i:i + 16] for c, v in records.items()}
            views = transform(chunk, len(next(iter(chunk.values()))))
            feeds.append({k: v for k, v in views.items() if k in names})
        return feeds

    part = _network_graph_part(predictor)
    if len(pre.columns) == 1:
        kind = get_kind(next(iter(pre.columns.values())).kind)
        return kind.export_graph(part, inputs, optimize, calibration)
    fp32 = part.to_onnx(inputs)
    return fp32, optimize_model(fp32, optimize)


class _Hybrid:
    """A column network and the GBM on its features, exported as one graph (`models.column_gbm`)."""

    def __init__(self, network: Any, gbm: Any, weights: dict[str, float], names: dict[str, str]) -> None:
        self.network, self.gbm, self.weights, self.names = network, gbm, weights, names

    def to_onnx(self, inputs: Any) -> Any:
        from waypost.models.column_gbm import hybrid_graph

        return hybrid_graph(self.network, self.gbm, self.weights, self.names, inputs)


def _network_graph_part(predictor: Any) -> Any:
    """What exports an encoder-column model: its network, or the network + the GBM on its features."""
    parts, weights = predictor.parts_, predictor.blend_weights_
    for name, part in parts.items():
        if getattr(part, "reads", None) and weights.get(name, 0.0) > 0:
            return _Hybrid(parts[part.reads], part, weights, {"network": part.reads, "gbm": name})
    (network,) = [p for n, p in parts.items() if weights.get(n, 0.0) > 0]
    return network


def _latency(bundle: Any, records: list[dict[str, Any]], runs: int = 200) -> dict[str, float]:
    from waypost.deploy.report import measure_latency
    from waypost.kinds import get_kind

    # a Transformer costs ~20 ms a row on CPU: fewer runs, and batches of 64 rather than 1,024
    costly = any(get_kind(k).costly for k in bundle.features.values())
    one = measure_latency(lambda: bundle.predict(records[:1]), 20 if costly else runs)
    size = 64 if costly else 1024
    big = (records * (size // max(len(records), 1) + 1))[:size]
    batch = measure_latency(lambda: bundle.predict(big), 3, warmup=1)
    return {"p50_ms_1row": one["p50_ms"], "p99_ms_1row": one["p99_ms"], "batch_rows": size,
            "rows_per_s_batch": len(big) / (batch["p50_ms"] / 1e3)}


def bundle_metrics(bundle: Any, df: pd.DataFrame) -> dict[str, float]:
    """`evaluate`'s metrics for a bundle on labelled rows, with the bundle's own label map."""
    from waypost.data.target import drop_missing_target
    from waypost.metrics import classification_metrics, regression_metrics
    from waypost.pipelines.plan import require_target
    from waypost.runtime.features import canonical

    require_target(df, bundle.target, "the evaluation data")
    df, _ = drop_missing_target(df, bundle.target)
    if df.empty:
        raise DataError(f"target column '{bundle.target}' has no values in the evaluation data")
    from waypost.tasks import get_task

    out = bundle.infer(records_from_frame(df, list(bundle.features)))
    if not get_task(bundle.task).is_classification:
        y = pd.to_numeric(df[bundle.target], errors="coerce").to_numpy(np.float64)
        return regression_metrics(y, out["prediction"])
    index = {canonical(c): i for i, c in enumerate(bundle.classes)}
    keys = [canonical(v) for v in df[bundle.target].tolist()]
    unseen = sorted({k for k in keys if k not in index})
    if unseen:
        raise DataError(f"target column '{bundle.target}' has labels the bundle never saw: {unseen[:5]}")
    return classification_metrics(np.array([index[k] for k in keys]), out["proba"])


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a JSON client sends them: NaN -> None, numpy scalars -> Python values."""
    return [{k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v))
             for k, v in rec.items()} for rec in df.to_dict("records")]


def records_from_frame(df: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Column arrays for the runtime (`waypost.runtime.frames.frame_columns`)."""
    from waypost.runtime.frames import frame_columns

    return frame_columns(df, columns)


def export_bundle(predictor: Any, path: str | Path, *, optimize: str = "none",
                  data: pd.DataFrame | None = None) -> dict[str, Any]:
    from waypost.persistence import _json_default, atomic_directory
    from waypost.runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST, Bundle

    if optimize not in ("none", "int8", "fp16"):
        raise ConfigError(f"optimize: expected none, int8 or fp16, got {optimize!r}")
    sample = synthetic_rows(predictor)
    if data is not None:
        missing = [c for c in predictor.features_ if c not in data.columns]
        if missing:
            raise DataError(f"export data is missing columns: {missing}")
        # a seeded sample, not the first rows: class-folder tables are sorted by label, and int8
        # calibration on one class would clip every other class's activations
        rows = data[list(predictor.features_)]
        rows = rows.sample(n=min(256, len(rows)), random_state=0) if len(rows) > 256 else rows
        sample = pd.concat([rows, sample], ignore_index=True)
    inputs = predictor.preprocessor_.transform(sample)  # once: graphs, calibration and parity share it
    state = predictor.preprocessor_.to_state()
    fp32, model = _graphs(predictor, sample, inputs, state, optimize)
    blob = model.SerializeToString()
    reg = predictor.registered_model_ or {}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "waypost_version": __version__,
        "task": predictor.task_, "target": predictor.target_, "features": predictor.features_,
        "preprocessor": state,
        "target_encoder": predictor.target_encoder_.to_state(),
        "model": {"file": "model.onnx", "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
                  "optimize": optimize, "parts": predictor.blend_weights_, "selected": predictor.selected_,
                  "inputs": [i.name for i in model.graph.input], "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import}},
        "model_version": f"{reg['registered_model']}/{reg['version']}" if reg.get("version") else None,
        "metrics": {"validation": predictor.validation_metrics_},
        "lineage": predictor.lineage_,
        "plan": [d.to_dict() for d in predictor.plan_],
    }
    records = records_from_frame(sample, list(predictor.features_))
    record_list = [dict(zip(records, vals)) for vals in zip(*records.values())]
    with atomic_directory(path, marker=MANIFEST) as tmp:
        (tmp / "model.onnx").write_bytes(blob)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
        bundle = Bundle(tmp)
        expected = predictor.model_.predict_raw(inputs)
        report = _check(predictor, bundle, expected, record_list, optimize, data, fp32, tmp)
        (tmp / "export_report.json").write_text(json.dumps(report, indent=2))
    return report


def _check(predictor: Any, bundle: Any, expected: np.ndarray, records: list[dict[str, Any]], optimize: str,
           data: pd.DataFrame | None, fp32: Any, tmp: Path) -> dict[str, Any]:
    """Parity against the in-memory model's `expected` raw outputs, size, latency, and the metric
    before/after optimising."""
    from waypost.deploy.report import headline_metric

    got = bundle.raw(records)
    diff = float(np.max(np.abs(got - expected.reshape(len(got), -1))))
    if optimize == "none" and diff > PARITY_TOLERANCE:
        raise DataError(f"exported graph differs from the model by {diff:.2e} (> {PARITY_TOLERANCE}); export aborted")
    report: dict[str, Any] = {
        "optimize": optimize, "max_abs_diff_vs_model": diff,
        "size_bytes": (tmp / "model.onnx").stat().st_size, "latency": _latency(bundle, records),
    }
    if optimize == "fp16" and "CUDAExecutionProvider" not in bundle.session.get_providers():
        report["note"] = ("fp16 is for GPU execution providers; here onnxruntime runs it on the CPU provider, which "
                          "computes in fp32 behind inserted casts: half the size, not faster (EfficientNet-Lite0 ran "
                          "at 0.6x of fp32 on one). Export with --optimize none or int8 for CPU serving.")
    if optimize != "none":
        from waypost.runtime.bundle import Bundle

        ref_dir = tmp.parent / f"{tmp.name}-fp32"
        ref_dir.mkdir()
        try:
            blob = fp32.SerializeToString()
            (ref_dir / "model.onnx").write_bytes(blob)
            manifest = json.loads((tmp / "waypost.json").read_text())
            manifest["model"].update(digest="sha256:" + hashlib.sha256(blob).hexdigest(), optimize="none")
            (ref_dir / "waypost.json").write_text(json.dumps(manifest))
            ref = Bundle(ref_dir)
            report["fp32"] = {"size_bytes": (ref_dir / "model.onnx").stat().st_size, "latency": _latency(ref, records)}
            if data is not None and predictor.target_ in data.columns:
                before, after = bundle_metrics(ref, data), bundle_metrics(bundle, data)
                key = headline_metric(predictor.task_, len(bundle.classes or []))
                drop = before[key] - after[key]
                report["metrics"] = {"fp32": before, optimize: after, "primary": key, "drop": drop}
                if drop > MAX_METRIC_DROP:
                    report["warning"] = (f"{optimize} costs {drop * 100:.1f} points of {key} "
                                         f"({before[key]:.4f} -> {after[key]:.4f}): over the 1-point budget")
            else:
                report["warning"] = f"no labelled data given: the {optimize} metric drop was not measured"
        finally:
            import shutil

            shutil.rmtree(ref_dir, ignore_errors=True)
    return report
