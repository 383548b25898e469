"""Section 5 of benchmarks/gpu_check.py (run with `python benchmarks/gpu_check.py --profile`): the
engine's overhead on the GPU.

waypost's whole fit per step (`fit_ms_per_step`: fit seconds / (epochs x training steps), so
Lightning's set-up, the first epoch's warm-up and a validation pass per epoch are in it) against
`bare_loop`, a minimal hand-written loop's training steps alone over the same batches (bf16
autocast, fused AdamW, no Lightning, an untimed warm-up epoch); a torch.profiler summary of a short
fit per model (`profile_fit`); and the text fit with and without cuDNN attention (see
`waypost.train.engine.attention_backends`). gpu_check imports this module from its `main` and
passes itself in (`gc`) for the shared helpers.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pandas as pd

NOTE = ("waypost_ms_per_step*: whole fit per step (setup, warm-up, validation included); "
        "bare_ms_per_step*: bare loop, training steps only")


def fit_ms_per_step(part: Any, train_rows: int) -> float:
    """Whole-fit milliseconds per training step of a part that trained on `train_rows` rows: fit
    seconds (set-up, warm-up and validation included) / (epochs run x full batches per epoch)."""
    return 1e3 * part.fit_.seconds / (max(part.fit_.epochs_run, 1) * max(train_rows // part.batch_size_, 1))


def bare_loop(net: Any, batches: Any, epochs: int, *, images: bool = False, mean: Any = None, std: Any = None) -> float:
    """Seconds per step of a minimal hand-written loop over the same batches: bf16 autocast, fused
    AdamW, no clipping, no scheduler, no Lightning. Image batches come as uint8 and are normalised
    on the GPU (the cheapest placement)."""
    import torch
    import torch.nn.functional as F

    from waypost.train.augment import normalize

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    net = net.to(dev).train()
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=1e-3, fused=True)
    steps, started = 0, None
    for epoch in range(epochs + 1):  # epoch 0 warms up (kernels, allocator) and is not timed
        if epoch == 1:
            sync()
            started, steps = time.perf_counter(), 0
        for batch in batches:
            *xs, y = (t.to(dev, non_blocking=True) for t in batch)
            if images:
                xs[0] = normalize(xs[0], mean, std)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = net(*xs)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    sync()
    net.cpu()
    return (time.perf_counter() - started) / max(steps, 1)


def profile_fit(log: Callable[[str], None], fit: Callable[[], Any]) -> dict[str, Any]:
    """torch.profiler over a short waypost fit: top ops by self CPU time and by GPU time, and the
    share of wall time the GPU was busy."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        started = time.perf_counter()
        fit()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
    avg = prof.key_averages()
    key = "self_device_time_total" if hasattr(avg[0], "self_device_time_total") else "self_cuda_time_total"
    log(avg.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=60))
    log(avg.table(sort_by=key, row_limit=8, max_name_column_width=60))
    gpu_us = sum(getattr(e, key) for e in avg if getattr(e, "device_type", None) is not None
                 and str(e.device_type).endswith("CUDA"))
    syncs = {e.key: e.count for e in avg if any(k in e.key for k in ("Synchronize", "_local_scalar_dense", "cudaMemcpy"))}
    return {"wall_s_profiled": round(wall, 2), "gpu_busy_s": round(gpu_us / 1e6, 3), "sync_like_calls": syncs}


