"""Online serving throughput and latency: `waypost serve` vs a naive FastAPI endpoint vs bare onnxruntime.

One real model (default: ISLR Default, the GBM + MLP blend, preset "fast") is fitted, saved and
exported to a bundle. Then, on loopback, with single-row requests and a fixed number of requests per
concurrency level (httpx.AsyncClient, one per virtual user, in `--client-procs` processes):

  (a) `waypost serve` (uvicorn, 1 worker, dynamic batching, prediction log on) in a subprocess;
  (b) a naive FastAPI endpoint (defined below) in a subprocess: loads the PyTorch `Predictor` and runs
      it once per request (DataFrame from the record -> predict_proba);
  (c) bare onnxruntime `session.run` of the bundle's model.onnx on the same batches (the batch sizes
      (a) formed at each level, read from its /metrics), inputs prepared once: the ceiling;
  (a') `waypost serve --log-durability async` at the top level and with Arrow requests: the cost of
      the default `answered` durability (a 200 only once its rows are committed to the log).

It prints a table (rows/s, p50, p99 per level), the ratios (a)/(b) at concurrency 64 (target >= 3),
(a)/(c) rows/s (target >= 0.5) and the p50 of an in-process `bundle.predict` of one row
(target <= 1 ms). Client and server share the machine's cores, and an httpx request costs the
client more CPU than waypost serve spends answering it: on a 2-core box the client caps (a) near
1,000 rows/s. Two extra rows show the same servers under a minimal raw-socket client (the server's
own capacity) and (a) with 64-row requests (HTTP overhead shared by many rows).

    python benchmarks/serve_bench.py [--dataset islr_default|breast_cancer] [--requests 3000]
                                     [--levels 1,16,64] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "true")

TARGETS = {"islr_default": "default", "breast_cancer": "target", "penguins": "species"}


# ---------------------------------------------------------------------------------------------
# (b) the naive server: PyTorch Predictor, one call per request
# ---------------------------------------------------------------------------------------------
def naive_app(model_dir: str):
    import pandas as pd
    from fastapi import FastAPI

    from waypost import Predictor

    predictor = Predictor.load(model_dir)
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(record: dict) -> dict:  # a sync endpoint: FastAPI runs it in its thread pool
        frame = pd.DataFrame([record])
        proba = predictor.predict_proba(frame)
        return {
            "predictions": [proba.columns[int(proba.to_numpy()[0].argmax())]],
            "probabilities": [{str(k): float(v) for k, v in proba.iloc[0].items()}],
        }

    return app


def _run_naive_server(model_dir: str, port: int) -> None:
    import uvicorn

    uvicorn.run(naive_app(model_dir), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], port: int, timeout: float = 120.0) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server on port {port} not ready after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _arrow_body(chunk: list[dict]) -> bytes:
    """One Arrow IPC stream of the records, built as a client would (pyarrow)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(chunk)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


