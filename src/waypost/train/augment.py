"""Image augmentation on whole uint8 batches (N, C, H, W), inside the training loop.

Why on the batch: a per-row Python transform costs ~100 us per image per op and would dominate a
small CNN's step on CPU; here one call handles the batch (on whatever device the batch lives on).

Why not torchvision.transforms.v2 for everything: a v2 transform called on a batched tensor draws
ONE set of random parameters for the whole call, so every image of a batch would get the same crop,
flip and colour shift (correlated samples, much weaker augmentation). The geometric and colour parts
are therefore vectorised here with per-image parameters (one `affine_grid`/`grid_sample` for random
resized crop + flips, a few broadcasts for colour jitter). torchvision.transforms.v2 is used where
its semantics are the right ones: RandAugment / TrivialAugmentWide (applied per group of
`policy_group` images, so each group gets its own ops) and MixUp / CutMix (one mixing coefficient
per batch is their definition).

Order: policy (uint8) -> float [0, 1] -> crop + flips -> colour jitter -> clamp. Normalisation is a
separate step (`normalize`) applied after augmentation, so evaluation is exactly resize/crop (done
when the images are decoded, waypost.data.images) + `normalize`, with no random op anywhere.

Every random draw takes an explicit `torch.Generator`; the v2 parts run under a forked global RNG
seeded from it, so a seeded run is reproducible and never disturbs the caller's global RNG state.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from waypost.config import AugmentConfig, Policy  # noqa: F401  (the schema lives with the config)
from waypost.errors import ConfigError
from waypost.plan import Decision

#: Below this many training images augmentation is on by default ("auto").
SMALL_DATA_IMAGES = 10_000
#: Aspect-ratio range of the random resized crop (torchvision's default).
CROP_RATIO = (3 / 4, 4 / 3)
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale



def labels_look_orientation_sensitive(class_names: Sequence[object]) -> bool | None:
    """Heuristic hook for `resolve_augment`: True when every class name is a single character
    (digits, letters: a mirrored "2" or "b" is not the same symbol), None when it cannot tell.

    Integer labels return None: 0-9 are as often class codes (Fashion-MNIST) as digits.
    """
    names = list(class_names)
    if names and all(isinstance(n, str) and len(n.strip()) == 1 for n in names):
        return True
    return None


def resolve_augment(
    cfg: AugmentConfig,
    *,
    n_images: int,
    labels_are_orientation_sensitive: bool | None,
    channels: int,
) -> tuple[AugmentConfig, list[Decision]]:
    """Settle every "auto" and explain each choice in one sentence.

    `labels_are_orientation_sensitive`: True for digits/characters/text (mirroring changes the
    label), False for photos, None when unknown (then RGB counts as photos and grayscale stays
    unflipped, the safe side: grayscale tables are often digits, characters or documents).
    """
    out = cfg.model_copy()
    why: list[Decision] = []

    def say(subject: str, choice: str, reason: str) -> None:
        why.append(Decision("training", subject, choice, reason))

    if cfg.enabled == "auto":
        out.enabled = n_images < SMALL_DATA_IMAGES
        if out.enabled:
            say("augmentation", "on", f"{n_images:,} training images (< {SMALL_DATA_IMAGES:,}) are few enough "
                "to memorise, so random crops, flips and colour shifts make every epoch new")
        else:
            say("augmentation", "off", f"{n_images:,} training images (>= {SMALL_DATA_IMAGES:,}) generalise "
                "without it, and it would slow every epoch; set augment.enabled: true to force it")
    else:
        say("augmentation", "on" if cfg.enabled else "off", "set in the config")

    if cfg.hflip == "auto":
        if labels_are_orientation_sensitive is True:
            out.hflip, reason = False, "the labels are orientation-sensitive (digits/characters): a mirrored one changes meaning"
        elif labels_are_orientation_sensitive is False:
            out.hflip, reason = True, "the labels do not depend on left/right, so a mirrored image is a free new example"
        elif channels >= 3:
            out.hflip, reason = True, "colour photos: a mirrored scene shows the same thing"
        else:
            out.hflip, reason = False, ("grayscale images may be digits or characters where mirroring changes the "
                                        "label; pass labels_are_orientation_sensitive=False to allow it")
        say("horizontal flip", "on" if out.hflip else "off", reason)
    else:
        say("horizontal flip", "on" if cfg.hflip else "off", "set in the config")

    if not out.enabled:
        return out, why

    say("vertical flip", "on" if out.vflip else "off",
        "set in the config (aerial or microscopy images)" if out.vflip
        else "most images have an up and a down; turn it on for aerial or microscopy images")
    lo, hi = out.random_resized_crop_scale
    say("random resized crop", f"area {lo:g}-{hi:g}", "objects at shifted positions and scales teach the CNN "
        "that the label does not depend on framing" if lo < 1 else "whole images kept (scale (1, 1))")
    if out.color_jitter > 0:
        parts = "brightness and contrast" if channels < 3 else "brightness, contrast and saturation"
        say("colour jitter", f"{out.color_jitter:g}", f"{parts} vary per image so lighting differences do not "
            "become features")
    say("augmentation policy", out.policy, "TrivialAugment/RandAugment add stronger ops (rotate, shear, "
        "posterize...), best for long runs" if out.policy != "none" else
        "crop, flips and colour only: stronger policies pay off in long runs and slow each CPU step")
    if out.mixes:
        kinds = [k for k, a in (("mixup", out.mixup_alpha), ("cutmix", out.cutmix_alpha)) if a > 0]
        say("mixing", " + ".join(kinds), "blended images with soft targets regularise the decision boundary "
            "(one of them chosen per batch)")
    else:
        say("mixing", "off", "mixup/cutmix slow convergence of short runs; set mixup_alpha or cutmix_alpha to use them")
    return out, why


# ------------------------------------------------------------------------------------- transforms


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as float32.

    uint8 input is scaled by 1/255; float input is taken to be in [0, 1] already (what
    `BatchTransform` returns), so train and eval give the same numbers for the same pixels.
    """
    if x.ndim != 4:
        raise ValueError(f"normalize expects an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"normalize: {c} channels but {len(mean)} means and {len(std)} stds")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive, got {list(std)}")
    xf = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    return (xf - m) / s


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _seed_from(g: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=g))


