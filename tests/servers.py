"""Real servers for tests (the light load client is `waypost.serve.loadgen.raw_flood`): a process on a free loopback port (started, waited for, stopped), uvicorn
in a thread for an app built in the test, and the Prometheus text of /metrics as a dict."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(argv: list[str], *, ready_url: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 90.0, stop_signal: int = signal.SIGTERM) -> Iterator[subprocess.Popen]:
    """Start `argv` in its own process group, wait until `ready_url` answers, stop it afterwards with
    `stop_signal` (SIGKILL: what a crash looks like to the prediction log)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(f"{argv[0]} did not start: {proc.stderr.read().decode()[-3000:]}") from None
                time.sleep(0.5)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, stop_signal)
        except ProcessLookupError:  # it died on its own (a failed start): its stderr is in the error above
            pass
        proc.wait(timeout=30)


class ThreadServer:
    """uvicorn on 127.0.0.1, on a socket bound to a free port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn thread died during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    @property
    def state(self) -> Any:
        return self.app.state.waypost


def metrics_of(client: Any) -> dict[tuple[str, tuple], float]:
    """GET /metrics parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
