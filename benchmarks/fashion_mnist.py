"""Fashion-MNIST end to end on CPU: train, test accuracy, then fp32 vs int8 bundles (size, latency, accuracy).

What it measures, all in one process:
1. `waypost.Predictor(target="label")` fits the full Fashion-MNIST training set (60,000 images;
   waypost holds out its own stratified 20% for validation / early stopping, so 48,000 train the
   CNN) and is scored on the 10,000 official test images, never seen by the fit. Target: test
   accuracy >= 0.91 on CPU. The training time is printed.
2. The model is exported twice: fp32 and int8 (static QDQ, per-channel weights, calibrated on
   training images). Printed for both: bundle size, 1-image latency p50, batch-1024 throughput
   (p50 of repeated calls), the int8/fp32 latency ratio, and test accuracy computed by the
   torch-free runtime (`waypost.runtime.load`) on the full test set. Target: int8 drops <= 1 point.

Settings, and why. The plan for 28 px grayscale images picks `small_cnn` (three conv blocks,
32-64-128 channels; the images keep their 28x28 size), augmentation off (48,000 images >= its
10,000 threshold) and no horizontal flip; every one of those defaults is kept. The timings and the
validation curve quoted below are from an older recorded run that trained at 32x32 (the old
multiple-of-8 rule), not from a run at 28 px. Only two training values are set:
- `training.max_epochs: 8` (default 200, early-stopping patience 20). The schedule is warmup +
  cosine over max_epochs, so the epoch budget also sets the decay: with 200 the learning rate barely
  decays within any budget a CPU can afford. In the 32 px run one epoch took ~2.4 min on 2 shared
  cores (more when the machine is busier), so 8 kept that run near 20 min, and validation accuracy
  went 0.861, 0.903, 0.908, 0.919, 0.924, 0.932, 0.935, 0.935 (validation loss 0.179 -> 0.178 over
  the last epoch, as the learning rate reached zero): the budget is spent where the curve is flat.
  Best weights are restored.
- `training.batch_size: 128` is what "auto" already picks for 48,000 images (auto is capped at 128
  for images; larger batches were slower per image on this CPU); written out so the run does not
  drift if that rule changes.
Both are flags (`--epochs`, `--batch-size`). The epoch budget was fixed before the test set was
scored, from timing and the validation curve; nothing was tuned on the test set.

Calibration and the export's own drop. `Predictor.export(data=...)` calibrates int8 on a seeded
sample of up to 256 rows of `data` (plus 8 random-pixel images it always adds) and measures fp32
vs int8 on all of `data`. The benchmark passes 256 training images only, so no test image is
seen by calibration; the export's own drop is on those training images, and the numbers that
count are the runtime accuracies on the test set (`bundle_metrics`, the same scoring as
`evaluate`), printed separately.

    python benchmarks/fashion_mnist.py                                # the full run (~20-30 min on 2 cores at 32 px)
    python benchmarks/fashion_mnist.py --train-per-class 300 --epochs 3 --test-limit 2000   # smoke
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-per-class", type=int, default=None,
                    help="training images per class (default: all 6,000, i.e. the full 60,000)")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test images (default: all 10,000)")
    ap.add_argument("--epochs", type=int, default=8, help="training.max_epochs")
    ap.add_argument("--batch-size", type=int, default=128, help="training.batch_size")
    ap.add_argument("--architecture", default="auto", help="model.architecture (auto: small_cnn for 28 px)")
    ap.add_argument("--calibration", type=int, default=256, help="training images the int8 export calibrates on")
    ap.add_argument("--latency-runs", type=int, default=300, help="1-image calls per bundle (batch: a tenth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="write the bundles here instead of a temporary folder")
    args = ap.parse_args()

    import numpy as np
    import torch

    import waypost.runtime as rt
    from bundle_size import du  # benchmarks/ is sys.path[0] when this runs as a script
    from waypost import Predictor
    from waypost.deploy.bundle import bundle_metrics, records_from_frame
    from waypost.scenarios.image_data import fashion_mnist

    train = fashion_mnist("train", n_per_class=args.train_per_class, seed=args.seed)
    test = fashion_mnist("test")
    if args.test_limit:
        test = test.head(args.test_limit)  # fashion_mnist's frames have a RangeIndex
    print(f"Fashion-MNIST: {len(train):,} training images (waypost splits off 20% for validation), "
          f"{len(test):,} test images; torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}")

    config = {
        "model": {"architecture": args.architecture},
        "training": {"max_epochs": args.epochs, "batch_size": args.batch_size},
    }
    started = time.perf_counter()
    p = Predictor(target="label", config=config, track=False, verbose=False, seed=args.seed).fit(train)
    train_s = time.perf_counter() - started
    for d in p.plan_:
        if d.step in ("architecture", "column", "training"):
            print(f"  plan  {d.subject}: {d.choice}")
    val_loss, val_acc = p.history_.get("val_loss", []), p.history_.get("val_metric", [])
    print("  epoch val_loss/val_acc: " + ", ".join(f"{i + 1}: {l:.3f}/{a:.4f}" for i, (l, a) in
                                                   enumerate(zip(val_loss, val_acc))))
    print(f"trained {p.config_.model.architecture} in {train_s:.1f}s ({train_s / 60:.1f} min), "
          f"{len(val_loss)} epochs; validation accuracy {p.validation_metrics_.get('accuracy', float('nan')):.4f}")

    started = time.perf_counter()
    test_acc = p.evaluate(test)["accuracy"]
    print(f"test accuracy (torch model, {len(test):,} images): {test_acc:.4f}  (target >= 0.91: "
          f"{'met' if test_acc >= 0.91 else 'NOT met'}); predicted in {time.perf_counter() - started:.1f}s\n")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="waypost-fmnist-"))
    calib = train.sample(n=min(args.calibration, len(train)), random_state=args.seed)  # never the test images
    reports = {}
    for opt in ("none", "int8"):
        started = time.perf_counter()
        reports[opt] = p.export(work / opt, optimize=opt, data=calib)
        print(f"exported {opt:4} bundle in {time.perf_counter() - started:.1f}s")
    q = reports["int8"]
    if "metrics" in q:
        m = q["metrics"]
        print(f"export report (fp32 vs int8 on the {len(calib):,} training rows it calibrated on): "
              f"accuracy {m['fp32']['accuracy']:.4f} -> {m['int8']['accuracy']:.4f}, drop {m['drop'] * 100:.2f} points")
    if "warning" in q:
        print(f"export warning: {q['warning']}")

    bundles = {opt: rt.load(work / opt) for opt in ("none", "int8")}
    records = records_from_frame(test, ["image"])
    one = {"image": records["image"][:1]}
    big_idx = np.arange(1024) % len(test)
    big = {"image": records["image"][big_idx]}
    for b in bundles.values():  # warm-up
        b.predict(one)
        b.predict(big)
    lat = {opt: [] for opt in bundles}
    thr = {opt: [] for opt in bundles}
    for i in range(args.latency_runs):  # interleaved, so a busy neighbour slows both alike
        for opt, b in bundles.items():
            t = time.perf_counter()
            b.predict({"image": records["image"][i % len(test):i % len(test) + 1]})
            lat[opt].append(time.perf_counter() - t)
    for _ in range(max(3, args.latency_runs // 10)):
        for opt, b in bundles.items():
            t = time.perf_counter()
            b.predict(big)
            thr[opt].append(time.perf_counter() - t)

    acc = {}  # opt -> (test accuracy from the runtime bundle, seconds it took)
    for opt, b in bundles.items():  # 1,000 images a call: all 10,000 at once triple the peak memory, 2-3x slower
        started = time.perf_counter()
        parts = [test.iloc[i:i + 1000] for i in range(0, len(test), 1000)]
        hits = sum(bundle_metrics(b, part)["accuracy"] * len(part) for part in parts)
        acc[opt] = (hits / len(test), time.perf_counter() - started)
    print(f"\n{'bundle':8} {'model.onnx':>11} {'bundle dir':>11} {'p50 1 image':>12} {'batch 1024':>13} "
          f"{'test acc (runtime)':>19}")
    for opt, name in (("none", "fp32"), ("int8", "int8")):
        onnx_kib = reports[opt]["size_bytes"] / 1024  # the export report's size is model.onnx's
        dir_kib = du(work / opt) / 1024
        p50 = statistics.median(lat[opt]) * 1e3
        rps = 1024 / statistics.median(thr[opt])
        print(f"{name:8} {onnx_kib:8.1f} KiB {dir_kib:8.1f} KiB {p50:9.3f} ms {rps:9,.0f} img/s "
              f"{acc[opt][0]:12.4f} ({acc[opt][1]:.1f}s)")
    p50_ratio = statistics.median(lat["int8"]) / statistics.median(lat["none"])
    thr_ratio = statistics.median(thr["none"]) / statistics.median(thr["int8"])
    drop = acc["none"][0] - acc["int8"][0]
    size_ratio = reports["int8"]["size_bytes"] / reports["none"]["size_bytes"]
    print(f"\nratio int8/fp32: 1-image latency p50 = {p50_ratio:.2f}, batch throughput = {thr_ratio:.2f}x, "
          f"model size = {size_ratio:.2f}")
    print(f"runtime fp32 vs torch model: {acc['none'][0]:.4f} vs {test_acc:.4f}")
    print(f"int8 accuracy drop on {len(test):,} test images: {drop * 100:+.2f} points  (target <= 1: "
          f"{'met' if drop <= 0.01 else 'NOT met'})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