class BatchTransform:
    """uint8 (N, C, H, W) -> float32 (N, C, out_h, out_w) in [0, 1], with per-image random ops.

    Build with `build_batch_transform`. With `cfg.enabled` False it only converts (and resizes when
    `out_size` differs from the input), which is what evaluation does before `normalize`.
    """

    def __init__(self, cfg: AugmentConfig, out_size: tuple[int, int], policy_group: int = 8) -> None:
        self.cfg = cfg
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.policy_group = max(1, int(policy_group))
        self.active = cfg.enabled is True
        self._policy = None
        if self.active and cfg.policy != "none":
            import torchvision.transforms.v2 as T

            self._policy = T.RandAugment() if cfg.policy == "randaugment" else T.TrivialAugmentWide()

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.dtype != torch.uint8:
            raise ValueError(f"batch transform expects uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if not self.active:
            xf = x.float() / 255.0
            if tuple(xf.shape[-2:]) != self.out_size:
                xf = F.interpolate(xf, size=self.out_size, mode="bilinear", align_corners=False, antialias=True)
            return xf
        if self._policy is not None:
            x = self._apply_policy(x, generator)
        xf = self._crop_and_flip(x.float() / 255.0, generator)
        if self.cfg.color_jitter > 0:
            xf = self._jitter(xf, generator)
        return xf.clamp_(0.0, 1.0)

    def _apply_policy(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """RandAugment/TrivialAugment per group of images: v2 draws one op per call, so groups of
        `policy_group` images trade diversity against per-call overhead."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(g))
            return torch.cat([self._policy(chunk) for chunk in x.split(self.policy_group)])

    def _crop_and_flip(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        lo, hi = self.cfg.random_resized_crop_scale
        crop = lo < 1.0 or tuple(x.shape[-2:]) != self.out_size
        hflip = (torch.rand(n, generator=g) < 0.5) if self.cfg.hflip is True else torch.zeros(n, dtype=torch.bool)
        vflip = (torch.rand(n, generator=g) < 0.5) if self.cfg.vflip else torch.zeros(n, dtype=torch.bool)
        if not crop:  # flips alone: exact pixel moves, no resampling blur
            if hflip.any():
                x = torch.where(hflip.to(dev).view(n, 1, 1, 1), x.flip(-1), x)
            if vflip.any():
                x = torch.where(vflip.to(dev).view(n, 1, 1, 1), x.flip(-2), x)
            return x
        # Random resized crop as one affine map per image: output coords in [-1, 1] map to a box
        # of relative width w, height h centred at (cx, cy); a negative scale mirrors the box.
        area = _uniform(n, lo, hi, g)
        log_ratio = _uniform(n, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), g)
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
        sx = torch.where(hflip, -w, w)
        sy = torch.where(vflip, -h, h)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
        grid = F.affine_grid(theta.to(dev), [n, x.shape[1], *self.out_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """Brightness, contrast and (RGB only) saturation, one factor of each per image."""
        n, c, dev, s = x.shape[0], x.shape[1], x.device, self.cfg.color_jitter

        def factor() -> torch.Tensor:
            return _uniform(n, max(0.0, 1 - s), 1 + s, g).to(dev).view(n, 1, 1, 1)

        x = x * factor()
        gray = _gray(x)
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        x = (x - mean) * factor() + mean
        if c == 3:
            gray = _gray(x)
            x = (x - gray) * factor() + gray
        return x


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    w = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def build_batch_transform(cfg: AugmentConfig, out_size: int | tuple[int, int], *,
                          policy_group: int = 8) -> BatchTransform:
    """The training-time transform for a resolved config (see `resolve_augment`)."""
    if not cfg.resolved:
        raise ConfigError("augment: resolve 'auto' values with resolve_augment() before building the transform")
    size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"augment: out_size must be a positive int or (height, width), got {out_size!r}")
    return BatchTransform(cfg, (int(size[0]), int(size[1])), policy_group=policy_group)


# ------------------------------------------------------------------------------ mixup / cutmix


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AugmentConfig,
    n_classes: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix (torchvision.transforms.v2) on one batch; returns (images, soft targets (N, K)).

    When both alphas are set one of the two is chosen per batch, as timm does. Without mixing the
    targets are still returned one-hot, so a loss sees one target format for the whole run.
    Soft targets work with `F.cross_entropy` (class-probability targets).
    """
    if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"mixup/cutmix need integer class labels of shape (N,), got {y.dtype} {tuple(y.shape)}")
    if n_classes < 2:
        raise ValueError(f"mixup/cutmix need n_classes >= 2, got {n_classes}")
    y = y.long()
    choices = [k for k, a in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if a > 0]
    if cfg.enabled is not True or not choices or x.shape[0] < 2:
        return x, F.one_hot(y, n_classes).float()
    import torchvision.transforms.v2 as T

    pick = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    op = T.MixUp(alpha=cfg.mixup_alpha, num_classes=n_classes) if pick == "mixup" else \
        T.CutMix(alpha=cfg.cutmix_alpha, num_classes=n_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_from(generator))
        x_mixed, y_soft = op(x, y)
    return x_mixed, y_soft.float()
