"""schemathesis hooks for `st run` against `waypost serve` (SCHEMATHESIS_HOOKS=schemathesis_hooks).

Two rules of the served schema that JSON Schema has no keyword for, supplied here on the test side
(each stated in the OpenAPI document itself):

- ``format: base64-image``: an image field is base64 of real image bytes. The fuzzer's default
  for a base64 string is base64 of random text, which is rightly refused; this strategy draws real
  images instead (PNG/JPEG/GIF/BMP/WEBP/TIFF, modes L/RGB/RGBA/P, 1-48 px, base64 with or without
  a data: prefix, URL-safe or not), so positive cases reach the model.
- ``/predict/columns``: all arrays have one length. A positive (schema-valid) case whose arrays
  were drawn independently is cut to its shortest array, which keeps every value valid; negative
  cases are left as drawn so their violation survives.
"""
from __future__ import annotations

import base64
import io

import schemathesis
from hypothesis import strategies as st


@st.composite
def _images(draw: st.DrawFn) -> str:
    import numpy as np
    from PIL import Image

    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]))
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        mode = "RGB"
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 4), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGBA").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    blob = buf.getvalue()
    text = (base64.urlsafe_b64encode(blob).decode().rstrip("=") if draw(st.booleans())
            else base64.b64encode(blob).decode())
    return f"data:image/{fmt.lower()};base64,{text}" if draw(st.booleans()) else text


schemathesis.openapi.format("base64-image", _images())


@schemathesis.hook
def map_case(context, case):  # noqa: ANN001, ANN201 - schemathesis' hook signature
    operation = context.operation
    meta = case.meta
    if operation is None or operation.path != "/predict/columns" or meta is None:
        return case
    if not meta.generation.mode.is_positive:
        return case
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("columns"), dict):
        arrays = [v for v in body["columns"].values() if isinstance(v, list)]
        if arrays:
            n = min(len(v) for v in arrays)
            case.body = {**body, "columns": {k: v[:n] if isinstance(v, list) else v
                                             for k, v in body["columns"].items()}}
    return case
