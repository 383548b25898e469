"""A minimal load generator for measuring `waypost serve`: keep-alive HTTP/1.1 POSTs on bare asyncio
streams. The flood tests and `benchmarks/serve_bench.py` both use it, so the latencies they quote
are measured one way."""
from __future__ import annotations

import asyncio
import time


async def raw_flood(port: int, bodies: list[bytes], n: int, concurrency: int, path: str = "/predict",
                    timeout: float = 60.0) -> list[tuple[int, dict[str, str], bytes, float, int]]:
    """`n` POSTs of JSON `bodies` (round robin) over `concurrency` keep-alive HTTP/1.1 connections
    on bare asyncio streams: [(status, headers, body, seconds, body index)] in completion order.

    Why not httpx for a flood: at concurrency 200 an httpx AsyncClient spends ~5 ms of CPU per
    request (measured: 10 s of CPU for 2,000 GETs of /health), so on 2 shared cores its own backlog
    is most of the latency it reports (p99 5.5 s for /health, which does no work). This client
    costs ~20 us a request, so the latencies it measures are the server's."""
    results: list[tuple[int, dict[str, str], bytes, float, int]] = []
    counter = iter(range(n))

    async def user() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                writer.write(b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                payload = await reader.readexactly(int(headers["content-length"]))
                results.append((int(lines[0].split()[1]), headers, payload, time.perf_counter() - t0, i % len(bodies)))
                if headers.get("connection", "").lower() == "close":
                    break
        finally:
            writer.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return results
