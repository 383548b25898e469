"""A three-block CNN for tiny images (<= 32 px) trained from scratch on CPU.

Registered as `small_cnn`. ImageNet backbones learn at 224 px: on 28x28 digits they need upscaling
to ~96 px (about 10x the compute of the image itself) and bring little their filters know. Three
conv blocks (32-64-128 channels, batchnorm, max-pool) reach MNIST-level accuracy in seconds.
Same interface as `ImageEncoder` (out_dim, stages, normalization) so the training path is shared.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from waypost.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, channel_stats
from waypost.models.registry import register


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU(),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        chans = (in_chans, *widths)
        self.blocks = nn.ModuleList(_block(a, b) for a, b in zip(chans, chans[1:]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[-1]
        self.reason = "3-block CNN from scratch: tiny images train in seconds on CPU"
        # no weights to match: ImageNet's statistics, a fine roughly-zero-mean scale for any photo or glyph
        mean, std = channel_stats(IMAGENET_MEAN, IMAGENET_STD, in_chans)
        self.normalization = {"mean": mean, "std": std}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.pool(x).flatten(1)

    def stages(self) -> list[list[nn.Parameter]]:
        return [list(b.parameters()) for b in self.blocks]


@register("small_cnn", data_types={"image"}, requires=("torch",), priority=6, tags=("image",),
          reason="three conv blocks from scratch for tiny images on CPU",
          when="images of 32 px or less (digits, glyphs, thumbnails)")
def build_small_cnn(*, num_classes: int, in_chans: int = 1, dropout: float = 0.2, **_: Any) -> nn.Module:
    from waypost.models.fusion import EncoderClassifier

    return EncoderClassifier(SmallCNN(in_chans), num_classes, dropout)