async def _load(url: str, records: list[dict], concurrency: int, n_requests: int,
                rows_per_request: int = 1, barrier: Any = None, columnar: str = "") -> dict[str, Any]:
    """``concurrency`` virtual users, each with its own keep-alive connection, sending single-row
    requests back to back until ``n_requests`` are done.

    One AsyncClient per user: a single AsyncClient shared by 64 tasks spends most of its time in its
    own connection pool (encode/httpx#3215): on this 2-core box it tops out near 100 req/s at
    concurrency 64 against a server that answers a constant, which would measure the client only.
    """
    import httpx

    # bodies encoded once, outside the timed loop, the same for every server
    k = rows_per_request
    chunks = [[records[(i + j) % len(records)] for j in range(k)] for i in range(0, len(records), k)]
    headers = {"content-type": "application/json"}
    path = "/predict" if not columnar else "/predict/columns"
    if columnar == "json":  # one JSON array per column
        bodies = [json.dumps({"columns": {c: [r[c] for r in chunk] for c in chunk[0]}}).encode() for chunk in chunks]
    elif columnar == "arrow":  # an Arrow IPC stream
        bodies = [_arrow_body(chunk) for chunk in chunks]
        headers = {"content-type": "application/vnd.apache.arrow.stream"}
    else:  # one record, or a list of them
        bodies = [json.dumps(chunk[0] if k == 1 else chunk).encode() for chunk in chunks]
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n_requests))
    clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
               for _ in range(concurrency)]
    try:
        async def one_user(client: httpx.AsyncClient) -> None:
            nonlocal errors
            for i in counter:
                body = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                resp = await client.post(path, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors += 1

        # warm-up: open the connections, touch every code path
        await asyncio.gather(*(c.post(path, content=bodies[i % len(bodies)], headers=headers)
                               for i, c in enumerate(clients)))
        if barrier is not None:  # every client process starts the timed part together
            barrier.wait()
        t0 = time.perf_counter()
        await asyncio.gather(*(one_user(c) for c in clients))
        wall = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {"rows": n_requests * k, "wall": wall, "latencies": latencies, "errors": errors}


def _load_child(queue: Any, barrier: Any, *args: Any) -> None:
    queue.put(asyncio.run(_load(*args, barrier=barrier)))


def _run_load(url: str, records: list[dict], concurrency: int, n_requests: int, procs: int = 1,
              rows_per_request: int = 1, columnar: str = "") -> dict[str, float]:
    """Run ``_load`` in ``procs`` client processes (users and requests split between them): one
    Python client process saturates one core at roughly 1,500 requests/s, below what a fast server
    answers, so a single client process would measure itself."""
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        parts = [asyncio.run(_load(url, records, concurrency, n_requests, rows_per_request, columnar=columnar))]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        queue, barrier = ctx.Queue(), ctx.Barrier(procs)
        users = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
        counts = [n_requests // procs + (i < n_requests % procs) for i in range(procs)]
        children = [ctx.Process(target=_load_child, args=(queue, barrier, url, records, u, n, rows_per_request))
                    for u, n in zip(users, counts)]
        for child in children:
            child.start()
        parts = [queue.get(timeout=600) for _ in children]
        for child in children:
            child.join(30)
    latencies = [x for p in parts for x in p["latencies"]]
    return {"rows_s": sum(p["rows"] for p in parts) / max(p["wall"] for p in parts),
            "p50_ms": _pct(latencies, 0.5) * 1e3, "p99_ms": _pct(latencies, 0.99) * 1e3,
            "errors": sum(p["errors"] for p in parts)}


async def _load_raw(port: int, records: list[dict], concurrency: int, n_requests: int) -> dict[str, float]:
    """The same load from a minimal keep-alive HTTP/1.1 client on bare asyncio streams (~20 us of
    client CPU per request instead of httpx's several hundred): shows what the server itself can do
    when the client does not eat the shared cores."""
    from waypost.serve.loadgen import raw_flood

    bodies = [json.dumps(r).encode() for r in records]
    t0 = time.perf_counter()
    results = await raw_flood(port, bodies, n_requests, concurrency)
    wall = time.perf_counter() - t0
    latencies = [seconds for _, _, _, seconds, _ in results]
    errors = sum(1 for status, *_ in results if status != 200)
    return {"rows_s": n_requests / wall, "p50_ms": _pct(latencies, 0.5) * 1e3, "p99_ms": _pct(latencies, 0.99) * 1e3,
            "errors": errors}


def _batch_stats(url: str) -> tuple[float, float]:
    """(batches, rows) so far, from waypost serve's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    vals = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
    return vals.get("waypost_batch_size_rows_count", 0.0), vals.get("waypost_batch_size_rows_sum", 0.0)


def _ceiling(bundle: Any, records: list[dict], batch: int, n_rows: int) -> float:
    """Rows/s of session.run alone on batches of ``batch`` rows, inputs prepared once."""
    import numpy as np

    feeds = []
    for start in range(0, max(len(records), batch), batch):
        chunk = [records[(start + i) % len(records)] for i in range(batch)]
        # the runtime's preprocessing, done before timing
        feeds.append({name: np.ascontiguousarray(v) for name, v in bundle.feeds(chunk).items()})
        if len(feeds) >= 64:
            break
    session = bundle.session
    for feed in feeds[:5]:
        session.run(None, feed)
    n_calls = max(1, n_rows // batch)
    t0 = time.perf_counter()
    for i in range(n_calls):
        session.run(None, feeds[i % len(feeds)])
    return n_calls * batch / (time.perf_counter() - t0)


def _single_row_p50(bundle: Any, records: list[dict], n: int = 2000) -> tuple[float, float]:
    for r in records[:50]:
        bundle.predict([r])
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        bundle.predict([records[i % len(records)]])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, _pct(times, 0.99) * 1e3


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="islr_default", choices=sorted(TARGETS))
    parser.add_argument("--model", default="auto", help="Predictor(model=...): auto (blend), lightgbm, mlp, ...")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrency level")
    parser.add_argument("--levels", default="1,16,64")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-latency-ms", type=float, default=5.0)
    parser.add_argument("--no-log", action="store_true", help="serve without the prediction log")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime threads of (a) (default: waypost serve's own choice)")
    parser.add_argument("--client-procs", type=int, default=max(1, min(4, (os.cpu_count() or 1) - 1)),
                        help="httpx client processes sharing each level's users (default: cpus - 1, 1..4: "
                             "the server keeps a core)")
    parser.add_argument("--list-rows", type=int, default=64,
                        help="extra run of (a) with requests of this many rows at concurrency 16 (1: skip)")
    parser.add_argument("--columns-rows", type=int, default=1024,
                        help="extra run of (a) through POST /predict/columns with this many rows per request, "
                             "compared with (c) on batches of the same size (0: skip)")
    parser.add_argument("--arrow-rows", type=int, default=8192,
                        help="extra run of (a) through POST /predict/columns with Arrow IPC streams of this many rows, "
                             "compared with (c) on batches of the same size (0: skip)")
    parser.add_argument("--no-raw", action="store_true", help="skip the extra runs with the minimal raw client")
    parser.add_argument("--work-dir", default=None, help="keep the model and bundle here (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the results as JSON")
    parser.add_argument("--naive-server", nargs=2, metavar=("MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        _run_naive_server(args.naive_server[0], int(args.naive_server[1]))
        return

    import waypost.runtime as rt
    from waypost import Predictor
    from waypost.deploy.bundle import json_records
    from waypost.scenarios.datasets import load_dataset, split

    levels = [int(x) for x in args.levels.split(",")]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="waypost-serve-bench-"))
    target = TARGETS[args.dataset]
    train, test = split(load_dataset(args.dataset), target)
    model_dir, bundle_dir = work / "model", work / "bundle"
    if not (bundle_dir / "waypost.json").exists():
        t0 = time.perf_counter()
        predictor = Predictor(target=target, preset=args.preset, model=args.model, track=False, verbose=False)
        predictor.fit(train)
        predictor.save(model_dir)
        predictor.export(bundle_dir)
        print(f"fitted ({predictor.selected_}) and exported in {time.perf_counter() - t0:.1f} s -> {work}")
    records = json_records(test.drop(columns=[target]))
    # (c) and the in-process timing run with the threads (a) gets: waypost serve's default is every core
    bundle = rt.load(bundle_dir, intra_op_threads=args.threads or os.cpu_count())
    print(f"bundle: {bundle}, {len(bundle.features)} features; {len(records)} test records; "
          f"{args.requests} single-row requests per level; cpus: {os.cpu_count()}; "
          f"client processes: {args.client_procs}")

    results: dict[str, dict[int, dict[str, float]]] = {"waypost serve": {}, "naive FastAPI+torch": {},
                                                       "bare onnxruntime": {}}
    raw: dict[str, dict[int, dict[str, float]]] = {"waypost serve": {}, "naive FastAPI+torch": {}}
    mean_batch: dict[int, float] = {}
    list_result: dict[str, float] | None = None

    # (a) waypost serve
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    columns_result: dict[str, Any] | None = None
    arrow_result: dict[str, Any] | None = None
    log_path = "none" if args.no_log else str(work / "predictions.sqlite")

    def server_code(port: int, durability: str) -> str:
        return ("from waypost.serve.cli import serve; "
                f"serve({str(bundle_dir)!r}, port={port}, max_batch_size={args.max_batch_size}, "
                f"max_latency_ms={args.max_latency_ms}, log_path={log_path!r}, log_level='warning', "
                f"log_durability={durability!r}, intra_op_threads={args.threads!r})")

    proc = _start(["-c", server_code(port, "answered")], port)
    try:
        for level in levels:
            b0, r0 = _batch_stats(url)
            results["waypost serve"][level] = _run_load(url, records, level, args.requests, args.client_procs)
            b1, r1 = _batch_stats(url)
            mean_batch[level] = (r1 - r0) / max(1.0, b1 - b0)
            results["waypost serve"][level]["mean_batch"] = mean_batch[level]
        if args.list_rows > 1:  # not single-row: the same server when HTTP overhead is shared by many rows
            b0, r0 = _batch_stats(url)
            listed = _run_load(url, records, 16, max(1, args.requests // 4), args.client_procs,
                               rows_per_request=args.list_rows)
            b1, r1 = _batch_stats(url)
            listed["mean_batch"] = (r1 - r0) / max(1.0, b1 - b0)
            list_result = listed
        if args.columns_rows > 0:  # bulk clients: the HTTP and JSON cost shared by many rows
            columns_result = _run_load(url, records, 4, max(8, args.requests // 30), 1,
                                       rows_per_request=args.columns_rows, columnar="json")
        if args.arrow_rows > 0:  # the same, in Arrow IPC: no per-value parsing or encoding
            arrow_result = _run_load(url, records, 4, max(8, args.requests // 15), 1,
                                     rows_per_request=args.arrow_rows, columnar="arrow")
        if not args.no_raw:
            b0, r0 = _batch_stats(url)
            raw["waypost serve"][max(levels)] = asyncio.run(_load_raw(port, records, max(levels), args.requests))
            b1, r1 = _batch_stats(url)
            raw["waypost serve"][max(levels)]["mean_batch"] = (r1 - r0) / max(1.0, b1 - b0)
    finally:
        _stop(proc)

    # (a') the same server with --log-durability async: what waiting for the log's commit costs
    durability: dict[str, dict[str, float]] = {}
    if not args.no_log:
        top = max(levels)
        port = _free_port()
        proc = _start(["-c", server_code(port, "async")], port)
        try:
            url = f"http://127.0.0.1:{port}"
            durability["single"] = _run_load(url, records, top, args.requests, args.client_procs)
            if args.arrow_rows > 0:
                durability["arrow"] = _run_load(url, records, 4, max(8, args.requests // 15), 1,
                                                rows_per_request=args.arrow_rows, columnar="arrow")
        finally:
            _stop(proc)

    # (b) naive FastAPI + PyTorch Predictor
    port = _free_port()
    proc = _start([__file__, "--naive-server", str(model_dir), str(port)], port)
    try:
        for level in levels:
            results["naive FastAPI+torch"][level] = _run_load(
                f"http://127.0.0.1:{port}", records, level, args.requests, args.client_procs)
        if not args.no_raw:
            raw["naive FastAPI+torch"][max(levels)] = asyncio.run(_load_raw(port, records, max(levels), args.requests))
    finally:
        _stop(proc)

    # (c) bare onnxruntime on the batch sizes (a) formed
    for level in levels:
        batch = max(1, round(mean_batch[level]))
        results["bare onnxruntime"][level] = {"rows_s": _ceiling(bundle, records, batch, 20_000),
                                              "batch": batch}
    p50_one, p99_one = _single_row_p50(bundle, records)
    if columns_result is not None:
        columns_result["ceiling"] = _ceiling(bundle, records, args.columns_rows, 200_000)
    if arrow_result is not None:
        arrow_result["ceiling"] = _ceiling(bundle, records, args.arrow_rows, 400_000)

    # report
    print()
    print(f"{'system':<34}{'conc':>6}{'rows/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'batch':>8}{'errors':>8}")
    for system, per_level in results.items():
        for level, r in per_level.items():
            batch = r.get("mean_batch", r.get("batch", 1.0))
            p50 = f"{r['p50_ms']:.2f}" if "p50_ms" in r else "-"
            p99 = f"{r['p99_ms']:.2f}" if "p99_ms" in r else "-"
            print(f"{system:<34}{level:>6}{r['rows_s']:>11.0f}{p50:>9}{p99:>9}{batch:>8.1f}"
                  f"{r.get('errors', 0):>8}")
    for system, per_level in raw.items():
        for level, r in per_level.items():
            print(f"{system + ' (raw client)':<34}{level:>6}{r['rows_s']:>11.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r.get('mean_batch', 1.0):>8.1f}{r['errors']:>8}")
    if list_result is not None:
        r = list_result
        print(f"{f'waypost serve ({args.list_rows}-row requests)':<34}{16:>6}{r['rows_s']:>11.0f}{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['mean_batch']:>8.1f}{r['errors']:>8}")
    top = max(levels)
    a, b, c = (results[k][top]["rows_s"] for k in results)
    print()
    print(f"(a)/(b) rows/s at concurrency {top}: {a / b:.2f}x   (target >= 3)")
    print(f"(a)/(c) rows/s at concurrency {top}: {a / c:.3f}x  (target >= 0.5; c = session.run on "
          f"batches of {results['bare onnxruntime'][top]['batch']})")
    if raw["waypost serve"] and raw["naive FastAPI+torch"]:
        ra, rb = raw["waypost serve"][top]["rows_s"], raw["naive FastAPI+torch"][top]["rows_s"]
        print(f"with the raw client: (a)/(b) {ra / rb:.2f}x, (a)/(c) {ra / c:.3f}x")
    if columns_result is not None:
        r = columns_result
        print(f"columnar: POST /predict/columns, {args.columns_rows} rows per request, concurrency 4: "
              f"{r['rows_s']:,.0f} rows/s (p50 {r['p50_ms']:.1f} ms); (c) on {args.columns_rows}-row batches: "
              f"{r['ceiling']:,.0f} rows/s; (a)/(c) = {r['rows_s'] / r['ceiling']:.2f}x (target >= 0.5)")
    if arrow_result is not None:
        r = arrow_result
        print(f"arrow: POST /predict/columns, Arrow IPC, {args.arrow_rows} rows per request, concurrency 4: "
              f"{r['rows_s']:,.0f} rows/s (p50 {r['p50_ms']:.1f} ms); (c) on {args.arrow_rows}-row batches: "
              f"{r['ceiling']:,.0f} rows/s; (a)/(c) = {r['rows_s'] / r['ceiling']:.2f}x (target >= 0.5)")
    if durability:
        d = durability["single"]
        answered = results["waypost serve"][top]
        print(f"log durability, single rows at concurrency {top}: answered {answered['rows_s']:,.0f} rows/s "
              f"(p99 {answered['p99_ms']:.1f} ms), async {d['rows_s']:,.0f} rows/s (p99 {d['p99_ms']:.1f} ms); "
              f"answered/async = {answered['rows_s'] / d['rows_s']:.2f}x")
        if "arrow" in durability and arrow_result is not None:
            d = durability["arrow"]
            print(f"log durability, Arrow {args.arrow_rows}-row requests: answered {arrow_result['rows_s']:,.0f} rows/s, "
                  f"async {d['rows_s']:,.0f} rows/s; answered/async = {arrow_result['rows_s'] / d['rows_s']:.2f}x")
    print(f"in-process bundle.predict, one row: p50 {p50_one:.3f} ms, p99 {p99_one:.3f} ms   (target p50 <= 1 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "raw_client": raw, "list_requests": list_result,
                                               "json_columns": columns_result, "arrow": arrow_result, "log_async": durability, "a_over_b": a / b, "a_over_c": a / c,
                                               "bundle_predict_p50_ms": p50_one, "cpus": os.cpu_count()},
                                              indent=2, default=str))


if __name__ == "__main__":
    main()
