"""Prometheus metrics of one serving app, in a registry of its own (two apps in one process never mix).

With ``waypost serve --workers N`` each worker process has its own registry, so one scrape of
``/metrics`` shows the worker that answered. When ``PROMETHEUS_MULTIPROC_DIR`` is set (``waypost
serve`` sets it for N > 1) values go through prometheus-client's multiprocess files and ``/metrics``
adds up every worker.
"""
from __future__ import annotations

import os

from waypost.serve.defaults import MAX_BATCH_SIZE
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ERROR_KINDS = ("validation", "too_large", "unauthorized", "overloaded", "internal")
STATUS_KIND = {422: "validation", 400: "validation", 413: "too_large", 401: "unauthorized", 503: "overloaded"}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _size_buckets(max_batch_size: int) -> tuple[float, ...]:
    out, b = [], 1
    while b < max_batch_size:
        out.append(float(b))
        b *= 2
    out.append(float(max_batch_size))
    return tuple(sorted(set(out)))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class ServeMetrics:
    """Counters, gauges and histograms of one app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int = MAX_BATCH_SIZE, model_version: str = ""):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "waypost_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.errors = Counter("waypost_errors", "Failed requests by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "waypost_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "waypost_batch_size_rows", "Rows per model call of the dynamic batcher",
            buckets=_size_buckets(max_batch_size), registry=r,
        )
        self.batch_requests = Histogram(
            "waypost_batch_requests", "Requests merged into one model call",
            buckets=_size_buckets(max_batch_size), registry=r,
        )
        self.queue_depth = Gauge(
            "waypost_queue_depth", "Requests waiting for the batcher", registry=r, multiprocess_mode="livesum"
        )
        self.rows = Counter("waypost_rows_predicted", "Rows predicted", registry=r)
        self.deadline_expired = Counter(
            "waypost_deadline_expired", "Requests answered 503 because they waited timeout_ms without reaching "
            "the model (also counted in waypost_errors_total{kind=\"overloaded\"})", registry=r,
        )
        self.log_dropped = Counter(
            "waypost_predlog_dropped", "Prediction-log rows dropped because the writer fell behind", registry=r
        )
        self.input_issues = Counter(
            "waypost_input_values", "Input values the model took other than as sent, by issue (unseen: a "
            "category outside the training vocabulary; clipped: a number outside the training range) and column",
            ["issue", "column"], registry=r,
        )
        self.info = Gauge(
            "waypost_model_info", "The model being served (value 1)", ["model_version"], registry=r,
            multiprocess_mode="liveall",
        )
        self.info.labels(model_version=model_version).set(1)
        self._children: dict[tuple[str, int], tuple] = {}
        for kind in ERROR_KINDS:  # every kind shows up at 0 before the first error
            self.errors.labels(kind=kind)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict lookup per call: cache the children
            kind = STATUS_KIND.get(status, "internal" if status >= 500 else None)
            if endpoint == "/ready" and status == 503:
                kind = None  # "not ready yet" (start-up, shutdown) is the probe's answer, not an error
            children = self._children[key] = (
                self.requests.labels(endpoint=endpoint, status=str(status)),
                self.latency.labels(endpoint=endpoint),
                self.errors.labels(kind=kind) if kind is not None else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def count_issues(self, issues: dict[str, dict[str, int]]) -> None:
        for issue, columns in issues.items():
            for column, count in columns.items():
                self.input_issues.labels(issue=issue, column=column).inc(count)

    def render(self) -> bytes:
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
