"""schemathesis against `waypost serve`: the served OpenAPI document, fuzzed with every check.

`st run` (schemathesis 4, all phases: examples, coverage, fuzzing) against a real `waypost serve`
for a tabular bundle (with an API key, so the auth checks run), an image bundle and a text bundle:
0 server errors and 0 conformance failures (status codes, content types, headers and bodies all as
documented; schema-valid requests accepted, schema-invalid ones refused). What it found before:
`false` accepted for a number, `{"columns": {}}` valid by the schema but refused, /metrics
documented as JSON, undocumented 422s and 415s.

Bounded: at most `EXAMPLES` cases per operation and phase, `SECONDS` per bundle; a fixed seed per
bundle makes a failure reproducible (WAYPOST_FUZZ_SEED overrides it to explore further). Two rules
JSON Schema cannot state are supplied by tests/schemathesis_hooks.py (real images for
``format: base64-image``; one length for all columns). schemathesis sends no Arrow bodies (it has
no serializer for that media type): tests/test_serve_arrow.py and test_serve_contract.py cover them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from servers import free_port, metrics_of, running  # noqa: E402

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent
EXAMPLES = 25
SECONDS = 15


def _fuzz(bundle: Path, tmp_path: Path, seed: int, api_key: str | None = None) -> tuple[str, dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "waypost"), "serve", str(bundle), "--port", str(port), "--log-path", "none"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    headers: dict[str, str] = {}
    if api_key:
        key_file = tmp_path / "api.key"
        key_file.write_text(api_key)
        key_file.chmod(0o600)
        argv += ["--api-key-file", str(key_file)]
        headers = {"X-API-Key": api_key}
    seed = int(os.environ.get("WAYPOST_FUZZ_SEED", seed))
    st = [str(BIN / "st"), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
          "--max-time", str(SECONDS), "--seed", str(seed), "--no-shrink", "--request-timeout", "20"]
    st += [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    with running(argv, ready_url=url + "/ready", cwd=tmp_path):
        out = subprocess.run(st, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS + 90)
        with httpx.Client(base_url=url, headers=headers) as client:
            metrics = metrics_of(client)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    return report, metrics


def _check(report: str, metrics: dict) -> None:
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated and generated.group(1) == generated.group(2), report[-3000:]
    assert int(generated.group(1)) >= 200, report[-3000:]  # the run was not vacuous
    for phase in ("Examples", "Coverage", "Fuzzing"):
        assert re.search(rf"✅ +{phase}", report), (phase, report[-3000:])
    # the fuzzer reached the model on both prediction endpoints, and no answer was a server error
    for path in ("/predict", "/predict/columns"):
        assert metrics.get(("waypost_requests_total", (("endpoint", path), ("status", "200"))), 0) > 10, path
    assert not [k for k in metrics if k[0] == "waypost_requests_total" and dict(k[1])["status"].startswith("5")]


@pytest.mark.slow
def test_schemathesis_tabular_bundle_with_an_api_key(penguins_bundle, tmp_path):
    report, metrics = _fuzz(penguins_bundle[1], tmp_path, seed=1, api_key="fuzz-key")
    _check(report, metrics)
    assert metrics[("waypost_errors_total", (("kind", "unauthorized"),))] > 0  # the auth checks ran


@pytest.mark.slow
def test_schemathesis_image_bundle(image_bundle, tmp_path):
    _check(*_fuzz(image_bundle["bundle"], tmp_path, seed=2))


@pytest.mark.slow
def test_schemathesis_text_bundle(text_bundle, tmp_path):
    _check(*_fuzz(text_bundle["bundle"], tmp_path, seed=3))