def engine_overhead(gc: ModuleType, quick: bool, npz: Path, fortunes: Path, work: Path) -> dict[str, Any]:
    """waypost's whole fit per step on the GPU against `bare_loop`'s training steps on the same
    batches. `gc` is the gpu_check module (its fit, data and logging helpers)."""
    import copy
    from contextlib import nullcontext

    import torch

    import waypost.train.engine as engine
    from waypost.models.tabular_mlp import _tensors
    from waypost.models.text_model import trim_padding
    from waypost.train.batches import TensorBatches

    fit_predictor, log = gc.fit_predictor, gc.log
    out: dict[str, Any] = {"note": NOTE}
    epochs = 1 if quick else 3
    accel = "gpu" if torch.cuda.is_available() else "cpu"  # CPU only for a --quick smoke test of this code
    log(f"  {NOTE}")

    # tabular
    train, _ = gc.tabular_data()
    p, _ = fit_predictor(train, "label", model="mlp", accelerator=accel, precision="auto", epochs=epochs * 7)
    part = p.parts_["mlp"]
    arrays = p.preprocessor_.transform(train)
    tb = TensorBatches((*_tensors(arrays), torch_labels(p, train)), part.batch_size_, shuffle=True, drop_last=True)
    out["mlp"] = {"waypost_ms_per_step": round(fit_ms_per_step(part, gc.fit_rows(p, len(train))), 2),
                  "bare_ms_per_step": round(1e3 * bare_loop(copy.deepcopy(part.net_), tb, epochs * 7), 2)}
    log(f"  mlp: {out['mlp']}")
    out["mlp"]["profile"] = profile_fit(
        log, lambda: fit_predictor(train, "label", model="mlp", accelerator=accel, precision="auto", epochs=5))

    # images (augmentation off on both sides, so the batches are the same work)
    train_img, _ = gc.image_tables(npz, work / "fmnist-prof", 400 if quick else 5000, 0)
    for arch in ("small_cnn", "efficientnet_lite0"):
        p, _ = fit_predictor(train_img, "label", model=arch, accelerator=accel, precision="auto", epochs=epochs,
                             extra=gc.NO_AUG)
        part = p.parts_["image"]
        (imgs,) = p.preprocessor_.transform(train_img).arrays
        raw = RawImageBatches(imgs, torch_labels(p, train_img), part.batch_size_)
        out[arch] = {"waypost_ms_per_step": round(fit_ms_per_step(part, gc.fit_rows(p, len(train_img))), 2),
                     "bare_ms_per_step": round(1e3 * bare_loop(copy.deepcopy(part.net_), raw, epochs, images=True,
                                                               mean=part.mean_, std=part.std_), 2)}
        log(f"  {arch}: {out[arch]}")
        out[arch]["profile_1_epoch"] = profile_fit(
            log, lambda arch=arch: fit_predictor(train_img.iloc[: len(train_img) // 2], "label", model=arch,
                                                 accelerator=accel, precision="auto", epochs=1, extra=gc.NO_AUG))

    # text
    train_txt, _ = gc.fortunes_split(fortunes, 600 if quick else None)

    def text_fit() -> Any:
        p, _ = fit_predictor(train_txt, "category", model="scratch_transformer", accelerator=accel, precision="auto",
                             epochs=epochs, extra=gc.SCRATCH_TEXT)
        part = p.parts_["text"]
        return p, part, fit_ms_per_step(part, gc.fit_rows(p, len(train_txt)))

    p, part, per_step_wp = text_fit()  # waypost as shipped: cuDNN attention off while a GPU trains
    real = engine.attention_backends
    engine.attention_backends = lambda accelerator: nullcontext()  # as before the fix: torch's default order
    try:
        _, _, per_step_cudnn = text_fit()
    finally:
        engine.attention_backends = real
    ids, mask = p.preprocessor_.transform(train_txt).arrays
    tb = TensorBatches((torch.from_numpy(ids), torch.from_numpy(mask), torch_labels(p, train_txt)), part.batch_size_,
                       shuffle=True, drop_last=True, collate=trim_padding, lengths=mask.sum(1))
    out["scratch_transformer"] = {"waypost_ms_per_step": round(per_step_wp, 2),
                                  "waypost_ms_per_step_cudnn_attention": round(per_step_cudnn, 2),
                                  "bare_ms_per_step_default_backends": round(
                                      1e3 * bare_loop(copy.deepcopy(part.net_), tb, epochs), 2),
                                  "max_length": part.max_length}
    log(f"  scratch_transformer: {out['scratch_transformer']}")
    out["scratch_transformer"]["profile_1_epoch"] = profile_fit(
        log, lambda: fit_predictor(train_txt, "category", model="scratch_transformer", accelerator=accel,
                                   precision="auto", epochs=1, extra=gc.SCRATCH_TEXT))
    return out


def torch_labels(p: Any, df: pd.DataFrame) -> Any:
    import torch

    return torch.as_tensor(p.target_encoder_.transform(df[p.target_]), dtype=torch.int64)


class RawImageBatches:
    """uint8 image batches + labels, shuffled: what `bare_loop` normalises on the GPU itself."""

    def __init__(self, images: np.ndarray, y: Any, batch_size: int) -> None:
        import torch

        self.x, self.y, self.bs = torch.from_numpy(np.ascontiguousarray(images)), y, batch_size
        self.g = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.y) // self.bs

    def __iter__(self) -> Any:
        import torch

        order = torch.randperm(len(self.y), generator=self.g)
        for i in range(len(self)):
            idx = order[i * self.bs:(i + 1) * self.bs]
            yield self.x[idx], self.y[idx]
