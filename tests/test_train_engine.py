"""The training engine's tricks, each checked for an effect that could go wrong."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from waypost.config import TrainingConfig
from waypost.models.tabular_mlp import TabularMLP
from waypost.train.batches import TensorBatches, auto_batch_size, balanced_sample_weights
from waypost.models.inference import predict_network
from waypost.train.engine import fit_network
from waypost.train.losses import FocalLoss, choose_loss, class_weights
from waypost.train.optim import make_optimizer, make_scheduler


def test_focal_loss_reduces_to_cross_entropy_and_downweights_easy_examples():
    logits = torch.tensor([[4.0, -4.0], [0.1, 0.0], [-1.0, 2.0]])
    y = torch.tensor([0, 1, 1])
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, y), F.cross_entropy(logits, y), atol=1e-6)
    per_ce = F.cross_entropy(logits, y, reduction="none")
    focal = FocalLoss(gamma=2.0)
    # the easy first example loses most of its weight relative to the hard second one
    assert focal(logits[:1], y[:1]) / per_ce[0] < focal(logits[1:2], y[1:2]) / per_ce[1]


def test_imbalance_rule_picks_class_weights_only_when_imbalanced():
    _, _, d = choose_loss("binary", "auto", "auto", 2.0, np.array([9670, 330]))
    assert d.choice == "class_weights"
    _, _, d = choose_loss("binary", "auto", "auto", 2.0, np.array([500, 450]))
    assert d.choice == "cross_entropy"
    _, sampling, d = choose_loss("binary", "auto", "oversample", 2.0, np.array([900, 100]))
    assert sampling == "oversample" and d.choice == "oversample"
    w = class_weights(np.array([900, 100]))
    assert w[1] / w[0] == pytest.approx(3.0) and w.mean() == pytest.approx(1.0)


def test_oversampling_draws_classes_evenly():
    y = np.array([0] * 950 + [1] * 50)
    batches = TensorBatches((torch.from_numpy(y),), 100, sample_weights=balanced_sample_weights(y), seed=1)
    drawn = torch.cat([b[0] for b in batches]).numpy()
    assert 0.4 < drawn.mean() < 0.6


def test_no_weight_decay_on_biases_and_norms_and_warmup_cosine_shape():
    net = TabularMLP(3, [4], 2, [8])
    opt = make_optimizer(net, 1e-2, 0.1)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in net.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert opt.param_groups[1]["weight_decay"] == 0.0
    sched = make_scheduler(opt, "warmup_cosine", total_steps=100, warmup_fraction=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9] and max(lrs) == pytest.approx(1e-2)
    assert lrs[-1] < 1e-4 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def _wine_tensors():
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, va = idx[:120], idx[120:]
    cat = np.zeros((len(y), 0), dtype=np.int64)
    t = lambda i: (torch.from_numpy(X[i]), torch.from_numpy(cat[i]), torch.from_numpy(y[i]))  # noqa: E731
    return t(tr), t(va)


def test_engine_learns_restores_best_weights_and_logs_every_epoch():
    (tr, va) = _wine_tensors()
    net = TabularMLP(13, [], 3, [32], dropout=0.1)
    cfg = TrainingConfig(max_epochs=30, early_stopping_patience=5, learning_rate=1e-2)
    res = fit_network(net, TensorBatches(tr, 32, shuffle=True, drop_last=True), TensorBatches(va, 512),
                      task="multiclass", loss_fn=torch.nn.CrossEntropyLoss(), cfg=cfg)
    h = res.history
    n = len(h["val_loss"])
    assert n >= 2 and all(len(h[k]) == n for k in ("train_loss", "lr", "grad_norm_mean", "grad_norm_max"))
    assert h["train_loss"][-1] < h["train_loss"][0]
    # the weights left in the network are the best epoch's, not the last one's
    out = torch.from_numpy(predict_network(net, va[:2]))
    restored = float(F.cross_entropy(out, va[2]))
    assert restored == pytest.approx(min(h["val_loss"]), rel=1e-4)
    assert restored == pytest.approx(h["val_loss"][res.best_epoch], rel=1e-4)
    assert (out.argmax(1) == va[2]).float().mean() > 0.9
    assert max(h["grad_norm_max"]) < 1e3 and all(math.isfinite(v) for v in h["grad_norm_mean"])
    assert res.weight_histograms and "body.0.weight" in res.weight_histograms[0]["layers"]


def test_gradient_clipping_hook_clips_to_the_global_norm_and_reports_the_raw_norm():
    from waypost.train.engine import SupervisedModule

    (tr, va) = _wine_tensors()
    net = TabularMLP(13, [], 3, [16], batchnorm=False, dropout=0.0)
    module = SupervisedModule(net, torch.nn.CrossEntropyLoss(), "multiclass", TrainingConfig(grad_clip_norm=1.0), 10)
    loss = F.cross_entropy(net(tr[0] * 1e4, tr[1]), tr[2])
    loss.backward()
    raw = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()])
    assert raw > 10
    module.on_before_optimizer_step(None)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()])
    assert float(clipped) == pytest.approx(1.0, rel=1e-4)
    assert float(module._grad_norms[-1]) == pytest.approx(float(raw), rel=1e-5)


def test_gpu_fits_train_without_cudnn_attention_and_restore_the_flags(monkeypatch):
    """cuDNN attention builds a plan per new (batch, length); trimmed text batches change length
    nearly every step, which made GPU text fits ~20x slower (engine.attention_backends)."""
    import waypost.train.engine as engine

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with engine.attention_backends("gpu"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with engine.attention_backends("cpu"):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before

    seen = []
    real = engine.attention_backends
    monkeypatch.setattr(engine, "attention_backends", lambda acc: seen.append(acc) or real(acc))
    (tr, va) = _wine_tensors()
    fit_network(TabularMLP(13, [], 3, [8]), TensorBatches(tr, 32, shuffle=True, drop_last=True), TensorBatches(va, 512),
                task="multiclass", loss_fn=torch.nn.CrossEntropyLoss(), cfg=TrainingConfig(max_epochs=1))
    assert seen == [engine.resolve_device(TrainingConfig())[0]]  # the fit's own accelerator decides


def test_time_limit_stops_training():
    (tr, va) = _wine_tensors()
    net = TabularMLP(13, [], 3, [64])
    cfg = TrainingConfig(max_epochs=100_000, early_stopping_patience=100_000)
    res = fit_network(net, TensorBatches(tr, 8, shuffle=True), TensorBatches(va, 512), task="multiclass",
                      loss_fn=torch.nn.CrossEntropyLoss(), cfg=cfg, time_limit=2.0)
    assert res.seconds < 6 and res.epochs_run < 100_000


def test_auto_batch_size_bounds():
    assert auto_batch_size(100) == 16 and auto_batch_size(10_000) == 512 and auto_batch_size(2_000) == 128


def test_length_bucketing_keeps_every_row_and_groups_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    rows = torch.arange(1000)
    train = TensorBatches((rows,), 10, shuffle=True, seed=0, lengths=lengths)
    epoch1 = [b[0] for b in train]
    epoch2 = torch.cat([b[0] for b in train])
    assert sorted(torch.cat(epoch1).tolist()) == list(range(1000))  # every row once per epoch
    assert not torch.equal(torch.cat(epoch1), epoch2)  # a new order each epoch
    spread = np.mean([np.ptp(lengths[b.numpy()]) for b in epoch1])
    plain = TensorBatches((rows,), 10, shuffle=True, seed=0)
    spread_plain = np.mean([np.ptp(lengths[b[0].numpy()]) for b in plain])
    assert spread < spread_plain / 5, (spread, spread_plain)  # batches pad to far less
    valid = torch.cat([b[0] for b in TensorBatches((rows,), 64, lengths=lengths)])
    assert (np.diff(lengths[valid.numpy()]) >= 0).all()  # evaluation: sorted outright


def test_best_weights_selects_on_error_with_loss_ties_and_stops_after_patience():
    """val_error keeps the most accurate epoch even when the loss rose meanwhile; equal errors go to
    the lower loss; `patience` epochs without improvement stop training."""
    from types import SimpleNamespace

    from waypost.train.callbacks import BestWeights

    net = torch.nn.Linear(1, 1)
    epochs = [(0.30, 0.9), (0.20, 1.1), (0.20, 1.0), (0.25, 0.7), (0.25, 0.6), (0.22, 0.5)]
    runs = {}
    for monitor in ("val_error", "val_loss"):
        best = BestWeights(monitor, patience=3)
        trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, should_stop=False)
        for epoch, (error, loss) in enumerate(epochs):
            trainer.current_epoch = epoch
            with torch.no_grad():
                net.weight.fill_(epoch)
            best.on_validation_end(trainer, SimpleNamespace(epoch_metrics={"val_error": error, "val_loss": loss},
                                                            net=net))
            if trainer.should_stop:
                break
        best.on_fit_end(trainer, SimpleNamespace(net=net))
        runs[monitor] = (best.best_epoch, trainer.current_epoch, float(net.weight))
    assert runs["val_error"] == (2, 5, 2.0)  # 0.20 twice: the lower loss (epoch 2); stopped 3 epochs later
    assert runs["val_loss"] == (5, 5, 5.0)  # the loss kept improving: no early stop
    diverged = BestWeights("val_loss", patience=50)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=3, should_stop=False)
    diverged.on_validation_end(trainer, SimpleNamespace(epoch_metrics={"val_error": 0.5, "val_loss": float("nan")},
                                                        net=net))
    assert trainer.should_stop  # a NaN loss stops at once, as Lightning's EarlyStopping did
    with pytest.raises(ValueError, match="val_loss or val_error"):
        BestWeights("accuracy")


def test_time_limit_stops_between_batches_before_the_deadline_and_says_so():
    """DeadlineStop: the last batch, the final validation and a prediction pass all fit in the limit."""
    (tr, va) = _wine_tensors()
    cfg = TrainingConfig(max_epochs=100_000, early_stopping_patience=100_000)
    res = fit_network(TabularMLP(13, [], 3, [64]), TensorBatches(tr, 8, shuffle=True), TensorBatches(va, 512),
                      task="multiclass", loss_fn=torch.nn.CrossEntropyLoss(), cfg=cfg, time_limit=3.0)
    assert res.seconds <= 3.0, res.seconds
    assert res.time_note and "of 100000" in res.time_note and "time_limit" in res.time_note
    assert res.epochs_run >= 2


def test_a_signal_mid_fit_then_resume_from_the_epoch_checkpoint_gives_the_uninterrupted_network(tmp_path):
    """SIGINT at a batch of epoch 5 (a real signal through the fit's handler): FitInterrupted, the
    checkpoint holds epoch 4; resuming replays the rest bit for bit (weights, AdamW moments, the
    cosine schedule, BestWeights' snapshot, History, the shuffle and dropout RNG)."""
    import os
    import signal

    import lightning.pytorch as L

    from waypost.train.checkpoint import CheckpointStore
    from waypost.train.interrupt import FitInterrupted, interrupt_guard
    from waypost.train.session import FitSession, TimeBudget, fit_session

    (tr, va) = _wine_tensors()
    cfg = TrainingConfig(max_epochs=10, early_stopping_patience=50, learning_rate=1e-2)

    class SignalAt(L.Callback):
        def __init__(self, epoch: int | None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            if trainer.current_epoch == self.epoch and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGINT)

    def run(*, signal_epoch: int | None = None, resume: bool = False):  # noqa: ANN202
        torch.manual_seed(0)
        net = TabularMLP(13, [], 3, [32], dropout=0.2)
        store = CheckpointStore(tmp_path / "ck", "k", "wine")
        store.open(resume=resume)
        session = FitSession(TimeBudget(None), store)
        with interrupt_guard(), fit_session(session), session.part("mlp"):
            res = fit_network(net, TensorBatches(tr, 16, shuffle=True, drop_last=True), TensorBatches(va, 512),
                              task="multiclass", loss_fn=torch.nn.CrossEntropyLoss(), cfg=cfg,
                              callbacks=[SignalAt(signal_epoch)])
        return res, predict_network(net, va[:2])

    reference, out_reference = run()
    with pytest.raises(FitInterrupted, match="SIGINT during epoch 6"):
        run(signal_epoch=5)
    meta = (tmp_path / "ck" / "wine-k" / "meta.json").read_text()
    assert '"epoch": 4' in meta and (tmp_path / "ck" / "wine-k" / "mlp" / "last.ckpt").is_file()
    resumed, out = run(resume=True)
    assert resumed.resumed_from == 4 and resumed.epochs_run == reference.epochs_run
    assert resumed.history == reference.history and resumed.best_epoch == reference.best_epoch
    assert np.abs(out - out_reference).max() <= 1e-6
    again, _ = run(resume=True)  # the finished part comes back from final.safetensors, untrained
    assert again.restored and again.history == reference.history
