"""waypost serve with an image bundle: base64 images over HTTP, never a file path.

The bundle is a small CNN trained on real MNIST digits (mlxtend) for two epochs: accuracy does not
matter here, only that the server answers exactly what the bundle answers on the same bytes.
`image_bundle` (conftest.py) is shared with test_predict_folder.py, so the model is trained once per
session.
"""
from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
pytest.importorskip("mlxtend")

from servers import ThreadServer, free_port, metrics_of, running  # noqa: E402

from waypost.serve.app import create_app  # noqa: E402
from waypost.serve.schema import RecordSchema, RequestError  # noqa: E402

def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _expected(bundle_dir: Path, pngs: list[bytes]) -> dict:
    import waypost.runtime as rt

    return rt.load(bundle_dir).infer([{"image": b} for b in pngs])


def test_base64_records_match_the_bundle_and_the_log_keeps_digests(image_bundle, tmp_path):
    pngs = image_bundle["pngs"][:12]
    want = _expected(image_bundle["bundle"], pngs)
    log_path = tmp_path / "log.sqlite"
    # standard, URL-safe without padding, a data: URL, and MIME line breaks
    encodings = [
        _b64,
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
        lambda b: "data:image/png;base64," + _b64(b),
        lambda b: "\n".join(_b64(b)[i:i + 76] for i in range(0, len(_b64(b)), 76)),
    ]
    records = [{"image": encodings[i % len(encodings)](b)} for i, b in enumerate(pngs)]
    with ThreadServer(create_app(image_bundle["bundle"], log_path=log_path)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        many = client.post("/predict", json=records)
        assert many.status_code == 200, many.text
        one = client.post("/predict", json=records[0])
        assert one.status_code == 200, one.text
    body = many.json()
    assert body["predictions"] == want["prediction"].tolist()
    keys = list(body["probabilities"][0])
    assert keys == [str(c) for c in range(10)]  # the bundle's class order, int labels as JSON keys
    probs = np.array([[row[k] for k in keys] for row in body["probabilities"]])
    np.testing.assert_allclose(probs, want["proba"], atol=1e-6)
    assert one.json()["predictions"] == [want["prediction"][0].item()]

    from waypost.serve.predlog import PredictionLog

    rows = PredictionLog(log_path).read()
    assert len(rows) == 13
    logged = [r["inputs"]["image"] for r in rows[:12]]
    assert logged == [f"sha256:{hashlib.sha256(b).hexdigest()};bytes={len(b)}" for b in pngs]
    assert max(len(r["inputs"]["image"]) for r in rows) < 100  # a digest, not the base64


def test_file_paths_are_refused_and_never_read(image_bundle, tmp_path, monkeypatch):
    import PIL.Image

    import waypost.runtime as rt

    png = image_bundle["pngs"][0]
    named = tmp_path / "digit.png"  # "." is not base64: refused at decoding
    named.write_bytes(png)
    plain = tmp_path / "abcd" / "photo"  # every character is base64: decodes to non-image bytes
    plain.parent.mkdir()
    plain.write_bytes(png)
    opened: list[object] = []
    real_open = PIL.Image.open

    def spy_open(fp, *args, **kwargs):
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", spy_open)
    bundle = rt.load(image_bundle["bundle"])
    cells: list[object] = []
    real_infer = bundle.infer

    def spy_infer(columns):
        cells.extend(columns["image"])
        return real_infer(columns)

    bundle.infer = spy_infer
    with ThreadServer(create_app(bundle)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        refused = {
            "abs path": client.post("/predict", json={"image": str(named)}),
            "base64-looking path": client.post("/predict", json={"image": str(plain)}),
            "file url": client.post("/predict", json={"image": named.as_uri()}),
            "bad base64": client.post("/predict", json=[{"image": _b64(png)}, {"image": "@@not base64@@"}]),
            "not an image": client.post("/predict", json={"image": _b64(b"just some text, not pixels")}),
            "null": client.post("/predict", json={"image": None}),
            "missing": client.post("/predict", json={}),
            "unknown field": client.post("/predict", json={"image": _b64(png), "path": str(named)}),
            "columns path": client.post("/predict/columns", json={"columns": {"image": [_b64(png), str(named)]}}),
        }
        corrupt = client.post("/predict", json={"image": _b64(png[:60])})  # PNG magic, truncated data
        ok = client.post("/predict", json={"image": _b64(png)})
        m = metrics_of(client)
    for name, resp in refused.items():
        assert resp.status_code == 422, (name, resp.text)
    for name in ("abs path", "base64-looking path", "file url", "not an image"):
        msg = refused[name].json()["message"]
        assert msg.startswith("body.image: expected a base64-encoded image"), (name, msg)
    assert refused["bad base64"].json()["message"].startswith("body.1.image: expected a base64-encoded image")
    assert "not valid base64" in refused["bad base64"].json()["message"]
    assert refused["null"].json()["detail"][0]["loc"] == ["body", "image"]
    assert refused["missing"].json()["message"] == "body.image: Field required"
    assert refused["columns path"].json()["detail"][0]["loc"] == ["body", "columns", "image", 1]
    assert corrupt.status_code == 422 and "column 'image'" in corrupt.json()["message"]
    assert ok.status_code == 200
    # nothing the client sent was opened as a file, and the runtime only ever saw bytes
    assert not [fp for fp in opened if isinstance(fp, (str, Path))], opened
    assert cells and all(isinstance(c, bytes) for c in cells)
    assert m[("waypost_errors_total", (("kind", "validation"),))] == len(refused) + 1  # + corrupt
    assert m[("waypost_requests_total", (("endpoint", "/predict"), ("status", "422")))] == len(refused) - 1 + 1
    assert m[("waypost_requests_total", (("endpoint", "/predict/columns"), ("status", "422")))] == 1


def test_columns_endpoint_and_openapi_take_base64_images(image_bundle):
    pngs = image_bundle["pngs"][:5]
    want = _expected(image_bundle["bundle"], pngs)
    with ThreadServer(create_app(image_bundle["bundle"])) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        resp = client.post("/predict/columns", json={"columns": {"image": [_b64(b) for b in pngs]}})
        schema = client.get("/openapi.json").json()
        info = client.get("/info").json()
        example = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
        tried = client.post("/predict", json=example)  # "Try it out" in /docs works as shown
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == want["prediction"].tolist()
    field = schema["components"]["schemas"]["PredictRecord"]["properties"]["image"]
    assert field["type"] == "string" and field["contentEncoding"] == "base64" and "base64" in field["description"]
    assert info["features"] == {"image": "image"}
    assert tried.status_code == 200, tried.text


def test_fused_image_and_tabular_records_decode_images_only():
    schema = RecordSchema({"photo": "image", "age": "numeric", "sex": "category"})
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR42mP4DwABAQEAHLCMmQAAAABJRU5ErkJggg==")
    body = f'[{{"photo": "{_b64(png)}", "age": 31, "sex": "f"}}, {{"photo": "{_b64(png)}", "age": null, "sex": "m"}}]'
    columns, n = schema.parse(body.encode())
    assert columns == {"photo": [png, png], "age": [31.0, None], "sex": ["f", "m"]} and n == 2
    with pytest.raises(RequestError) as err:
        schema.parse(b'[{"photo": "/etc/passwd", "age": 1, "sex": "f"}, {"photo": "x", "age": "old", "sex": "m"}]')
    assert [e["loc"] for e in err.value.errors] == [["body", 1, "age"]]  # pydantic first, then the images
    with pytest.raises(RequestError) as err:
        schema.parse(b'[{"photo": "/etc/passwd", "age": 1, "sex": "f"}, {"photo": "x", "age": 2, "sex": "m"}]')
    assert [e["loc"] for e in err.value.errors] == [["body", 0, "photo"], ["body", 1, "photo"]]


def test_waypost_serve_command_serves_an_image_bundle(image_bundle, tmp_path):
    png = image_bundle["pngs"][3]
    port = free_port()
    waypost = str(Path(sys.executable).with_name("waypost"))
    argv = [waypost, "serve", str(image_bundle["bundle"]), "--port", str(port), "--log-path", "none"]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/ready", cwd=tmp_path):
        resp = httpx.post(f"http://127.0.0.1:{port}/predict", json={"image": _b64(png)}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == _expected(image_bundle["bundle"], [png])["prediction"].tolist()
