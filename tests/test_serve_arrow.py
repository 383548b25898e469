"""POST /predict/columns with an Arrow IPC stream: the bulk format of `waypost serve`.

A real uvicorn server (in a thread) serves the penguins LightGBM bundle and the small MNIST CNN
bundle; the answers must equal the in-memory model's and the JSON endpoint's, bad streams get 422s
naming the column, and every row reaches the prediction log.
"""
from __future__ import annotations

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pa = pytest.importorskip("pyarrow")

from servers import ThreadServer, metrics_of  # noqa: E402

from waypost.deploy.bundle import json_records  # noqa: E402
from waypost.serve.app import create_app  # noqa: E402
from waypost.serve.columnar import ARROW_STREAM  # noqa: E402
from waypost.serve.predlog import PredictionLog  # noqa: E402

HEADERS = {"content-type": ARROW_STREAM}


def _stream(table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _read(resp: httpx.Response):
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == ARROW_STREAM
    return pa.ipc.open_stream(resp.content).read_all()


def test_arrow_answers_equal_the_predictor_json_and_the_log(penguins_bundle, tmp_path):
    predictor, bundle_dir, test = penguins_bundle
    log_path = tmp_path / "log.sqlite"
    frame = test.copy()
    frame["island"] = frame["island"].astype("category")  # arrives as an Arrow dictionary column
    with ThreadServer(create_app(bundle_dir, log_path=log_path)) as server, \
            httpx.Client(base_url=server.url, timeout=20) as client:
        resp = client.post("/predict/columns", content=_stream(pa.Table.from_pandas(frame, preserve_index=False)),
                           headers=HEADERS)
        answer = _read(resp)
        records = json_records(test)  # NaN as null, what a JSON client sends
        as_json = client.post("/predict/columns", json={"columns": {c: [r[c] for r in records] for c in test}}).json()
        server.state.predlog.flush()
    expected = predictor.predict_proba(test)
    assert answer.column_names == ["prediction", *[f"proba_{c}" for c in expected.columns]]
    assert answer["prediction"].to_pylist() == list(predictor.predict(test)) == as_json["predictions"]
    got = np.column_stack([answer[f"proba_{c}"].to_numpy() for c in expected.columns])
    np.testing.assert_allclose(got, expected.to_numpy(), atol=1e-4)
    np.testing.assert_allclose(got.T, [as_json["probabilities"][c] for c in expected.columns], atol=1e-7)
    version = resp.headers["x-model-version"]
    assert version == as_json["model_version"] and answer.schema.metadata[b"waypost.model_version"] == version.encode()

    rows = PredictionLog(log_path).read()
    assert len(rows) == 2 * len(test) and [r["id"] for r in rows] == list(range(1, 2 * len(test) + 1))
    assert [r["inputs"] for r in rows[: len(test)]] == records  # NaN logged as null, as the JSON endpoint
    assert [r["outputs"]["prediction"] for r in rows[: len(test)]] == as_json["predictions"]
    logged = np.array([[r["outputs"]["probabilities"][c] for c in expected.columns] for r in rows[: len(test)]])
    np.testing.assert_allclose(logged, got, atol=1e-7)
    frame = PredictionLog(log_path).read_frame()
    assert len(frame) == 2 * len(test) and {"island", "prediction", "proba_Adelie", "_ts"} <= set(frame.columns)


def test_bad_arrow_streams_get_422_naming_the_column(penguins_bundle):
    _, bundle_dir, test = penguins_bundle
    table = pa.Table.from_pandas(test.head(5), preserve_index=False)
    numeric = next(c for c, t in zip(table.column_names, table.schema.types) if pa.types.is_floating(t))
    as_text = table.set_column(table.column_names.index(numeric), numeric,
                               pa.array([str(v) for v in test[numeric].head(5)]))
    with ThreadServer(create_app(bundle_dir)) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        wrong_type = client.post("/predict/columns", content=_stream(as_text), headers=HEADERS)
        unknown = client.post("/predict/columns", content=_stream(table.append_column("colour", pa.array(["red"] * 5))),
                              headers=HEADERS)
        missing = client.post("/predict/columns", content=_stream(table.drop_columns(["island"])), headers=HEADERS)
        empty = client.post("/predict/columns", content=_stream(table.slice(0, 0)), headers=HEADERS)
        garbage = client.post("/predict/columns", content=b'{"columns": {}}', headers=HEADERS)
        metrics = metrics_of(client)
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"] == ["body", "columns", numeric]
    assert "numeric column expects Arrow integers or floats, got string" in wrong_type.json()["message"]
    assert unknown.status_code == 422 and "body.columns.colour: unknown column" in unknown.json()["message"]
    assert missing.status_code == 422 and "body.columns.island: Field required" in missing.json()["message"]
    assert empty.status_code == 422 and "no rows" in empty.json()["message"]
    assert garbage.status_code == 422 and "not an Arrow IPC stream" in garbage.json()["message"]
    assert metrics[("waypost_requests_total", (("endpoint", "/predict/columns"), ("status", "422")))] == 5


def test_arrow_image_column_is_bytes_never_a_path(image_bundle):
    from waypost.runtime import load

    pngs = image_bundle["pngs"][:6]
    want = load(image_bundle["bundle"]).predict([{"image": b} for b in pngs])
    with ThreadServer(create_app(image_bundle["bundle"])) as server, \
            httpx.Client(base_url=server.url, timeout=20) as client:
        ok = client.post("/predict/columns", content=_stream(pa.table({"image": pa.array(pngs, pa.binary())})),
                         headers=HEADERS)
        path = client.post("/predict/columns", content=_stream(pa.table({"image": ["/etc/passwd"]})), headers=HEADERS)
        junk = client.post("/predict/columns", content=_stream(pa.table({"image": pa.array([pngs[0], b"GIF"],
                                                                                            pa.binary())})),
                           headers=HEADERS)
    assert _read(ok)["prediction"].to_pylist() == want.tolist()
    assert path.status_code == 422 and "image column expects Arrow binary" in path.json()["message"]
    assert junk.status_code == 422 and junk.json()["detail"][0]["loc"] == ["body", "columns", "image", 1]
    assert "the 3 bytes: not a PNG" in junk.json()["message"]


def test_openapi_documents_both_columnar_encodings(penguins_bundle):
    from fastapi.testclient import TestClient

    with TestClient(create_app(penguins_bundle[1])) as client:
        content = client.get("/openapi.json").json()["paths"]["/predict/columns"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", ARROW_STREAM}
