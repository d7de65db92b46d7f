"""The gateway's Prometheus metrics: one registry per application, never the global one.

Tests start many gateways in one process, so every metric lives in the registry of the
`Metrics` object that its app created. Counters count what this process did (sum them
across replicas); the backlog gauges are read from the shared database at each scrape,
so they are the same in every replica (take the max, not the sum).

Labels stay few and bounded: a route's pattern (never the raw path), a tenant id, an LND
node's URL, a call name. Never a file id, a payment hash, an account or a key.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from rest.observe import CallObserver

__all__ = ["Metrics"]

# Seconds: an HTTP handler or a dependency call, from a cache hit to a slow payment.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric of one gateway application, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # CPU, memory, open files of this process
        PlatformCollector(registry=r)
        self.requests = Counter(
            "bitcache_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "bitcache_http_request_duration_seconds",
            "Time in the handler, by route pattern and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "bitcache_http_requests_in_flight",
            "Requests being handled now (what a SIGTERM waits for)",
            registry=r,
        )
        self.invoices_created = Counter(
            "bitcache_invoices_created",
            "Invoices issued: chunk ranges (a 402 challenge) and plan purchases",
            ["tenant", "kind"],
            registry=r,
        )
        self.invoices_settled = Counter(
            "bitcache_invoices_settled",
            "Invoices booked as paid by this process (from the stream or a preimage)",
            ["tenant", "kind"],
            registry=r,
        )
        self.earned_msat = Counter(
            "bitcache_earned_msat",
            "Millisatoshis of the invoices this process booked as paid",
            ["tenant", "kind"],
            registry=r,
        )
        self.bytes_stored = Counter(
            "bitcache_bytes_stored",
            "Ciphertext bytes of new chunks stored",
            ["tenant"],
            registry=r,
        )
        self.batch_files = Counter(
            "bitcache_batch_files",
            "Files of POST /v1/files/batch: stored by it, or already there (not stored again)",
            ["tenant", "outcome"],
            registry=r,
        )
        self.bytes_served = Counter(
            "bitcache_bytes_served",
            "Ciphertext bytes of chunks served",
            ["tenant"],
            registry=r,
        )
        self.lnd_seconds = Histogram(
            "bitcache_lnd_call_duration_seconds",
            "LND REST calls, by node and call (a stream counts until it ends)",
            ["node", "call"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lnd_errors = Counter(
            "bitcache_lnd_call_errors",
            "LND REST calls that failed (unreachable or refused)",
            ["node", "call"],
            registry=r,
        )
        self.ipfs_seconds = Histogram(
            "bitcache_ipfs_call_duration_seconds",
            "IPFS RPC calls, by command (a cat counts until its last byte)",
            ["call"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ipfs_errors = Counter(
            "bitcache_ipfs_call_errors",
            "IPFS RPC calls that failed (unreachable or refused)",
            ["call"],
            registry=r,
        )
        self.stream_following = Gauge(
            "bitcache_invoice_stream_following",
            "1 while this process follows the node's invoice stream (holds its lease)",
            ["node"],
            registry=r,
        )
        self.unpin_backlog = Gauge(
            "bitcache_unpin_backlog",
            "CIDs no chunk uses any more, waiting to be unpinned (database-wide)",
            registry=r,
        )
        self.withdrawals_pending = Gauge(
            "bitcache_withdrawals_pending",
            "Withdrawals whose payment is out, waiting to be reconciled (database-wide)",
            ["tenant"],
            registry=r,
        )
        self.invoices_open = Gauge(
            "bitcache_invoices_open",
            "Invoices not yet paid or expired, which a stream takeover reconciles",
            ["tenant"],
            registry=r,
        )

    # --- what happened ------------------------------------------------------------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def invoice_created(self, tenant: str, kind: str) -> None:
        self.invoices_created.labels(tenant, kind).inc()

    def invoice_settled(self, tenant: str, kind: str, amount_msat: int) -> None:
        self.invoices_settled.labels(tenant, kind).inc()
        self.earned_msat.labels(tenant, kind).inc(amount_msat)

    def stored(self, tenant: str, size: int) -> None:
        self.bytes_stored.labels(tenant).inc(size)

    def batch(self, tenant: str, stored: int, existing: int, size: int) -> None:
        self.batch_files.labels(tenant, "stored").inc(stored)
        self.batch_files.labels(tenant, "exists").inc(existing)
        self.bytes_stored.labels(tenant).inc(size)

    def served(self, tenant: str, size: int) -> None:
        self.bytes_served.labels(tenant).inc(size)

    def following(self, node: str, held: bool) -> None:
        self.stream_following.labels(node).set(1 if held else 0)

    def backlog(
        self, unpin: int, withdrawals: Mapping[str, int], invoices: Mapping[str, int]
    ) -> None:
        """The queue depths just read from the database (tenants without any drop out)."""
        self.unpin_backlog.set(unpin)
        pairs = ((self.withdrawals_pending, withdrawals), (self.invoices_open, invoices))
        for gauge, counts in pairs:
            gauge.clear()
            for tenant, count in counts.items():
                gauge.labels(tenant).set(count)

    # --- hooks for the dependency clients -----------------------------------------------

    def lnd_observer(self, node: str) -> CallObserver:
        """The ``observe`` callback for one LND node's client."""

        def observe(call: str, seconds: float, ok: bool) -> None:
            self.lnd_seconds.labels(node, call).observe(seconds)
            if not ok:
                self.lnd_errors.labels(node, call).inc()

        return observe

    def ipfs_observer(self) -> CallObserver:
        """The ``observe`` callback for the IPFS client."""

        def observe(call: str, seconds: float, ok: bool) -> None:
            self.ipfs_seconds.labels(call).observe(seconds)
            if not ok:
                self.ipfs_errors.labels(call).inc()

        return observe
