"""Image encoders: packaged offline weights, local files, offline hub names, freezing, tiny images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("timm")

from waypost.errors import ConfigError  # noqa: E402
from waypost.models.fusion import EncoderClassifier  # noqa: E402
from waypost.models.image_cnn import (  # noqa: E402
    ImageEncoder,
    build_image_classifier,
    choose_image_architecture,
)
from waypost.models.pretrained import (  # noqa: E402
    load_into,
    packaged_path,
    read_state_dict,
    resolve_weights,
    weights_available,
)


def _need_packaged(arch: str) -> None:
    if packaged_path(arch) is None:
        pytest.skip(f"packaged weights for {arch} not installed")


def _photo(name: str, box: tuple[int, int, int, int], mean, std) -> torch.Tensor:
    """A crop of one of sklearn's bundled photos, resized to 160 px and normalised."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image(name)).crop(box).resize((160, 160), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]


@pytest.mark.parametrize("arch,timm_name,n_tensors", [
    ("efficientnet_lite0", "tf_efficientnet_lite0", 294),
    ("mobilenetv2_100", "mobilenetv2_100", 312),
])
def test_packaged_weights_load_offline(arch: str, timm_name: str, n_tensors: int) -> None:
    _need_packaged(arch)
    source = resolve_weights(arch, "auto")
    assert source.kind == "packaged" and source.model_name == timm_name
    assert "packaged offline weights" in source.reason
    enc = ImageEncoder(arch, pretrained=True)
    report = enc.load_report
    assert report is not None and report.total == n_tensors
    assert report.fraction >= 0.9 and report.loaded == n_tensors
    assert enc.out_dim == 1280
    # The weights' own config: the Lite0 TF port wants [-1, 1] inputs, torchvision's MobileNet ImageNet stats.
    expected_mean = [0.5] * 3 if arch == "efficientnet_lite0" else [0.485, 0.456, 0.406]
    assert enc.normalization["mean"] == pytest.approx(expected_mean)
    with torch.no_grad():
        assert enc.eval()(torch.zeros(1, 3, 96, 96)).shape == (1, 1280)


def test_pretrained_mobilenet_features_are_imagenet_features() -> None:
    _need_packaged("mobilenetv2_100")
    enc = ImageEncoder("mobilenetv2_100", pretrained=True).eval()
    rand = ImageEncoder("mobilenetv2_100", pretrained=False).eval()
    norm = enc.normalization
    a = _photo("china.jpg", (100, 0, 527, 427), norm["mean"], norm["std"])
    b = _photo("china.jpg", (140, 20, 540, 420), norm["mean"], norm["std"])  # another crop of it
    c = _photo("flower.jpg", (100, 0, 527, 427), norm["mean"], norm["std"])
    x = torch.cat([a, b, c])
    with torch.no_grad():
        f = torch.nn.functional.normalize(enc(x), dim=1)
        g = rand(x)
    same, other = float(f[0] @ f[1]), float(f[0] @ f[2])
    assert same > 0.8 and other < same - 0.2, (same, other)
    assert not torch.allclose(f, torch.nn.functional.normalize(g, dim=1), atol=1e-2)
    # The checkpoint's own ImageNet head on our features: a palace photo lands on buildings.
    state = read_state_dict(packaged_path("mobilenetv2_100"))
    with torch.no_grad():
        logits = enc(x[:1]) @ state["classifier.1.weight"].T + state["classifier.1.bias"]
    # Top-5 holds a building of its kind: 698 palace, 663 monastery, 442 bell cote, 832 stupa, 483 castle.
    assert set(logits.topk(5).indices[0].tolist()) & {698, 663, 442, 832, 483}


