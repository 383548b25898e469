"""Distillation and pruning on real data: what each buys in size and latency, and what it costs.

One teacher (the default GBM + MLP blend) is fitted on a stratified 70% of the data. Then:
- distillation: a student MLP trained on the teacher's soft labels replaces both parts;
- pruning: the teacher's MLP loses `--amount` of its hidden Linear weights, then fine-tunes.
Metrics are on the held-out 30% (never seen by any fit); latency is the model's predict_raw on
preprocessed rows (preprocessing is the same for every variant), median over many runs.

    python benchmarks/distill_prune.py [--dataset islr_default] [--student small] [--amount 0.7]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("DO_NOT_TRACK", "true")
warnings.filterwarnings("ignore")

#: tabular data sets of waypost.scenarios.datasets (their targets come from DATASETS)
CHOICES = ["islr_default", "breast_cancer", "penguins", "wine", "diabetes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="islr_default", choices=CHOICES)
    ap.add_argument("--preset", default="medium", choices=["fast", "medium", "best"])
    ap.add_argument("--student", default="small")
    ap.add_argument("--amount", type=float, default=0.7)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200, help="latency runs at batch 1 (batch 1024 gets a fifth)")
    args = ap.parse_args()

    import torch

    from waypost import Predictor
    from waypost.deploy.distill import distill_predictor
    from waypost.deploy.prune import prune_predictor
    from waypost.deploy.report import format_report, headline_metric
    from waypost.scenarios.datasets import DATASETS, load_dataset, split

    target = DATASETS[args.dataset].target
    train, test = split(load_dataset(args.dataset), target, test_size=0.3, seed=0)
    print(f"{args.dataset}: {len(train)} training rows, {len(test)} test rows; torch threads "
          f"{torch.get_num_threads()}, cpu count {os.cpu_count()}")

    started = time.perf_counter()
    teacher = Predictor(target=target, preset=args.preset, track=False, verbose=False).fit(train)
    print(f"teacher: {teacher.selected_} (weights {teacher.blend_weights_}) in {time.perf_counter() - started:.1f}s\n")
    n_classes = 0 if teacher.task_ == "regression" else len(teacher.classes_)
    metric = headline_metric(teacher.task_, n_classes)

    started = time.perf_counter()
    student, d_report = distill_predictor(teacher, train, student=args.student, latency_runs=args.runs)
    d_seconds = time.perf_counter() - started
    print(format_report(d_report))
    t_test, s_test = teacher.evaluate(test)[metric], student.evaluate(test)[metric]
    print(f"test {metric}: teacher {t_test:.4f}, student {s_test:.4f} ({s_test - t_test:+.4f}); "
          f"agreement {d_report['agreement']}; distillation took {d_seconds:.1f}s\n")

    if "mlp" not in teacher.parts_:
        print(f"pruning skipped: the teacher kept {teacher.selected_} only, with no MLP to prune")
        return
    started = time.perf_counter()
    pruned, p_report = prune_predictor(teacher, train, amount=args.amount, finetune_epochs=args.finetune_epochs,
                                       latency_runs=args.runs)
    p_seconds = time.perf_counter() - started
    print(format_report(p_report))
    p_test = pruned.evaluate(test)[metric]
    print(f"test {metric}: dense {t_test:.4f}, pruned {p_test:.4f} ({p_test - t_test:+.4f}); "
          f"pruning + fine-tune took {p_seconds:.1f}s")


if __name__ == "__main__":
    main()
