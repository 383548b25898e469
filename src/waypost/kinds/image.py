"""The image kind: paths, bytes or arrays in a column -> uint8 images -> a registered CNN.

The CNN is chosen by data size, image size and the pretrained weights at hand
(`waypost.models.image_cnn.choose_image_architecture`); the runtime decodes with Pillow
(`waypost.runtime.images`), with the same resize recipe and the normalisation the network trained with.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from waypost.kinds import register_kind
from waypost.kinds.base import Kind

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageKind(Kind):
    name = "image"
    encoder = True
    arrow_expected = "binary (the image bytes)"
    input_types = {"image": "tensor(float)"}
    media = True
    recognise_order = 10

    def recognise(self, p: Any) -> str | None:
        if p.form == "objects":
            first = p.values.iloc[0]
            if isinstance(first, np.ndarray) and first.ndim >= 2:
                shapes = {np.shape(v) for v in p.object_sample if isinstance(v, np.ndarray)}
                shape = next(iter(shapes)) if len(shapes) == 1 else "varying shapes"
                return f"{first.ndim}-d array values ({shape})"
            return p.media_bytes(self.name)
        return p.media_paths(IMAGE_EXTENSIONS)

    def choose_encoder(self, column: Any, task: Any, cfg: Any, requested: str = "auto") -> Any:
        from waypost.data.images import image_column_stats
        from waypost.models.image_cnn import PRETRAINED_PREFERENCE, choose_image_architecture
        from waypost.models.pretrained import weights_available
        from waypost.plan import Decision

        fixed = self.requested_encoder(requested)
        if fixed is not None:
            return fixed
        pretrained = cfg.model.image.pretrained
        if isinstance(pretrained, str) and pretrained.lower() != "auto":
            return _architecture_of_weights(pretrained)
        stats = image_column_stats(column)
        name, _, reason = choose_image_architecture(
            int(column.notna().sum()), (stats.height[1], stats.width[1]), stats.channels,
            weights_available(list(PRETRAINED_PREFERENCE)) if pretrained is not False else {})
        return Decision("architecture", "architecture", name, reason)

    def fit_preprocessor(self, cfg: Any, name: str, column: Any, arch: str | None = None) -> Any:
        from waypost.data.image_preprocess import ImagePreprocessor

        return ImagePreprocessor(name, size=cfg.model.image.size).fit(column)

    def preprocessor_from_state(self, state: dict[str, Any]) -> Any:
        from waypost.data.image_preprocess import ImagePreprocessor

        return ImagePreprocessor.from_state(state)

    def bad_cell_policy(self, cfg: Any) -> dict[str, Any]:
        return {"on_bad_image": cfg.data.on_bad_image}

    def build_part(self, cfg: Any, pre: Any, **common: Any) -> Any:
        from waypost.models.image_model import ImageModel

        return ImageModel(in_chans=pre.channels_, image_size=pre.size_, image=cfg.model.image, **common)

    def column_spec(self, cfg: Any, pre: Any, arch: str) -> dict[str, Any]:
        return {"kind": self.name, "arch": arch, "in_chans": pre.channels_, "image_size": list(pre.size_),
                "pretrained": cfg.model.image.pretrained, "image": cfg.model.image.model_dump()}

    def after_fit(self, pre: Any, part: Any, name: str) -> None:
        # the saved preprocessing normalises as the network was trained (pretrained weights bring
        # their own mean/std, e.g. 0.5/0.5 for the TF-ported EfficientNet-Lite0)
        if hasattr(part, "column_normalization"):  # one of several encoder columns
            mean, std = part.column_normalization(name)
        else:
            mean, std = part.mean_, part.std_
        pre.mean_, pre.std_ = list(mean), list(std)

    def export_graph(self, part: Any, inputs: Any, optimize: str, calibration: Any) -> tuple[Any, Any]:
        """int8: static QDQ calibrated on sample images (a CNN's cost is in its activations, which
        dynamic quantisation leaves in float)."""
        from waypost.deploy.quantize import optimize_model, quantize_static_qdq

        fp32 = part.to_onnx(inputs)
        if optimize != "int8":
            return fp32, optimize_model(fp32, optimize)
        return fp32, quantize_static_qdq(fp32, calibration(fp32))

    def runtime_transform(self, entry: dict[str, Any]) -> Any:
        from waypost.runtime.images import ImageTransform

        return _renamed(ImageTransform({"column": entry["name"], "image": entry}), entry["inputs"])

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        h, w = entry["size"]
        shape = (h, w) if int(entry["channels"]) == 1 else (h, w, 3)
        return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]

    def probe_value(self, entry: dict[str, Any]) -> Any:
        h, w = entry["size"]
        return np.zeros((h, w) if int(entry["channels"]) == 1 else (h, w, 3), dtype=np.uint8)

    def digest_key(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return "sha256:" + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        if isinstance(value, (bytes, bytearray)):
            return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
        return value


def _renamed(transform: Any, inputs: list[str]) -> Any:
    """The transform's arrays under the graph input names the column was exported with ("image" for
    a one-column model, "<column>/image" beside other encoder columns)."""
    base = list(ImageKind.input_types)
    if list(inputs) == base:
        return transform
    mapping = dict(zip(base, inputs))
    return lambda columns, n: {mapping[k]: v for k, v in transform(columns, n).items()}


def _architecture_of_weights(pretrained: str) -> Any:
    """With `model.architecture: auto` and named weights, the weights decide the architecture: a timm
    hub name ("resnet50.a1_in1k", "timm/resnet50.a1_in1k") names it; a file does not, so ask."""
    from waypost.errors import ConfigError
    from waypost.models.registry import list_architectures
    from waypost.plan import Decision

    name = pretrained.removeprefix("hf-hub:").removeprefix("timm/").split(".")[0].lower()
    known = {a.name: a for a in list_architectures("image")}
    if name in known:
        return Decision("architecture", "architecture", name,
                        f"model.image.pretrained names {pretrained!r}, weights for {name}; {known[name].reason}")
    raise ConfigError(
        f"model.image.pretrained is {pretrained!r} but model.architecture is auto: set model.architecture to the "
        f"architecture those weights belong to (one of {sorted(known)})")


register_kind(ImageKind())
