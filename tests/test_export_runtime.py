"""Bundles: export parity for every part, the torch-free runtime, optimisation reports, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import waypost.runtime as rt
from waypost import Predictor
from waypost.deploy.bundle import records_from_frame
from waypost.errors import DataError, ModelFileError
from waypost.scenarios.datasets import load_dataset, split


def _fit(name: str, target: str, model: str) -> tuple[Predictor, pd.DataFrame]:
    train, test = split(load_dataset(name), target, test_size=0.3, seed=0)
    return Predictor(target=target, preset="fast", model=model, track=False, verbose=False).fit(train), test


@pytest.fixture(scope="module")
def default_blend():
    p, test = _fit("islr_default", "default", "blend")
    assert p.selected_ == "blend", "this fixture must exercise a real two-part blend"
    return p, test


@pytest.mark.parametrize("name,target,model", [
    ("islr_default", "default", "mlp"),
    ("penguins", "species", "lightgbm"),  # NaNs + a categorical split in the trees
    ("diabetes", "target", "blend"),
])
def test_export_parity_per_part(name, target, model, tmp_path):
    p, test = _fit(name, target, model)
    report = p.export(tmp_path / "b")
    assert report["max_abs_diff_vs_model"] <= 1e-4
    bundle = rt.load(tmp_path / "b")
    cols = records_from_frame(test, list(p.features_))
    if p.task_ == "regression":
        expected = p.predict(test)
        np.testing.assert_allclose(bundle.predict(cols), expected, atol=1e-4 * np.abs(expected).max())
    else:
        np.testing.assert_allclose(bundle.predict_proba(cols), p.predict_proba(test).to_numpy(), atol=1e-4)
        assert (bundle.predict(cols) == p.predict(test)).all()
    assert not list((tmp_path / "b").glob("*.pkl"))


def test_blend_parity_and_bundle_contents(default_blend, tmp_path):
    p, test = default_blend
    p.export(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "waypost.json").read_text())
    assert manifest["format_version"] == 2 and manifest["model"]["inputs"] == ["numeric", "gbm"]
    assert set(manifest["model"]["parts"]) == {"gbm", "mlp"} and manifest["lineage"]["data_digest"]
    bundle = rt.load(tmp_path / "b")
    records = test.head(50).to_dict("records")
    np.testing.assert_allclose(bundle.predict_proba(records), p.predict_proba(test.head(50)).to_numpy(), atol=1e-4)
    assert bundle.classes == ["No", "Yes"] and bundle.version.startswith("sha256:")


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "sklearn", "xgboost", "lightgbm", "pandas", "lightning", "mlflow", "scipy"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, Block())
""")


