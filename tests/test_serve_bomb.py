"""Decompression bombs: a 20 KB PNG (27 KB as base64) declaring 13000 x 13000 pixels.

Before: `waypost serve` decoded it (200, the server's peak memory up by 324 MiB, 1.1 s) and so did
the runtime. Now the server refuses it from its header (422 naming the field and the row), the
runtime (bundles, `waypost predict`) with a DataError naming the row and the file, and the peak
memory of the process that refused it does not move.
"""
from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("PIL")

from servers import free_port, running  # noqa: E402

WAYPOST = str(Path(sys.executable).with_name("waypost"))


def bomb_png(width: int = 13000, height: int = 13000) -> bytes:
    """A valid 1-bit grayscale PNG of zeros, compressed row block by row block (the 169 MB of pixels
    never exist in this process): about 20 KB for 13000 x 13000."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + one row of 1-bit pixels
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row * 1000) for _ in range(height // 1000)) + z.compress(row * (height % 1000))
    data += z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_the_server_refuses_a_bomb_from_its_header(image_bundle, tmp_path):
    bomb = bomb_png()
    assert len(bomb) < 30_000
    png = image_bundle["pngs"][0]
    b64 = base64.b64encode
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [WAYPOST, "serve", str(image_bundle["bundle"]), "--port", str(port), "--log-path", "none"]
    import pyarrow as pa

    def arrow(blobs: list[bytes]) -> bytes:
        sink = pa.BufferOutputStream()
        table = pa.table({"image": pa.array(blobs, pa.binary())})
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def send(client: httpx.Client, bad: bytes) -> list[httpx.Response]:
        text = b64(bad).decode()
        return [client.post("/predict", json={"image": text}),
                client.post("/predict", json=[{"image": b64(png).decode()}, {"image": text}]),
                client.post("/predict/columns", json={"columns": {"image": [b64(png).decode(), text]}}),
                client.post("/predict/columns", content=arrow([png, bad]),
                            headers={"content-type": "application/vnd.apache.arrow.stream"})]

    with running(argv, ready_url=url + "/ready", cwd=tmp_path) as proc, httpx.Client(base_url=url, timeout=30) as client:
        assert [r.status_code for r in send(client, png)] == [200] * 4  # every path warmed up (imports, pools)
        before = _peak_mib(proc.pid)
        one, many, cols, arrow_resp = send(client, bomb)
        after = _peak_mib(proc.pid)
        info = client.get("/info").json()
    for resp, loc in ((one, ["body", "image"]), (many, ["body", 1, "image"]),
                      (cols, ["body", "columns", "image", 1]), (arrow_resp, ["body", "columns", "image", 1])):
        assert resp.status_code == 422, resp.text
        detail = resp.json()["detail"]
        assert [d["loc"] for d in detail] == [loc] and detail[0]["type"] == "image_too_large", detail
        assert "13000x13000 = 169,000,000 pixels, more than max_image_pixels=16,777,216" in detail[0]["msg"]
    assert after - before < 20, (before, after)  # decoding it would take 169 MB at least
    assert info["max_image_pixels"] == 16_777_216


def test_the_limit_is_a_server_option(image_bundle, tmp_path):
    """--max-image-pixels sets it: a 64 x 64 image passes under 4096 pixels and not under 4095."""
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, format="PNG")
    record = {"image": base64.b64encode(buf.getvalue()).decode()}
    for limit, status in (("4096", 200), ("4095", 422)):
        port = free_port()
        argv = [WAYPOST, "serve", str(image_bundle["bundle"]), "--port", str(port), "--log-path", "none",
                "--max-image-pixels", limit]
        with running(argv, ready_url=f"http://127.0.0.1:{port}/ready", cwd=tmp_path):
            resp = httpx.post(f"http://127.0.0.1:{port}/predict", json=record, timeout=30)
        assert resp.status_code == status, (limit, resp.text)


def test_the_runtime_refuses_a_bomb_naming_row_and_file_with_flat_memory(image_bundle, tmp_path):
    """Bundles (and so `waypost predict`) check the header too: DataError naming the row, and the
    file for a path; the process's peak memory stays where it was."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bundle["pngs"][0])
    (folder / "bomb.png").write_bytes(bomb_png())
    script = textwrap.dedent(f"""
        import json, resource, sys
        import waypost.runtime as rt
        from waypost.errors import DataError
        b = rt.load({str(image_bundle['bundle'])!r})
        good = open({str(folder / 'a.png')!r}, 'rb').read()
        bomb = open({str(folder / 'bomb.png')!r}, 'rb').read()
        b.predict([{{"image": good}}])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        errors = []
        for rows in ([{{"image": good}}, {{"image": bomb}}], [{{"image": {str(folder / 'bomb.png')!r}}}]):
            try:
                b.predict(rows)
                errors.append(None)
            except DataError as exc:
                errors.append(str(exc))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({{"errors": errors, "grew_mib": after - before}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    in_memory, on_disk = result["errors"]
    assert in_memory and in_memory.startswith("row 1, column 'image': <20") and "13000x13000" in in_memory, in_memory
    assert on_disk and "row 0" in on_disk and str(folder / "bomb.png") in on_disk, on_disk
    assert "more than the limit of 89,478,485" in on_disk and "WAYPOST_MAX_IMAGE_PIXELS" in on_disk
    assert result["grew_mib"] < 20, result

    # `waypost predict` over the folder stops at the bomb, naming it
    cli = subprocess.run([WAYPOST, "predict", str(image_bundle["bundle"]), str(folder), "-o", str(tmp_path / "p.csv")],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode != 0 and "bomb.png" in cli.stderr and "pixels" in cli.stderr, cli.stderr[-2000:]
