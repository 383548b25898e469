"""Training-engine overhead: waypost's MLP training throughput / a minimal hand-written PyTorch loop.

Same network (TabularMLP), same real data (ISLR Default, 10,000 rows, via waypost's preprocessing),
same batch size and epochs, one process, alternating runs; the ratio of medians is printed.
waypost's run includes everything it does by default: validation every epoch, early-stopping and
best-weights bookkeeping, gradient clipping with norm logging, warmup+cosine schedule, weight norms.
Target: ratio >= 0.8.

    python benchmarks/train_overhead.py [--epochs 15] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("DO_NOT_TRACK", "true")

import numpy as np
import torch


def prepare():
    from waypost.data.preprocess import TabularPreprocessor
    from waypost.data.target import TargetEncoder
    from waypost.scenarios.datasets import load_dataset, split

    df = load_dataset("islr_default")
    train, valid = split(df, "default", test_size=0.2, seed=0)
    features = {"student": "binary", "balance": "numeric", "income": "numeric"}
    pre = TabularPreprocessor(features).fit(train)
    enc = TargetEncoder("binary").fit(train["default"])
    return pre, pre.transform(train), enc.transform(train["default"]), pre.transform(valid), enc.transform(valid["default"])


def run_waypost(pre, a_tr, y_tr, a_va, y_va, epochs: int, batch: int) -> float:
    from waypost.config import TrainingConfig
    from waypost.models.tabular_mlp import MLPModel

    cfg = TrainingConfig(max_epochs=epochs, early_stopping_patience=epochs + 1, batch_size=batch, imbalance="none")
    model = MLPModel(task="binary", n_classes=2, cardinalities=pre.category_cardinalities_, training=cfg)
    t = time.perf_counter()
    model.fit(a_tr, y_tr, a_va, y_va)
    seconds = time.perf_counter() - t
    assert model.fit_.epochs_run == epochs, model.fit_.epochs_run
    return epochs * (len(y_tr) // batch) * batch / seconds


def run_plain(pre, a_tr, y_tr, epochs: int, batch: int) -> float:
    from waypost.config import MLPConfig
    from waypost.models.tabular_mlp import TabularMLP

    torch.manual_seed(0)
    c = MLPConfig()
    net = TabularMLP(a_tr.numeric.shape[1], pre.category_cardinalities_, 2, c.hidden, c.dropout, c.batchnorm)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
    xn, xc = torch.from_numpy(a_tr.numeric), torch.from_numpy(a_tr.categorical)
    y = torch.from_numpy(np.asarray(y_tr, dtype=np.int64))
    n = len(y)
    t = time.perf_counter()
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(n // batch):
            idx = perm[i * batch : (i + 1) * batch]
            loss = torch.nn.functional.cross_entropy(net(xn[idx], xc[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epochs * (n // batch) * batch / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: waypost's automatic batch size for this data (what users get)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = prepare()
    pre, a_tr, y_tr, a_va, y_va = data
    if args.batch_size is None:
        from waypost.train.batches import auto_batch_size

        args.batch_size = auto_batch_size(len(y_tr))
    run_plain(pre, a_tr, y_tr, 1, args.batch_size)  # warm-up both paths
    run_waypost(*data, 1, args.batch_size)
    ours, plain = [], []
    for _ in range(args.repeats):
        plain.append(run_plain(pre, a_tr, y_tr, args.epochs, args.batch_size))
        ours.append(run_waypost(*data, args.epochs, args.batch_size))
    o, p = statistics.median(ours), statistics.median(plain)
    print(f"rows: {len(y_tr)} train, batch {args.batch_size}, {args.epochs} epochs x {args.repeats} repeats")
    print(f"hand-written loop : {p:12,.0f} rows/s")
    print(f"waypost engine    : {o:12,.0f} rows/s")
    print(f"ratio waypost/plain = {o / p:.2f}  (target >= 0.80)")


if __name__ == "__main__":
    main()
