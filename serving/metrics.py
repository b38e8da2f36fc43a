"""Prometheus metrics of the cascade service (exposed at ``GET /metrics``).

Each service instance owns its ``CollectorRegistry`` so several services (tests) can coexist.

- ``lcron_requests_total{endpoint, code}``: HTTP requests by endpoint and status code.
- ``lcron_errors_total{stage, kind}``: errors; stage is a cascade stage's name (retrieval,
  ranking, ...) or request|reload, kind in validation|backend|unavailable|reload.
- ``lcron_latency_seconds{stage}``: histogram per cascade stage and end_to_end.
- ``lcron_queue_seconds``: time a request waited for a batch slot (in-process backend).
- ``lcron_batch_size``: requests per batch that requests ran in (in-process backend).
- ``lcron_pair_version``: the cascade's version in service (all stages share it);
  ``lcron_reloads_total{outcome}``.
"""

from __future__ import annotations

import prometheus_client as prom

# Sub-millisecond to seconds: in-process calls take ~1 ms, remote ones tens of ms.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The service's counters and histograms, in their own registry."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "lcron_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.errors = prom.Counter(
            "lcron_errors",
            "Errors by stage and kind.",
            ["stage", "kind"],
            registry=self.registry,
        )
        self.latency = prom.Histogram(
            "lcron_latency_seconds",
            "Latency per cascade stage and end to end.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = prom.Histogram(
            "lcron_queue_seconds",
            "Time a request waited for a batch slot before its stages ran.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = prom.Histogram(
            "lcron_batch_size",
            "Requests per batch, observed once per request.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.pair_version = prom.Gauge(
            "lcron_pair_version", "Paired version in service.", registry=self.registry
        )
        self.reloads = prom.Counter(
            "lcron_reloads", "Pair reloads by outcome.", ["outcome"], registry=self.registry
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
