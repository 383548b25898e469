"""A bundle or model directory is verified before it answers: a swapped or wrong-shape graph, a
hand-edited manifest and a missing part are errors naming the file and key, at load, so a server
never starts (and never says ready) on a bundle it cannot serve."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import waypost.runtime as rt
from waypost import Predictor
from waypost.errors import ModelFileError
from waypost.scenarios.datasets import load_dataset, split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A penguins classifier and a diabetes regressor, each exported: graphs to swap between."""
    root = tmp_path_factory.mktemp("trust")
    train, _ = split(load_dataset("penguins"), "species")
    clf = Predictor(target="species", preset="fast", model="mlp", track=False, verbose=False).fit(train)
    clf.export(root / "clf", register=False)
    clf.save(root / "clf_model")
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(as_frame=True).frame
    reg = Predictor(target="target", preset="fast", model="mlp", track=False, verbose=False).fit(diabetes)
    reg.export(root / "reg", register=False)
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(bundle: Path, change, name: str = "waypost.json") -> None:
    manifest = json.loads((bundle / name).read_text())
    change(manifest)
    (bundle / name).write_text(json.dumps(manifest))


def _set_digest(bundle: Path) -> None:
    digest = "sha256:" + hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    _edit(bundle, lambda m: m["model"].update(digest=digest))


def test_a_swapped_graph_is_refused_at_load(bundles, tmp_path):
    bad = _copy(bundles / "clf", tmp_path / "swapped")
    shutil.copy(bundles / "reg" / "model.onnx", bad / "model.onnx")
    with pytest.raises(ModelFileError, match=r"model\.onnx: sha256 .* does not match the manifest"):
        rt.load(bad)


def test_a_graph_of_the_wrong_shape_is_refused_even_with_its_digest(bundles, tmp_path):
    bad = _copy(bundles / "clf", tmp_path / "wrong")
    shutil.copy(bundles / "reg" / "model.onnx", bad / "model.onnx")
    _set_digest(bad)  # someone "fixed" the digest: the graph's inputs/outputs still do not fit
    with pytest.raises(ModelFileError, match=r"graph's (inputs|output)"):
        rt.load(bad)


def test_a_server_never_starts_or_says_ready_on_a_bad_bundle(bundles, tmp_path):
    from servers import free_port

    bad = _copy(bundles / "clf", tmp_path / "swapped")
    shutil.copy(bundles / "reg" / "model.onnx", bad / "model.onnx")
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "waypost.cli", "serve", str(bad), "--port", str(port),
                           "--log-path", "none"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "does not match the manifest" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("task"), r"missing key 'task'"),
    (lambda m: m["model"].pop("digest"), r"missing key 'model\.digest'"),
    (lambda m: m["features"].pop("island"), r"'preprocessor' preprocesses column\(s\) \['island'\]"),
    (lambda m: m["features"].update(beak_colour="category"), r"feature\(s\) \['beak_colour'\] have no fitted"),
    (lambda m: m["preprocessor"]["tabular"]["columns"][1].pop("median"),
     r"missing key 'preprocessor\.tabular\.columns\.1\.median'"),
    (lambda m: m["target_encoder"].update(classes=["Adelie"]), r"at least two classes"),
    (lambda m: m.update(task="ranking"), r"'task' is 'ranking'"),
    (lambda m: m["features"].update(island="colour"), r"feature 'island' has type 'colour'"),
    (lambda m: m["preprocessor"]["tabular"]["columns"][0].update(kind="shape"),
     r"'preprocessor\.tabular\.columns\.0\.kind' is 'shape'"),
])
def test_a_hand_edited_manifest_names_the_key_at_fault(bundles, tmp_path, change, message):
    bad = _copy(bundles / "clf", tmp_path / "edited")
    _edit(bad, change)
    with pytest.raises(ModelFileError, match=message) as err:
        rt.load(bad)
    assert "waypost.json" in str(err.value)


def test_a_model_directory_naming_a_part_it_lacks_is_refused(bundles, tmp_path):
    model = _copy(bundles / "clf_model", tmp_path / "model")
    _edit(model, lambda m: m.update(selected="xgboost"), "waypost_model.json")
    with pytest.raises(ModelFileError, match=r"'selected' is 'xgboost', but the model's parts are \['mlp'\]"):
        Predictor.load(model)
    model = _copy(bundles / "clf_model", tmp_path / "model2")
    _edit(model, lambda m: m.update(blend_weights={"mlp": 0.5, "gbm": 0.5}), "waypost_model.json")
    with pytest.raises(ModelFileError, match=r"'blend_weights' names part\(s\) \['gbm'\]"):
        Predictor.load(model)
    model = _copy(bundles / "clf_model", tmp_path / "model3")
    (model / "parts" / "mlp" / "mlp.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"part 'mlp' names 'mlp.safetensors', which is not in"):
        Predictor.load(model)
    model = _copy(bundles / "clf_model", tmp_path / "model4")
    _edit(model, lambda m: m.pop("target"), "waypost_model.json")
    with pytest.raises(ModelFileError, match=r"waypost_model.json: missing key 'target'"):
        Predictor.load(model)


def test_saved_files_are_readable_like_their_manifest(bundles):
    umask = os.umask(0)
    os.umask(umask)
    for directory in ("clf_model", "clf"):
        for path in (bundles / directory).rglob("*"):
            mode = 0o777 if path.is_dir() else 0o666
            assert stat.S_IMODE(path.stat().st_mode) == mode & ~umask, path
