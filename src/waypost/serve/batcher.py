"""Dynamic batching: many small requests, one model call.

Requests put ``(columns, n_rows, future)`` on a bounded asyncio queue. One worker task takes the
first item, then keeps collecting until ``max_batch_size`` rows or ``max_latency_ms`` have passed,
concatenates the columns, runs ``infer(columns)`` on a single-thread executor (the event loop stays
free to parse the next requests) and hands each request its slice of the result.

Two refinements over the textbook loop:

- The collector stops waiting early when no request is on its way: ``expect()`` counts requests
  that entered the server but are not queued yet (body being read or validated). At concurrency 1
  nobody else can join, so waiting ``max_latency_ms`` would only add latency.
- Collection overlaps inference: while batch k runs in the executor, batch k+1 is being collected,
  and it is topped up with whatever queued meanwhile just before it is sent.

A full queue raises ``Overloaded`` at once (the server answers 503 + Retry-After) instead of growing.
A full queue alone does not bound latency: with a slow model or a large queue a request can wait
seconds behind the backlog. ``timeout_ms`` does: a request whose batch has not started running
``timeout_ms`` after it arrived (``arrived``, a ``loop.time()``; the server passes the moment its
middleware saw the request) fails with ``DeadlineExceeded`` (503 + Retry-After), from a timer, not
a poll. Once its batch is in the model it is answered: onnxruntime cannot be interrupted, and the
result is about to exist. So a request's latency is at most ``timeout_ms`` plus one model call.
A request with more rows than ``max_batch_size`` runs as a batch of its own. When a merged batch
fails with a DataError, each request is rerun alone so only the one at fault gets the error.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from waypost.serve.defaults import MAX_BATCH_SIZE, MAX_LATENCY_MS, QUEUE_SIZE
from waypost.errors import DataError


#: ``loop.time()`` when the current request reached the server (set by its middleware, read by
#: ``answer.infer``): a context variable, because the request's task carries it from the middleware
#: through FastAPI's route to the batcher without every signature in between passing it on.
REQUEST_ARRIVAL: contextvars.ContextVar[float | None] = contextvars.ContextVar("waypost_request_arrival", default=None)


class Overloaded(Exception):
    """The batcher's queue is full (or the batcher is stopped): try again later."""

    def __init__(self, message: str = "server overloaded: prediction queue is full", retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(Overloaded):
    """The request waited ``timeout_ms`` without reaching the model: try again later."""

    def __init__(self, timeout_ms: float):
        super().__init__(f"server overloaded: the request waited more than timeout_ms={timeout_ms:g} "
                         "without reaching the model", retry_after=1)


@dataclass
class BatchResult:
    prediction: np.ndarray
    proba: np.ndarray | None
    latency_ms: float  # queue wait + model time of the batch this request rode in
    # this request's rows the model took other than as sent: {"unseen" | "clipped": {column: count}}
    issues: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class _Item:
    columns: dict[str, list[Any]]
    n: int
    future: asyncio.Future
    t0: float = field(default_factory=time.perf_counter)
    timer: asyncio.TimerHandle | None = None  # the deadline's; cancelled when the batch starts


class Batcher:
    def __init__(
        self,
        infer: Callable[[dict[str, list[Any]]], dict[str, Any]],
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        max_latency_ms: float = MAX_LATENCY_MS,
        queue_size: int = QUEUE_SIZE,
        timeout_ms: float | None = None,
        metrics: Any = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be >= 0, got {max_latency_ms}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if timeout_ms is not None and timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0 (0: no deadline), got {timeout_ms}")
        if timeout_ms and max_latency_ms >= timeout_ms:  # a batch still filling would outlive its requests
            raise ValueError(f"timeout_ms ({timeout_ms:g}) must be larger than max_latency_ms ({max_latency_ms:g})")
        self.infer = infer
        self.max_batch_size = int(max_batch_size)
        self.max_latency = float(max_latency_ms) / 1000.0
        self.queue_size = int(queue_size)
        self.timeout_ms = float(timeout_ms) if timeout_ms else None  # None or 0: no deadline
        self.metrics = metrics
        self._queue: asyncio.Queue[_Item] | None = None
        self._carry: _Item | None = None
        self._arriving = 0
        self._waiter: asyncio.Future | None = None  # the collector waiting for a submit/arrival change
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waypost-infer")
        self._task = asyncio.create_task(self._run(), name="waypost-batcher")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued (up to ``timeout`` seconds), then stop."""
        if self._task is None:
            return
        deadline = time.monotonic() + timeout
        while (self._queue.qsize() or self._carry or self._inflight) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for item in self._drain_all():
            if not item.future.done():
                item.future.set_exception(Overloaded("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- request side ------------------------------------------------------------------------
    def expect(self) -> Arrival:
        """Announce a request on its way (its body being read/validated); call ``done()`` on the
        returned token before ``submit`` or when the request fails. Keeps a batch open for it."""
        return Arrival(self)

    @contextlib.contextmanager
    def arriving(self):
        """``expect()`` as a context manager around the part of a request before ``submit``."""
        token = Arrival(self)
        try:
            yield token
        finally:
            token.done()

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def submit(self, columns: dict[str, list[Any]], n: int, arrived: float | None = None) -> BatchResult:
        """The request's slice of its batch's result. ``arrived`` (``loop.time()`` when the request
        reached the server; default now) starts the ``timeout_ms`` deadline."""
        if not self.running:
            raise Overloaded("the batcher is not running", retry_after=1)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        item = _Item(columns, n, fut)
        if self.timeout_ms is not None:
            deadline = (loop.time() if arrived is None else arrived) + self.timeout_ms / 1000.0
            if deadline <= loop.time():  # spent reading and validating the body: no model time for it
                self._expired()
                raise DeadlineExceeded(self.timeout_ms)
            item.timer = loop.call_at(deadline, self._expire, item)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if item.timer is not None:
                item.timer.cancel()
            raise Overloaded(retry_after=max(1, round(self.max_latency * 2 + 0.5))) from None
        self._gauge()
        self._notify()
        return await fut

    def _expire(self, item: _Item) -> None:
        """The deadline's timer: the item is still queued or waiting for the executor (a started
        batch cancels its timers). The collector skips done futures, so it never runs."""
        if not item.future.done():
            item.future.set_exception(DeadlineExceeded(self.timeout_ms or 0.0))
            self._expired()

    def _expired(self) -> None:
        if self.metrics is not None and hasattr(self.metrics, "deadline_expired"):
            self.metrics.deadline_expired.inc()

    def depth(self) -> int:
        return (self._queue.qsize() if self._queue is not None else 0) + (1 if self._carry else 0)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth())

    # -- worker side -------------------------------------------------------------------------
    def _take_nowait(self) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def _drain_all(self) -> list[_Item]:
        items = []
        while (item := self._take_nowait()) is not None:
            items.append(item)
        return items

    def _fill(self, batch: list[_Item], rows: int) -> tuple[int, bool]:
        """Move queued items into ``batch`` while they fit; returns (rows, full)."""
        while rows < self.max_batch_size:
            item = self._take_nowait()
            if item is None:
                return rows, False
            if item.future.done():  # the client went away
                continue
            if rows + item.n > self.max_batch_size:
                self._carry = item
                return rows, True
            batch.append(item)
            rows += item.n
        return rows, True

    async def _collect(self) -> list[_Item]:
        item = self._take_nowait()
        while item is None or item.future.done():
            item = await self._queue.get()
        batch, rows = [item], item.n
        if rows >= self.max_batch_size:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_latency
        while True:
            rows, full = self._fill(batch, rows)
            remaining = deadline - loop.time()
            if full or remaining <= 0 or self._arriving == 0:
                return batch
            # sleep until a submit, an arrival giving up, or the deadline (no task per wait)
            waiter = self._waiter = loop.create_future()
            timer = loop.call_at(deadline, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    async def _run(self) -> None:
        previous: asyncio.Task | None = None
        while True:
            batch = await self._collect()
            if previous is not None and not previous.done():
                await asyncio.wait([previous])  # one batch in the executor at a time ...
                rows = sum(i.n for i in batch)
                if rows < self.max_batch_size:
                    self._fill(batch, rows)  # ... and this one takes what queued meanwhile
            self._gauge()
            previous = asyncio.create_task(self._execute(batch))
            self._inflight.add(previous)
            previous.add_done_callback(self._inflight.discard)

    async def _execute(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        batch = [i for i in batch if not i.future.done()]
        if not batch:
            return
        for item in batch:  # in the model now: answered whatever the clock says
            if item.timer is not None:
                item.timer.cancel()
        n = sum(i.n for i in batch)
        if self.metrics is not None:
            self.metrics.batch_size.observe(n)
            self.metrics.batch_requests.observe(len(batch))
        try:
            out = await loop.run_in_executor(self._executor, self.infer, _concat(batch))
        except DataError as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
            else:  # find the request at fault: rerun each alone
                for item in batch:
                    await self._execute_one(item)
            return
        except Exception as exc:  # noqa: BLE001 - goes back to the request as a 500
            for item in batch:
                _fail(item, exc)
            return
        self._deliver(batch, out)

    async def _execute_one(self, item: _Item) -> None:
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self._executor, self.infer, item.columns)
        except Exception as exc:  # noqa: BLE001
            _fail(item, exc)
            return
        self._deliver([item], out)

    def _deliver(self, batch: list[_Item], out: dict[str, Any]) -> None:
        pred = np.asarray(out["prediction"])
        proba = out.get("proba")
        issues = out.get("issues") or {}
        n = sum(i.n for i in batch)
        if len(pred) != n or (proba is not None and len(proba) != n):  # the contract, checked (Ray Serve's rule)
            error = RuntimeError(f"the model answered {len(pred)} rows for a batch of {n}")
            for item in batch:
                _fail(item, error)
            return
        now = time.perf_counter()
        start = 0
        if self.metrics is not None:
            self.metrics.rows.inc(n)
        for item in batch:
            stop = start + item.n
            if not item.future.done():
                item.future.set_result(
                    BatchResult(
                        prediction=pred[start:stop],
                        proba=None if proba is None else proba[start:stop],
                        latency_ms=(now - item.t0) * 1000.0,
                        issues=_slice_issues(issues, start, stop),
                    )
                )
            start = stop


def _slice_issues(issues: dict[str, dict[str, np.ndarray]], start: int, stop: int) -> dict[str, dict[str, int]]:
    """Per-request counts from the batch's per-row masks (only non-zero ones)."""
    out: dict[str, dict[str, int]] = {}
    for issue, columns in issues.items():
        counts = {c: int(np.count_nonzero(mask[start:stop])) for c, mask in columns.items()}
        counts = {c: k for c, k in counts.items() if k}
        if counts:
            out[issue] = counts
    return out


class Arrival:
    """A request between arriving and ``submit`` (see ``Batcher.expect``); ``done()`` is idempotent."""

    __slots__ = ("batcher", "open")

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self.open = True
        batcher._arriving += 1

    def done(self) -> None:
        if self.open:
            self.open = False
            self.batcher._arriving -= 1
            self.batcher._notify()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _fail(item: _Item, exc: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(exc)


def _concat(batch: list[_Item]) -> dict[str, list[Any]]:
    if len(batch) == 1:
        return batch[0].columns
    cols = batch[0].columns.keys()
    return {c: list(itertools.chain.from_iterable(i.columns[c] for i in batch)) for c in cols}
