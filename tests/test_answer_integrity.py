"""A served row's answer never depends on what it was batched with, and no answer holds NaN or
infinity: for fp32 and int8 bundles of each kind (tabular MLP, image CNN, text Transformer), on
real data, through the runtime, `waypost predict` and a real server."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from servers import ThreadServer, metrics_of

import waypost.runtime as rt
from waypost import Predictor
from waypost.deploy.bundle import json_records
from waypost.errors import DataError
from waypost.scenarios.datasets import load_dataset, split
from waypost.serve.app import create_app

# fp32 kernels may round differently for another batch shape (BLAS blocking, softmax over a longer
# padded row): answers agree to float32 rounding. The int8 layers are exact integer arithmetic.
ATOL = 1e-6
# ...but a Transformer's int8 layers read fp32 activations (softmax over the batch's padded length),
# and one ulp there can move a value across a quantisation step: one level of one token, ~3e-5 of a
# probability on CI's CPU. Still per row (the scale is the row's own), so no outlier can move it more.
ATOL_TEXT_INT8 = 5e-4


@pytest.fixture(scope="module")
def penguins_mlp(tmp_path_factory):
    train, test = split(load_dataset("penguins"), "species")
    predictor = Predictor(target="species", preset="fast", model="mlp", track=False, verbose=False).fit(train)
    root = tmp_path_factory.mktemp("mlp")
    for optimize in ("none", "int8"):
        predictor.export(root / optimize, optimize=optimize, register=False)
    return predictor, root, test.reset_index(drop=True)


def _tabular_extremes(records: list[dict]) -> list[dict]:
    base = records[0]
    out = []
    for column in ("body_mass_g", "bill_length_mm", "flipper_length_mm"):
        for value in (1e6, 1e308, -1e308, 1e-300):
            out.append({**base, column: value})
    out.append({**base, "island": "Atlantis", "sex": "unknown", "year": 3000})
    return out


def _assert_independent(bundle, normal: list, extremes: list, atol: float = ATOL) -> None:
    alone = np.vstack([bundle.predict_proba([row]) for row in normal])
    rng = np.random.default_rng(0)
    mixed = normal + extremes
    order = rng.permutation(len(mixed))
    batched = bundle.predict_proba([mixed[i] for i in order])
    assert np.isfinite(batched).all()
    back = np.empty_like(batched)
    back[order] = batched
    np.testing.assert_allclose(back[: len(normal)], alone, atol=atol, rtol=0)
    assert (back[: len(normal)].argmax(1) == alone.argmax(1)).all()


@pytest.mark.parametrize("optimize", ["none", "int8"])
def test_tabular_rows_answer_alike_alone_and_beside_extreme_rows(penguins_mlp, optimize):
    _, root, test = penguins_mlp
    bundle = rt.load(root / optimize)
    records = json_records(test.drop(columns=["species"]))
    _assert_independent(bundle, records[:40], _tabular_extremes(records))


@pytest.mark.parametrize("optimize", ["none", "int8"])
def test_image_rows_answer_alike_alone_and_beside_extreme_images(image_bundle, tmp_path, optimize):
    bundle_dir = image_bundle["bundle"]
    if optimize != "none":
        model = Predictor.load(image_bundle["model"])
        bundle_dir = tmp_path / "int8"
        model.export(bundle_dir, optimize=optimize, data=image_bundle["test"], register=False)
    bundle = rt.load(bundle_dir)
    normal = [{"image": png} for png in image_bundle["pngs"][:20]]
    rng = np.random.default_rng(1)
    extremes = [{"image": np.full((28, 28), 255, np.uint8)}, {"image": np.zeros((28, 28), np.uint8)},
                {"image": rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)}]
    _assert_independent(bundle, normal, extremes)


@pytest.mark.parametrize("optimize", ["none", "int8"])
def test_text_rows_answer_alike_alone_and_beside_extreme_texts(text_bundle, tmp_path, optimize):
    bundle_dir = text_bundle["bundle"]
    if optimize != "none":
        bundle_dir = tmp_path / "int8"
        text_bundle["predictor"].export(bundle_dir, optimize=optimize, register=False)
    bundle = rt.load(bundle_dir)
    normal = [{"text": t} for t in text_bundle["test"]["text"].head(20)]
    extremes = [{"text": "zzzz " * 2000}, {"text": ""}, {"text": "!" * 500}, {"text": None},
                {"text": " ".join(text_bundle["test"]["text"].tail(10))}]
    _assert_independent(bundle, normal, extremes, atol=ATOL_TEXT_INT8 if optimize == "int8" else ATOL)


def test_out_of_range_numbers_are_clipped_and_counted_never_nan(penguins_mlp):
    predictor, root, test = penguins_mlp
    for optimize in ("none", "int8"):
        bundle = rt.load(root / optimize)
        rec = json_records(test.drop(columns=["species"]))[0]
        state = next(c for c in bundle.manifest["preprocessor"]["tabular"]["columns"] if c["name"] == "body_mass_g")
        out = bundle.infer([{**rec, "body_mass_g": 1e308}, {**rec, "body_mass_g": state["high"]}, rec,
                            {**rec, "island": "Atlantis"}])
        assert np.isfinite(out["proba"]).all()
        np.testing.assert_allclose(out["proba"][0], out["proba"][1], atol=ATOL)  # clipped to the bound
        assert out["issues"]["clipped"]["body_mass_g"].tolist() == [True, False, False, False]
        assert out["issues"]["unseen"]["island"].tolist() == [False, False, False, True]
    # the torch model directory clips the same way, so bundle and model agree on such rows
    frame = pd.DataFrame([{**json_records(test.drop(columns=["species"]))[0], "body_mass_g": 1e308}])
    proba = predictor.predict_proba(frame).to_numpy()
    assert np.isfinite(proba).all() and predictor.input_issues_ == {"clipped": {"body_mass_g": 1}}
    np.testing.assert_allclose(proba, rt.load(root / "none").predict_proba(frame), atol=1e-4)


def test_bundles_from_before_clipping_still_load_and_clip_nothing(penguins_mlp, tmp_path):
    """Bundles exported by earlier versions have no bounds in their state: loaded as they were."""
    _, root, test = penguins_mlp
    old = tmp_path / "old"
    shutil.copytree(root / "none", old)
    manifest = json.loads((old / "waypost.json").read_text())
    for col in manifest["preprocessor"]["tabular"]["columns"]:
        col.pop("low", None), col.pop("high", None)
    (old / "waypost.json").write_text(json.dumps(manifest))
    rec = {**json_records(test.drop(columns=["species"]))[0], "body_mass_g": 9000.0}
    assert rt.load(old).infer([rec])["issues"] == {}
    assert "clipped" in rt.load(root / "none").infer([rec])["issues"]


def _nan_bundle(src: Path, dst: Path) -> Path:
    """A bundle whose preprocessing state (std ~ 0, mean = median) turns every number but the median
    into an infinite input: the graph answers NaN for those rows (the self-test row passes)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "waypost.json").read_text())
    col = next(c for c in manifest["preprocessor"]["tabular"]["columns"] if c["name"] == "body_mass_g")
    col.update(mean=col["median"], std=1e-300)
    col.pop("low"), col.pop("high")
    (dst / "waypost.json").write_text(json.dumps(manifest))
    return dst


