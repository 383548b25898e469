"""Starting a real server process for a test: a free loopback port, wait until it answers, stop it."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(argv: list[str], *, ready_url: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 90.0) -> Iterator[subprocess.Popen]:
    """Start `argv` in its own process group, wait until `ready_url` answers, stop it afterwards."""
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
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
