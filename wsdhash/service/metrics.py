"""The service's Prometheus metrics (prometheus_client), in a registry of their own:
requests and latency by route template and method, model and index time, queries,
refusals by limit, the index size, the search queue and dropped searches."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Methods counted by name; any other is "other", so that the labels stay few.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "wsdhash_http_requests",
            "HTTP requests answered.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "wsdhash_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_seconds = Histogram(
            "wsdhash_model_seconds",
            "Time of one SavedModel call (one request's images).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.index_seconds = Histogram(
            "wsdhash_index_seconds",
            "Time of one index search (one request's queries).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queries = Counter(
            "wsdhash_search_queries", "Query images searched.", registry=registry
        )
        self.rejected = Counter(
            "wsdhash_rejected_requests",
            "Requests refused, by limit or bad input.",
            ["reason"],
            registry=registry,
        )
        self.items = Gauge("wsdhash_index_items", "Items in the index.", registry=registry)
        self.queued = Gauge(
            "wsdhash_search_queue", "Searches waiting for a worker.", registry=registry
        )
        self.dropped = Counter(
            "wsdhash_dropped_searches",
            "Searches given up before their end: expired or cancelled in the queue, or "
            "stopped between stages (their request had timed out).",
            ["reason"],
            registry=registry,
        )

    def count_drop(self, reason: str) -> None:
        """A search the worker pool gave up (its `on_drop`)."""
        self.dropped.labels(reason).inc()

    def count_refusal(self, error) -> None:
        """A refused request (a `ServiceError`), by the limit it names or as "input"."""
        self.rejected.labels(error.fields.get("limit") or "input").inc()

    def count_answer(self, route_path: str | None, method: str, status, seconds: float) -> None:
        """One answered request, by route template ("unmatched" without one)."""
        handler = route_path or "unmatched"
        method = method if method in KNOWN_METHODS else "other"
        self.latency.labels(handler).observe(seconds)
        self.requests.labels(handler, method, str(status or 500)).inc()