def test_safetensors_round_trip_and_prefixed_state_dict(tmp_path) -> None:
    from safetensors.torch import save_file

    donor = ImageEncoder("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in donor.model.state_dict().items()}, str(path))
    source = resolve_weights("resnet18", str(path))
    assert source.kind == "file" and str(path) in source.reason
    enc = ImageEncoder("resnet18", weights=source)
    assert enc.load_report is not None and enc.load_report.loaded == enc.load_report.total
    for key, value in donor.model.state_dict().items():
        assert torch.equal(value, enc.model.state_dict()[key])
    # A DataParallel-style torch state dict with a classifier: prefix stripped, head dropped.
    wrapped = {f"module.{k}": v for k, v in donor.model.state_dict().items()}
    wrapped["module.fc.weight"] = torch.zeros(5, 512)
    pt = tmp_path / "resnet18.pt"
    torch.save(wrapped, pt)
    report = load_into(ImageEncoder("resnet18", pretrained=False).model, resolve_weights("resnet18", pt).state_dict())
    assert report.loaded == report.total and report.method == "names"


def test_corrupt_or_foreign_weights_name_the_file(tmp_path) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="broken.pth"):
        resolve_weights("resnet18", str(bad))
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError, match="broken.safetensors"):
        resolve_weights("resnet18", bad_st)
    with pytest.raises(ConfigError, match="missing.safetensors"):
        resolve_weights("resnet18", tmp_path / "missing.safetensors")
    # Weights of another architecture: too few tensors fit -> a clear error naming the file.
    other = tmp_path / "mobilenet.pt"
    torch.save(ImageEncoder("mobilenetv2_100", pretrained=False).model.state_dict(), other)
    with pytest.raises(ConfigError, match="mobilenet.pt"):
        ImageEncoder("resnet18", pretrained=str(other))