def test_runtime_runs_with_torch_pandas_sklearn_gbm_libraries_unimportable(default_blend, tmp_path):
    p, test = default_blend
    p.export(tmp_path / "b")
    rows = test.head(200)
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in rows[list(p.features_)].to_dict("records")]
    (tmp_path / "rows.json").write_text(json.dumps(records))
    script = BLOCKER + textwrap.dedent(f"""
        import json
        import waypost.runtime as rt
        b = rt.load({str(tmp_path / 'b')!r})
        rows = json.load(open({str(tmp_path / 'rows.json')!r}))
        print(json.dumps({{"proba": b.predict_proba(rows).tolist(), "labels": b.predict(rows).tolist(),
                          "loaded": sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    np.testing.assert_allclose(np.array(result["proba"]), p.predict_proba(rows).to_numpy(), atol=1e-4)
    assert result["labels"] == list(p.predict(rows))


def test_datetime_and_binary_columns_match_in_numpy(tmp_path):
    """Real timestamps (ISO 8601 with Z) from dslabs trump_tweets, preprocessed by numpy alone."""
    df = load_dataset("trump_tweets")
    df = df[df["source"].isin(["Twitter Web Client", "Twitter for Android", "Twitter for iPhone"])]
    df = df[["source", "created_at", "retweet_count", "favorite_count", "is_retweet"]].sample(3000, random_state=0)
    train, test = split(df, "source", test_size=0.3, seed=0)
    p = Predictor(target="source", preset="fast", track=False, verbose=False).fit(train)
    assert p.features_["created_at"] == "datetime"
    test = test.copy()
    test.iloc[:5, test.columns.get_loc("created_at")] = None  # missing dates take the training median
    p.export(tmp_path / "b")
    bundle = rt.load(tmp_path / "b")
    np.testing.assert_allclose(
        bundle.predict_proba(records_from_frame(test, list(p.features_))), p.predict_proba(test).to_numpy(), atol=1e-4
    )
    assert p.evaluate(test)["accuracy"] > 0.6


def test_int8_and_fp16_reports(default_blend, tmp_path):
    p, test = default_blend
    report = p.export(tmp_path / "q", optimize="int8", data=test)
    m = report["metrics"]
    assert m["primary"] == "roc_auc" and abs(m["drop"]) <= 0.01 and "warning" not in report  # binary: headline_metric
    assert report["size_bytes"] < report["fp32"]["size_bytes"]
    assert rt.load(tmp_path / "q").manifest["model"]["optimize"] == "int8"
    half = p.export(tmp_path / "h", optimize="fp16", data=test)
    assert abs(half["metrics"]["drop"]) <= 0.01 and half["size_bytes"] < half["fp32"]["size_bytes"]
    assert ("note" in half) == ("CUDAExecutionProvider" not in rt.load(tmp_path / "h").session.get_providers())
    assert "note" not in report  # the fp16-on-CPU note is for fp16 alone
    no_data = p.export(tmp_path / "n", optimize="int8")
    assert "not measured" in no_data["warning"]


def test_int8_budget_overrun_is_reported_loudly(default_blend, tmp_path, monkeypatch):
    import waypost.deploy.bundle as bundle_mod

    p, test = default_blend
    monkeypatch.setattr(bundle_mod, "MAX_METRIC_DROP", -1.0)  # any drop, even none, is over budget
    report = p.export(tmp_path / "q", optimize="int8", data=test)
    assert "over the 1-point budget" in report["warning"]


def test_runtime_input_errors_name_the_column(default_blend, tmp_path):
    p, test = default_blend
    p.export(tmp_path / "b")
    bundle = rt.load(tmp_path / "b")
    rec = {"student": "No", "balance": 500.0, "income": 30000.0}
    assert bundle.predict([rec]).shape == (1,)
    assert bundle.predict([{**rec, "balance": None, "student": "Maybe", "extra": 1}]).shape == (1,)
    with pytest.raises(DataError, match=r"record 0 is missing columns: \['income'\]"):
        bundle.predict([{"student": "No", "balance": 1.0}])
    with pytest.raises(DataError, match=r"row 0: column 'balance' expected a number, got 'lots'"):
        bundle.predict([{**rec, "balance": "lots"}])
    with pytest.raises(DataError, match="empty batch"):
        bundle.predict([])
    with pytest.raises(DataError, match=r"missing columns: \['student'\]"):
        bundle.predict({"balance": [1.0], "income": [2.0]})
    with pytest.raises(DataError, match="list of records or a dict"):
        bundle.predict("balance=3")


def test_bundle_load_errors_name_the_file(default_blend, tmp_path):
    p, _ = default_blend
    with pytest.raises(ModelFileError, match="bundle directory not found"):
        rt.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="waypost.json"):
        rt.load(tmp_path / "empty")
    p.export(tmp_path / "b")
    manifest = tmp_path / "b" / "waypost.json"
    good = manifest.read_text()
    manifest.write_text(good.replace('"format_version": 2', '"format_version": 7'))
    with pytest.raises(ModelFileError, match="upgrade waypost"):
        rt.load(tmp_path / "b")
    manifest.write_text(good)
    (tmp_path / "b" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError, match="model.onnx"):
        rt.load(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match="model file missing"):
        rt.load(tmp_path / "b")
