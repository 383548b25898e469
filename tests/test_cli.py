"""The command line as a user runs it: help is instant, the whole path works, errors are one clear line."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from waypost.cli import app

WAYPOST = str(Path(sys.executable).with_name("waypost"))
HEAVY = ("torch", "lightning", "mlflow", "pandas", "sklearn", "lightgbm", "xgboost", "matplotlib", "numpy")


def test_help_is_fast_and_imports_nothing_heavy():
    best = min(_timed([WAYPOST, "--help"]) for _ in range(3))
    assert best < 0.5, f"waypost --help took {best:.2f}s"
    code = "import sys; from waypost.cli import app; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"heavy modules imported by the CLI module: {out}"


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "init" in proc.stdout and "train" in proc.stdout
    return time.perf_counter() - t


@pytest.fixture()
def runner():
    return CliRunner()


def test_init_train_evaluate_predict_info(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok = lambda *args: _ok(runner, *args)  # noqa: E731
    ok("dataset", "penguins", "-o", "data/train.csv", "--test-output", "data/test.csv")
    out = ok("init", "data/train.csv", "--target", "species", "--preset", "fast")
    assert "island" in out and Path("waypost.yaml").is_file()
    text = Path("waypost.yaml").read_text()
    assert "reason:" in text and "task: multiclass" in text and "architecture: blend" in text
    again = runner.invoke(app, ["init", "data/train.csv", "--target", "species"])
    assert again.exit_code == 2 and "--force" in again.output

    out = ok("train", "waypost.yaml", "--name", "m1")
    assert Path("runs/latest").resolve() == Path("runs/m1").resolve()
    assert Path(".waypost/mlflow.db").is_file() and Path(".waypost/artifacts").is_dir()
    assert "registered" in out and "waypost-species" in out

    out = ok("evaluate", "runs/latest", "data/test.csv", "--json", "metrics.json")
    assert json.loads(Path("metrics.json").read_text())["accuracy"] >= 0.95

    ok("predict", "runs/latest", "data/test.csv", "-o", "preds.parquet", "--chunk-rows", "25", "--keep", "species")
    preds = pd.read_parquet("preds.parquet")
    test = pd.read_csv("data/test.csv")
    assert len(preds) == len(test)
    assert {"prediction", "proba_Adelie", "proba_Chinstrap", "proba_Gentoo", "species"} <= set(preds.columns)
    assert (preds["prediction"] == preds["species"]).mean() >= 0.95
    from waypost import Predictor

    assert (preds["prediction"].to_numpy() == Predictor.load("runs/latest").predict(test)).all()

    info = json.loads(ok("info", "runs/latest", "--json"))
    assert info["task"] == "multiclass" and any(d["subject"] == "column 'island'" for d in info["plan"])
    assert "choice" in ok("info", "runs/latest")


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_errors_are_one_line_and_leave_nothing_behind(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["init", "nope.csv", "--target", "y"])
    assert res.exit_code == 2 and "nope.csv" in res.output and "Traceback" not in res.output
    assert not Path("waypost.yaml").exists()

    Path("bad.yaml").write_text("target: y\ndata: {train: t.csv}\ntraining: {epochs: 3}\n")
    res = runner.invoke(app, ["train", "bad.yaml"])
    assert res.exit_code == 2 and "unknown key 'training.epochs'" in res.output
    assert not Path("runs").exists()

    pd.DataFrame({"a": [1, 2, 3, 4], "y": ["p", "q", "p", "q"]}).to_csv("t.csv", index=False)
    Path("good.yaml").write_text("target: missing_col\ndata: {train: t.csv}\ntracking: {enabled: false}\n")
    res = runner.invoke(app, ["train", "good.yaml"])
    assert res.exit_code == 2 and "missing_col" in res.output
    assert not Path("runs").exists()

    res = runner.invoke(app, ["predict", "runs/latest", "t.csv", "-o", "out.csv"])
    assert res.exit_code == 2 and "runs/latest" in res.output and not Path("out.csv").exists()
    res = runner.invoke(app, ["dataset", "no_such_set", "-o", "x.csv"])
    assert res.exit_code == 2 and "no_such_set" in res.output
