"""`waypost serve`'s surface: /docs and /redoc that work offline, an /info that names no file, and an
API key that never appears on a command line.

The docs pages used to load Swagger UI and ReDoc from a CDN (blank on a network without internet);
they must now reference same-origin URLs only, and each must answer 200 with JavaScript or CSS
from the installed fastapi-offline package.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("fastapi_offline")

from servers import ThreadServer  # noqa: E402

from waypost.serve.app import create_app  # noqa: E402

WAYPOST = str(Path(sys.executable).with_name("waypost"))


def _references(html: str) -> list[str]:
    """Every URL the page makes the browser fetch: src/href attributes, and the spec URLs the
    Swagger UI (``url:``) and ReDoc (``spec-url``) scripts load."""
    refs = re.findall(r'(?:src|href|spec-url)\s*=\s*"([^"]+)"', html)
    refs += re.findall(r"\burl:\s*'([^']+)'", html)
    return refs


def test_docs_and_redoc_load_only_same_origin_assets(penguins_bundle, tmp_path):
    with ThreadServer(create_app(penguins_bundle[1], log_path=tmp_path / "log.sqlite")) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        fetched = {}
        for page in ("/docs", "/redoc"):
            resp = client.get(page)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), page
            refs = _references(resp.text)
            assert refs, page
            assert "cdn" not in resp.text.lower() and "fonts.googleapis" not in resp.text, page
            for ref in refs:
                url = urljoin(server.url + page, ref)
                assert urlparse(url).netloc == urlparse(server.url).netloc, (page, ref)  # same origin only
                fetched[ref] = client.get(url)
        info = client.get("/info").json()
    kinds = {ref: r.headers["content-type"] for ref, r in fetched.items()}
    assert all(r.status_code == 200 for r in fetched.values()), {k: r.status_code for k, r in fetched.items()}
    scripts = [r for ref, r in fetched.items() if ref.endswith(".js")]
    styles = [r for ref, r in fetched.items() if ref.endswith(".css")]
    assert len(scripts) == 2 and all("javascript" in r.headers["content-type"] and len(r.content) > 100_000
                                     for r in scripts), kinds
    assert len(styles) == 1 and "text/css" in styles[0].headers["content-type"], kinds
    assert b"SwaggerUIBundle" in next(r.content for ref, r in fetched.items() if "swagger-ui-bundle" in ref)
    assert fetched["/openapi.json"].json()["info"]["title"] == "waypost model server"
    # /info says whether predictions are logged, never where: a client has no business with server paths
    assert info["prediction_log"] is True
    assert str(tmp_path) not in str(info) and "sqlite" not in str(info)


def test_the_api_key_comes_from_a_file_or_the_environment_never_an_argument(penguins_bundle, tmp_path):
    from waypost.errors import ConfigError
    from waypost.serve.cli import serve

    bundle = str(penguins_bundle[1])
    out = subprocess.run([WAYPOST, "serve", bundle, "--api-key", "s3cret"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "No such option" in out.stderr and "--api-key" in out.stderr, out.stderr

    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty.key is empty"):
        serve(bundle, api_key_file=empty, run=False)
    with pytest.raises(ConfigError, match="cannot read the API key file .*missing.key"):
        serve(bundle, api_key_file=tmp_path / "missing.key", run=False)
    key_file = tmp_path / "api.key"
    key_file.write_text("  from-a-file \n")
    settings = serve(bundle, api_key_file=key_file, log_path="none", run=False)
    assert settings["api_key_file"] == key_file.resolve() and "from-a-file" not in str(settings)
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("WAYPOST_API_KEY", "from-env")
        with pytest.raises(ConfigError, match="given twice"):
            serve(bundle, api_key_file=key_file, run=False)
    finally:
        mp.undo()
    with ThreadServer(create_app(penguins_bundle[1], api_key_file=key_file)) as server:
        assert httpx.get(server.url + "/info", headers={"X-API-Key": "from-a-file"}).status_code == 200
        assert httpx.get(server.url + "/info", headers={"X-API-Key": "from-a-file-and-more"}).status_code == 401