def test_non_finite_outputs_are_errors_naming_the_row_never_answers(penguins_mlp, tmp_path):
    _, root, test = penguins_mlp
    bundle_dir = _nan_bundle(root / "none", tmp_path / "nan")
    bundle = rt.load(bundle_dir)
    records = json_records(test.drop(columns=["species"]))
    median = next(c for c in bundle.manifest["preprocessor"]["tabular"]["columns"] if c["name"] == "body_mass_g")["median"]
    fine = {**records[0], "body_mass_g": median}
    with pytest.raises(DataError, match=r"row 1: the model's output is not a finite number"):
        bundle.predict([fine, records[1]])
    # waypost predict stops with the row, exit 2, and writes no file with NaN in it
    csv = tmp_path / "rows.csv"
    test.to_csv(csv, index=False)
    done = subprocess.run([sys.executable, "-m", "waypost.cli", "predict", str(bundle_dir), str(csv), "-o",
                           str(tmp_path / "out.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "not a finite number" in done.stderr and "row " in done.stderr
    # the server answers the row's request 422 and its batch-mates 200, all valid JSON
    with ThreadServer(create_app(bundle_dir, max_latency_ms=50)) as server, httpx.Client(base_url=server.url) as client:
        good = client.post("/predict", json=fine)
        bad = client.post("/predict", json=records[1])
        assert good.status_code == 200 and bad.status_code == 422
        for resp in (good, bad):
            json.loads(resp.text, parse_constant=lambda c: pytest.fail(f"{c} in a JSON answer"))


def test_server_answers_clipped_and_unseen_values_with_warnings_and_metrics(penguins_mlp):
    _, root, test = penguins_mlp
    rec = json_records(test.drop(columns=["species"]))[0]
    with ThreadServer(create_app(root / "int8")) as server, httpx.Client(base_url=server.url) as client:
        resp = client.post("/predict", json=[{**rec, "body_mass_g": 1e308}, {**rec, "island": "Atlantis"}, rec])
        assert resp.status_code == 200
        body = json.loads(resp.text, parse_constant=lambda c: pytest.fail(f"{c} in a JSON answer"))
        assert body["input_warnings"] == {"clipped": {"body_mass_g": 1}, "unseen": {"island": 1}}
        assert "input_warnings" not in client.post("/predict", json=rec).json()
        columns = {c: [rec[c], rec[c]] for c in rec}
        columns["body_mass_g"] = [rec["body_mass_g"], -1e308]
        resp = client.post("/predict/columns", json={"columns": columns})
        assert resp.json()["input_warnings"] == {"clipped": {"body_mass_g": 1}}
        metrics = metrics_of(client)
        assert metrics[("waypost_input_values_total", (("column", "body_mass_g"), ("issue", "clipped")))] == 2
        assert metrics[("waypost_input_values_total", (("column", "island"), ("issue", "unseen")))] == 1


def test_waypost_predict_counts_clipped_and_unseen_values(penguins_mlp, tmp_path):
    _, root, test = penguins_mlp
    frame = test.drop(columns=["species"]).copy()
    frame.loc[3, "body_mass_g"] = 1e308
    frame.loc[5, "island"] = "Atlantis"
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    done = subprocess.run([sys.executable, "-m", "waypost.cli", "predict", str(root / "int8"), str(csv), "-o",
                           str(tmp_path / "out.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == len(frame) and out.notna().all().all()
    assert "body_mass_g: 1" in done.stdout and "island: 1" in done.stdout, done.stdout


def test_runtime_takes_a_dataframe(penguins_mlp):
    _, root, test = penguins_mlp
    bundle = rt.load(root / "none")
    frame = test.drop(columns=["species"]).head(7)
    np.testing.assert_array_equal(bundle.predict(frame), bundle.predict(json_records(frame)))
    with pytest.raises(DataError, match=r"missing columns: \['island'\]"):
        bundle.predict(frame.drop(columns=["island"]))



def test_served_rows_answer_alike_alone_and_batched_with_extreme_requests(penguins_mlp):
    """Through a real server: normal records sent concurrently with extreme ones ride in shared
    batches (the batcher merges them), and each still gets its answer alone."""
    import asyncio

    _, root, test = penguins_mlp
    records = json_records(test.drop(columns=["species"]))[:30]
    # the server's schema takes only the two training values of a binary column: keep "sex" valid
    extremes = [{**r, "sex": records[0]["sex"]} for r in _tabular_extremes(records)]
    bundle = rt.load(root / "int8")
    alone = {i: bundle.predict_proba([r])[0] for i, r in enumerate(records)}
    with ThreadServer(create_app(root / "int8", max_latency_ms=20, log_path=None)) as server:
        async def send() -> list:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                bodies = [(i, r) for i, r in enumerate(records)] + [(None, r) for r in extremes * 2]
                order = np.random.default_rng(2).permutation(len(bodies))
                answers = await asyncio.gather(*(client.post("/predict", json=bodies[k][1]) for k in order))
                return [(bodies[k][0], a) for k, a in zip(order, answers)]

        answered = asyncio.run(send())
        batches = metrics_of(httpx.Client(base_url=server.url))
    merged = sum(v for (name, _), v in batches.items() if name == "waypost_batch_requests_sum")
    count = sum(v for (name, _), v in batches.items() if name == "waypost_batch_requests_count")
    assert merged / count > 1.5, "requests were not batched together: the test proves nothing"
    for i, resp in answered:
        assert resp.status_code == 200
        if i is None:
            continue
        got = np.array([resp.json()["probabilities"][0][str(c)] for c in bundle.classes])
        np.testing.assert_allclose(got, alone[i], atol=ATOL, rtol=0)
