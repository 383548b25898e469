"""Measurements shared by the deploy steps (pruning, distillation, export): latency, size, a report table.

Every optimisation trades accuracy for size or speed, so each one reports both sides measured the
same way: latency as percentiles over many runs (a mean hides the tail a server sees; one run measures
the scheduler), and size as the dense bytes, the zlib-compressed bytes (what a sparse model saves on
disk or on the wire) and the CSR bytes (what a sparse kernel would hold in memory).
"""
from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


# ---- latency ------------------------------------------------------------------------------------
def measure_latency(fn: Callable[[], Any], n_runs: int = 100, *, warmup: int = 3,
                    max_seconds: float | None = None) -> dict[str, float]:
    """Call `fn()` `n_runs` times (after `warmup` untimed calls) and return percentiles in ms.

    Returns {"p50_ms", "p90_ms", "p99_ms", "n_runs"}. `max_seconds` stops early (after at least 5 timed runs)
    so a slow model cannot stall a benchmark; `n_runs` then says how many were really taken.
    """
    if n_runs < 1:
        raise ValueError(f"measure_latency: n_runs must be >= 1, got {n_runs}")
    for _ in range(max(warmup, 0)):
        fn()
    times: list[float] = []
    budget_end = None if max_seconds is None else time.perf_counter() + max_seconds
    for _ in range(n_runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if budget_end is not None and len(times) >= 5 and time.perf_counter() > budget_end:
            break
    ms = np.asarray(times) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "n_runs": len(times)}


# ---- size -----------------------------------------------------------------------------------------
def parameter_count(net: nn.Module) -> int:
    """Trainable and frozen parameters (buffers such as batchnorm statistics are not counted)."""
    return int(sum(p.numel() for p in net.parameters()))


def tensors_bytes(tensors: Iterable[torch.Tensor]) -> bytes:
    """The raw little-endian bytes of the tensors, one after the other (what a weights file holds)."""
    return b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in tensors)


def dense_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def compressed_bytes(tensors: Iterable[torch.Tensor], level: int = 6) -> int:
    """zlib size of the raw weights: zeros from pruning compress, so this is the on-disk saving."""
    return len(zlib.compress(tensors_bytes(tensors), level))


def csr_bytes(weight: torch.Tensor, index_bytes: int = 4) -> int:
    """Bytes of a 2-D weight in CSR form: the non-zero values, their column indices and row pointers.

    Unstructured sparsity only saves memory past about 50% zeros for float32 with int32 indices,
    which this number makes visible.
    """
    w = weight.detach()
    if w.dim() != 2:
        return dense_bytes([w])
    nnz = int(torch.count_nonzero(w))
    return nnz * (w.element_size() + index_bytes) + (w.shape[0] + 1) * index_bytes


# ---- formatting --------------------------------------------------------------------------------
def comparison_row(name: str, left: float | int | None, right: float | int | None, *,
                   ratio: bool = False, unit: str = "") -> dict[str, Any]:
    """One row of a before/after table; `ratio` adds left / right (a speed-up or a size reduction)."""
    row: dict[str, Any] = {"name": name, "values": [left, right], "unit": unit}
    if ratio and left is not None and right:
        row["ratio"] = float(left) / float(right)
    return row


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        text = f"{int(value):,}"
    elif isinstance(value, (float, np.floating)):
        v = float(value)
        text = f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def format_report(report: Mapping[str, Any]) -> str:
    """Plain text: the headline, the comparison table (with ratios) and per-layer sparsity if any.

    Plain text rather than a rich table so it reads the same in a log file, a CI job and a terminal.
    """
    lines = [str(report.get("headline", report.get("kind", "report")))]
    rows = report.get("table", [])
    if rows:
        left, right = report.get("columns", ["before", "after"])
        width = max(len(r["name"]) for r in rows) + 2
        lines.append(f"{'':<{width}}{left:>16}{right:>16}{'ratio':>10}")
        for r in rows:
            a, b = (_fmt(v, r.get("unit", "")) for v in r["values"])
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            lines.append(f"{r['name']:<{width}}{a:>16}{b:>16}{ratio:>10}")
    layers = report.get("per_layer_sparsity")
    if layers:
        lines.append("per-layer sparsity: " + ", ".join(f"{k} {v:.0%}" for k, v in layers.items()))
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


# ---- inputs and metrics ------------------------------------------------------------------------
def take_rows(arrays: Any, n: int) -> Any:
    """The first `n` rows of a TabularArrays-like dataclass, repeating rows when there are fewer,
    so a batch-1024 latency means 1024 rows even on a 100-row validation set."""
    import dataclasses

    fields = {f.name: getattr(arrays, f.name) for f in dataclasses.fields(arrays)}
    total = len(next(iter(fields.values())))
    if total == 0:
        raise ValueError("take_rows: no rows to take from")
    idx = np.arange(n) % total
    return type(arrays)(**{k: np.ascontiguousarray(v[idx]) for k, v in fields.items()})


def headline_metric(task: str, n_classes: int = 0) -> str:
    """The one number a before/after row shows, the task's (`waypost.tasks`): ROC AUC for binary
    (threshold-free, fair under imbalance), accuracy for multiclass, R2 for regression."""
    from waypost.tasks import get_task

    return get_task(task).headline_metric(n_classes)
