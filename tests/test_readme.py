"""Every command block of README.md runs as written, in order, in a fresh folder (what `make demo`
runs too): `scripts/readme_run.py` turns the blocks into one shell session. Real data, real
servers on the README's ports, real MLflow."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path):
    if not os.path.isdir("/usr/share/games/fortunes"):
        pytest.skip("the README's text section reads Debian fortunes (apt-get install fortunes fortunes-min)")
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_run.py"), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, f"README block failed:\n{done.stderr[-6000:]}\n{done.stdout[-3000:]}"
    # what the README promised: the files it names exist in the folder it works in
    work = tmp_path / "quickstart"
    for name in ("waypost.yaml", "preds.parquet", "big_preds.parquet", "bundle/waypost.json", "student",
                 "digit_preds.csv", "fortunes_bundle/waypost.json", "default_model/waypost_model.json"):
        assert (work / name).exists(), name
    # and nothing it wrote escaped that folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [".venv", "quickstart"]


def test_the_runner_reads_the_blocks_in_order_and_skips_the_marked_one():
    sys.path.insert(0, str(ROOT / "scripts"))
    from readme_run import blocks

    found = blocks(ROOT / "README.md")
    assert found and all(lang in ("bash", "python") for _, lang, _ in found)
    assert not any("make demo" in code for _, _, code in found)  # the block that runs this runner
    assert found[0][2].startswith("source .venv/bin/activate")
