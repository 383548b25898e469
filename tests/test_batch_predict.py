"""Batch prediction from a bundle: same output as the model, and memory flat in the file's length."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from waypost import Predictor
from waypost.cli import app
from waypost.scenarios.datasets import load_dataset, split


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    train, test = split(load_dataset("islr_default"), "default", test_size=0.3, seed=0)
    p = Predictor(target="default", preset="fast", track=False, verbose=False).fit(train)
    path = tmp_path_factory.mktemp("b") / "bundle"
    p.export(path)
    return p, test, path


def test_cli_export_and_bundle_predict_match_the_model(bundle, tmp_path, monkeypatch):
    p, test, _ = bundle
    monkeypatch.chdir(tmp_path)
    p.save("model")
    runner = CliRunner()
    res = runner.invoke(app, ["export", "model", "-o", "b", "--optimize", "int8"])
    assert res.exit_code == 0, res.output
    assert "export report" in res.output and "not measured" in res.output  # no --data: said loudly
    test.to_csv("test.csv", index=False)
    res = runner.invoke(app, ["predict", "b", "test.csv", "-o", "out.parquet", "--chunk-rows", "700"])
    assert res.exit_code == 0 and "onnxruntime" in res.output, res.output
    out = pd.read_parquet("out.parquet")
    assert len(out) == len(test) and list(out.columns) == ["prediction", "proba_No", "proba_Yes"]
    assert np.abs(out["proba_Yes"].to_numpy() - p.predict_proba(test)["Yes"].to_numpy()).max() < 0.01  # int8
    res = runner.invoke(app, ["predict", "model", "test.csv", "-o", "ref.csv"])
    assert res.exit_code == 0 and list(pd.read_csv("ref.csv").columns) == list(out.columns)


def _peak_rss_mib(args: list[str]) -> float:
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True);"
            "assert r.returncode == 0, r.stderr.decode()[-2000:];"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_file(bundle, tmp_path):
    _, test, path = bundle
    waypost = str(Path(sys.executable).with_name("waypost"))
    rows = test.drop(columns=["default"])
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    pd.concat([rows] * 34, ignore_index=True).to_csv(small, index=False)       # ~100k rows
    pd.concat([rows] * 340, ignore_index=True).to_csv(large, index=False)      # ~1M rows
    rss = {}
    for name, file in (("small", small), ("large", large)):
        rss[name] = _peak_rss_mib([waypost, "predict", str(path), str(file), "-o", str(tmp_path / f"{name}.parquet"),
                                   "--chunk-rows", "20000"])
    assert len(pd.read_parquet(tmp_path / "large.parquet")) == 340 * len(rows)
    # 10x the rows (a 1M-row frame alone is ~100 MiB) may cost at most a few MiB of peak memory
    assert rss["large"] - rss["small"] < 40, rss


def test_evaluate_and_info_accept_a_bundle(bundle, tmp_path, monkeypatch):
    import json

    p, test, path = bundle
    monkeypatch.chdir(tmp_path)
    test.to_csv("test.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(path), "test.csv", "--json", "m.json"])
    assert res.exit_code == 0, res.output
    got, expected = json.loads(open("m.json").read()), p.evaluate(test)
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) < 1e-4 for k in got)
    res = runner.invoke(app, ["info", str(path), "--json"])
    info = json.loads(res.output)
    assert res.exit_code == 0 and info["task"] == "binary" and info["optimize"] == "none"
    bad = test.assign(default=test["default"].replace({"Yes": "Maybe"}))
    bad.to_csv("bad.csv", index=False)
    res = runner.invoke(app, ["evaluate", str(path), "bad.csv"])
    assert res.exit_code == 2 and "never saw" in res.output and "Maybe" in res.output
