"""The controller's Prometheus metrics and the /metrics HTTP endpoint.

Owns one registry per process (so tests can run several controllers in one
interpreter) and the small HTTP server that exposes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconcile_seconds = Histogram(
            "gantry_controller_reconcile_seconds",
            "Time to reconcile one deployment (read, plan, write).",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.reconcile_errors = Counter(
            "gantry_controller_reconcile_errors_total", "Reconciles that failed.", registry=r
        )
        self.queue_depth = Gauge(
            "gantry_controller_queue_depth", "Keys waiting in the work queue.", registry=r
        )
        self.schedule_attempts = Counter(
            "gantry_controller_scheduling_attempts_total", "Replicas the scheduler tried to place.",
            registry=r,
        )  # fmt: skip
        self.schedule_failures = Counter(
            "gantry_controller_scheduling_failures_total", "Replicas that fit on no node.",
            registry=r,
        )  # fmt: skip
        self.is_leader = Gauge(
            "gantry_controller_is_leader", "1 while this controller leads.", registry=r
        )
        self.nodes_ready = Gauge(
            "gantry_controller_nodes_ready", "Nodes whose liveness lease is alive.", registry=r
        )
        self.replicas = Gauge("gantry_controller_replicas", "Replica records in etcd.", registry=r)

    def serve(self, address: str) -> Any:
        """Start the /metrics HTTP server on host:port; returns the server (call .shutdown())."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host or "127.0.0.1", registry=self.registry
        )
        return server
