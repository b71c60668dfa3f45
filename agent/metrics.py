"""The agent's Prometheus metrics, in a registry of its own (one per Agent).

Containers by lifecycle phase (a gauge refreshed from the agent's table),
restarts, probe failures by probe, start latency (create + start), the time
from assignment to running, heartbeat and report failures.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent.lifecycle import Phase

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.containers = Gauge(
            "gantry_agent_containers",
            "Replicas on this node by lifecycle phase",
            ["phase"],
            registry=r,
        )
        self.restarts = Counter(
            "gantry_agent_container_restarts", "Container restarts after an exit", registry=r
        )
        self.probe_failures = Counter(
            "gantry_agent_probe_failures",
            "Failed probe checks",
            ["probe", "kind"],
            registry=r,
        )
        self.probe_checks = Counter(
            "gantry_agent_probe_checks",
            "Probe checks performed",
            ["probe", "kind"],
            registry=r,
        )
        self.start_latency = Histogram(
            "gantry_agent_container_start_seconds",
            "Time to create and start a container (bundle, network, runtime)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.assign_to_running = Histogram(
            "gantry_agent_assignment_to_running_seconds",
            "Time from an assignment to its container running (includes the image pull)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.heartbeat_failures = Counter(
            "gantry_agent_heartbeat_failures", "Heartbeats that failed", registry=r
        )
        self.report_failures = Counter(
            "gantry_agent_report_failures", "Status reports that failed", registry=r
        )
        self.assignment_sets = Counter(
            "gantry_agent_assignment_sets", "Assignment sets received", registry=r
        )
        for phase in Phase:
            self.containers.labels(phase=phase.value).set(0)

    def set_phases(self, phases: Iterable[Phase]) -> None:
        counts = Tally(phases)
        for phase in Phase:
            self.containers.labels(phase=phase.value).set(counts.get(phase, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
