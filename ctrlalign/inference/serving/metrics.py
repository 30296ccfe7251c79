"""The Prometheus series ``/metrics`` exposes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The Prometheus series ``/metrics`` exposes, in a registry of their own (so several
    services can live in one process, as in tests and benchmarks)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ctrlalign_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "ctrlalign_prompt_tokens", "prompt tokens of answered requests", registry=r
        )
        self.generation_tokens = Counter(
            "ctrlalign_generation_tokens", "tokens generated for answered requests", registry=r
        )
        self.batch_rows = Histogram(
            "ctrlalign_batch_rows",
            "answers (choices) advanced by one decode step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_length = Gauge(
            "ctrlalign_queue_length", "requests waiting to join the batch", registry=r
        )
        self.running = Gauge("ctrlalign_running_rows", "answers being decoded", registry=r)
        latency_buckets = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
        self.latency = Histogram(
            "ctrlalign_request_latency_seconds",
            "request arrival to its last token",
            buckets=latency_buckets,
            registry=r,
        )
        self.ttft = Histogram(
            "ctrlalign_time_to_first_token_seconds",
            "request arrival to its first generated token",
            buckets=latency_buckets,
            registry=r,
        )

    def on_step(self, rows: int, waiting: int) -> None:
        self.batch_rows.observe(rows)
