"""Bundle size, and what a deployment machine must install: `waypost[runtime]` vs the full tool.

One run: trains a model on ISLR Default, exports fp32 and int8 bundles, prints their sizes; then
creates a fresh virtualenv, `pip install <this repo>[runtime]`, measures its site-packages, proves
the bundle predicts there (same probabilities as the in-memory model), and prints that size beside
the full install's (this interpreter's environment, `waypost[all]`).

    python benchmarks/bundle_size.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def mib(n: int) -> str:
    return f"{n / 2**20:9.1f} MiB"


def main() -> None:
    warnings.filterwarnings("ignore")
    from waypost import Predictor
    from waypost.scenarios.datasets import load_dataset, split

    train, test = split(load_dataset("islr_default"), "default")
    p = Predictor(target="default", track=False, verbose=False).fit(train)
    work = Path(tempfile.mkdtemp(prefix="waypost-bundle-size-"))
    sizes = {}
    for opt in ("none", "int8"):
        out = work / f"bundle-{opt}"
        p.export(out, optimize=opt, register=False)
        sizes[opt] = {f.name: f.stat().st_size for f in out.iterdir()}
    print(f"model: {p.selected_} on ISLR Default ({len(train)} training rows)")
    for opt, files in sizes.items():
        listing = ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sorted(files.items()))
        print(f"bundle ({opt:4}): {sum(files.values()) / 1024:8.1f} KiB  [{listing}]")

    venv = work / "runtime-venv"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"{REPO}[runtime]"], check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    install_s = time.perf_counter() - t
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    packages = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                              check=True).stdout.split()
    rows = test.head(100)[list(p.features_)]
    (work / "rows.json").write_text(json.dumps(rows.to_dict("records")))
    smoke = (
        "import json, sys, waypost.runtime as rt; b = rt.load(sys.argv[1]); rows = json.load(open(sys.argv[2]));"
        "print(json.dumps({'proba': b.predict_proba(rows).tolist(), 'torch': 'torch' in sys.modules,"
        " 'pandas': 'pandas' in sys.modules}))"
    )
    out = subprocess.run([str(py), "-c", smoke, str(work / "bundle-none"), str(work / "rows.json")],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    diff = float(np.abs(np.array(result["proba"]) - p.predict_proba(rows).to_numpy()).max())
    runtime_size = du(site)
    full_size = du(Path(sysconfig.get_paths()["purelib"]))
    print(f"runtime venv packages: {' '.join(packages)}")
    print(f"runtime install ({install_s:.0f}s): {mib(runtime_size)}   torch imported: {result['torch']}, "
          f"pandas imported: {result['pandas']}, max |diff| vs model: {diff:.1e}")
    print(f"full install (waypost[all]): {mib(full_size)}")
    print(f"ratio runtime / full = {runtime_size / full_size:.3f}")


if __name__ == "__main__":
    main()