def test_offline_hub_names_fall_back_with_a_reason(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("resnet18.a1_in1k", "hf-hub:timm/resnet18.a1_in1k"):
        source = resolve_weights("resnet18", name)
        assert source.kind == "none"
        assert "training from scratch" in source.reason and "offline" in source.reason
    auto = resolve_weights("resnet18", "auto")
    assert auto.kind == "none" and "no weights at hand for resnet18" in auto.reason
    assert resolve_weights("resnet18", False).reason.startswith("none: training from scratch")
    assert weights_available(["resnet18"]) == {"resnet18": None}


def test_freeze_and_unfreeze_top_stages() -> None:
    enc = ImageEncoder("resnet18", pretrained=False)
    stages = enc.stages()
    assert len(stages) == 5 and stages[0][0] is enc.model.conv1.weight  # stem first
    from waypost.train.transfer import FreezeBN, TransferPlan, apply_phase

    plan = TransferPlan(freeze_epochs=1, unfreeze_stages=1, bn_mode="freeze_frozen")
    bn = FreezeBN(enc, plan.bn_mode)
    enc.train()
    assert apply_phase(enc, plan, 0, bn) == set(range(5))  # epoch 0: head alone
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.model.bn1.training  # frozen BatchNorm keeps its running statistics
    assert apply_phase(enc, plan, 1, bn) == set(range(4))  # then the top stage opens
    assert all(p.requires_grad for p in stages[-1])
    assert not any(p.requires_grad for s in stages[:-1] for p in s)
    assert enc.model.layer4[0].bn1.training and not enc.model.layer3[0].bn1.training
    # the optimizer groups training uses (train.transfer) over this encoder's stages
    from waypost.train.transfer import param_groups, stage_lrs

    head = torch.nn.Linear(enc.out_dim, 3)
    groups = param_groups(enc, head, 1e-3, 0.0, TransferPlan(layer_decay=0.1))
    trainable = {round(g["lr"], 12) for g in groups if any(p.requires_grad for p in g["params"])}
    assert trainable == {1e-3}  # only the head and the unfrozen top stage, both at the top rate
    assert sum(len(g["params"]) for g in groups) == len(list(enc.parameters())) + 2
    apply_phase(enc, TransferPlan(freeze_epochs=1, unfreeze_stages=None), 1, bn)  # all stages open
    assert all(p.requires_grad for p in enc.parameters())
    assert stage_lrs(len(stages), 1.0, TransferPlan(layer_decay=0.5)) == pytest.approx([0.0625, 0.125, 0.25, 0.5, 1])


def test_28px_inputs() -> None:
    scratch = build_image_classifier("resnet18", num_classes=10, in_chans=1, pretrained=False, image_size=(28, 28))
    assert isinstance(scratch, EncoderClassifier)
    assert scratch.encoder.small_mode == "cifar_stem" and "CIFAR stem" in scratch.reason
    assert scratch.encoder.model.conv1.stride == (1, 1)
    with torch.no_grad():
        assert scratch.eval()(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_28px_inputs_to_pretrained_weights_are_upscaled() -> None:
    _need_packaged("mobilenetv2_100")
    tuned = build_image_classifier("mobilenetv2_100", num_classes=10, in_chans=1, image_size=(28, 28))
    assert tuned.encoder.small_mode == "upscale" and "upscaled inside the model to a 96 px" in tuned.reason
    assert "first conv to 1 input channel" in tuned.reason
    assert tuned.encoder.resize_input(torch.zeros(1, 1, 28, 28)).shape[-2:] == (96, 96)
    with torch.no_grad():
        assert tuned.eval()(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_choose_image_architecture_reasons() -> None:
    packaged = {"efficientnet_lite0": "packaged", "mobilenetv2_100": "packaged"}
    arch, src, why = choose_image_architecture(800, (224, 224), 3, packaged)
    assert (arch, src) == ("efficientnet_lite0", "packaged") and "pretrained models win on small data" in why
    arch, src, _ = choose_image_architecture(800, (224, 224), 3, {"mobilenetv2_100": True})
    assert (arch, src) == ("mobilenetv2_100", "pretrained")
    arch, src, why = choose_image_architecture(60000, (28, 28), 1, packaged)
    assert (arch, src) == ("small_cnn", "none") and "10x the compute" in why  # tiny images: small CNN on CPU
    arch, src, why = choose_image_architecture(60000, (48, 48), 1, {})
    assert (arch, src) == ("resnet18", "none")
    arch, src, why = choose_image_architecture(50000, (256, 256), 3, {})
    assert (arch, src) == ("resnet18", "none") and "no pretrained weights" in why
    _, _, why = choose_image_architecture(500, (64, 64), 1, packaged)
    assert "1-channel" in why


def test_registry_entries() -> None:
    from waypost.models import registry

    names = {"resnet18", "resnet34", "resnet50", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
             "efficientnet_b3", "efficientnet_lite0", "mobilenetv2_100", "vit_tiny_patch16_224"}
    entries = {a.name: a for a in registry.list_architectures("image")}
    assert names <= set(entries)
    assert all(entries[n].requires == ("timm",) and entries[n].reason for n in names)
    for name in ("vit_tiny_patch16_224", "efficientnet_b3"):
        net = entries[name].factory(num_classes=3, pretrained=False, image_size=(64, 64))
        with torch.no_grad():
            assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3), name


def test_named_weights_decide_the_architecture_or_ask_for_it() -> None:
    import pandas as pd

    from waypost.config import WaypostConfig
    from waypost.kinds import get_kind

    def choose(pretrained: str) -> object:
        cfg = WaypostConfig.create("y", model={"image": {"pretrained": pretrained}})
        return get_kind("image").choose_encoder(photos, "multiclass", cfg, "auto")

    photos = pd.Series([np.zeros((64, 64, 3), np.uint8)] * 10)
    chosen = choose("timm/resnet50.a1_in1k")
    assert chosen.choice == "resnet50" and "resnet50.a1_in1k" in chosen.reason
    with pytest.raises(ConfigError, match="set model.architecture"):
        choose("/tmp/some_weights.safetensors")
