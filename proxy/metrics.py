"""Cheap per-worker counters, their JSON snapshot, merging and Prometheus text.

Owns what a worker counts on the hot path -- plain dicts and lists, no
prometheus-client call per request -- and the two views the supervisor's
admin server builds from the merged snapshots of all workers:

* `/metrics`: Prometheus text exposition through a prometheus-client custom
  collector over the merged counters (no client-library call per request).
* `/admin/stats`: JSON for the rollout engine. Format (all counters are
  cumulative since the proxy started, so two snapshots diff into a window)::

    {"time": 1764330000.1, "workers": 2,
     "buckets_ms": [1, 2, 5, ...],            # upper bounds, +Inf implied last
     "deployments": {"web": {
        "stable": {"requests": 1200, "errors_5xx": 3,
                   "latency_ms_buckets": [10, 400, ..., 1200],  # cumulative, len = len(buckets_ms)+1
                   "latency_ms_sum": 5321.7,
                   "status": {"200": 1197, "503": 3}},
        "canary": {...}}},
     "upstream_errors": {"web": {"connect": 2, "timeout": 1}},
     "ejections": {"web": 1}, "retries": {"web": 4}}

  p99 over a window: diff the cumulative bucket counts of two snapshots and
  take the first bucket whose count reaches 0.99 of the window's requests.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 75, 100, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip


@dataclass(slots=True)
class TrackStats:
    status: dict[int, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    latency_sum: float = 0.0

    def observe(self, status: int, latency_ms: float) -> None:
        self.status[status] = self.status.get(status, 0) + 1
        self.buckets[bisect_left(BUCKETS_MS, latency_ms)] += 1
        self.latency_sum += latency_ms


@dataclass(slots=True)
class Metrics:
    """One worker's counters. Keys are (deployment, track)."""

    tracks: dict[tuple[str, str], TrackStats] = field(default_factory=dict)
    upstream_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    ejections: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    unrouted: dict[int, int] = field(default_factory=dict)

    def track(self, deployment: str, track: str) -> TrackStats:
        stats = self.tracks.get((deployment, track))
        if stats is None:
            stats = self.tracks[(deployment, track)] = TrackStats()
        return stats

    def upstream_error(self, deployment: str, reason: str) -> None:
        key = (deployment, reason)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def ejection(self, deployment: str) -> None:
        self.ejections[deployment] = self.ejections.get(deployment, 0) + 1

    def retry(self, deployment: str) -> None:
        self.retries[deployment] = self.retries.get(deployment, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-able raw counters (per-bucket, not cumulative) of this worker."""
        return {
            "tracks": [
                [d, t, {str(k): v for k, v in s.status.items()}, list(s.buckets), s.latency_sum]
                for (d, t), s in self.tracks.items()
            ],
            "upstream_errors": [[d, r, n] for (d, r), n in self.upstream_errors.items()],
            "ejections": dict(self.ejections),
            "retries": dict(self.retries),
            "unrouted": {str(k): v for k, v in self.unrouted.items()},
        }


def merge(snapshots: list[dict[str, Any]]) -> Metrics:
    """Sum several workers' snapshots into one Metrics."""
    out = Metrics()
    for snap in snapshots:
        for d, t, status, buckets, latency_sum in snap.get("tracks", []):
            stats = out.track(d, t)
            for code, n in status.items():
                stats.status[int(code)] = stats.status.get(int(code), 0) + n
            for i, n in enumerate(buckets[: len(stats.buckets)]):
                stats.buckets[i] += n
            stats.latency_sum += latency_sum
        for d, r, n in snap.get("upstream_errors", []):
            out.upstream_errors[(d, r)] = out.upstream_errors.get((d, r), 0) + n
        for d, n in snap.get("ejections", {}).items():
            out.ejections[d] = out.ejections.get(d, 0) + n
        for d, n in snap.get("retries", {}).items():
            out.retries[d] = out.retries.get(d, 0) + n
        for code, n in snap.get("unrouted", {}).items():
            out.unrouted[int(code)] = out.unrouted.get(int(code), 0) + n
    return out


def _cumulative(buckets: list[int]) -> list[int]:
    total, out = 0, []
    for n in buckets:
        total += n
        out.append(total)
    return out


def stats_json(m: Metrics, *, workers: int, now: float | None = None) -> dict[str, Any]:
    """The `/admin/stats` document (see the module docstring)."""
    deployments: dict[str, dict[str, Any]] = {}
    for (d, t), s in sorted(m.tracks.items()):
        deployments.setdefault(d, {})[t] = {
            "requests": sum(s.status.values()),
            "errors_5xx": sum(n for code, n in s.status.items() if code >= 500),
            "latency_ms_buckets": _cumulative(s.buckets),
            "latency_ms_sum": round(s.latency_sum, 3),
            "status": {str(k): v for k, v in sorted(s.status.items())},
        }
    errors: dict[str, dict[str, int]] = {}
    for (d, r), n in sorted(m.upstream_errors.items()):
        errors.setdefault(d, {})[r] = n
    return {
        "time": time.time() if now is None else now,
        "workers": workers,
        "buckets_ms": list(BUCKETS_MS),
        "deployments": deployments,
        "upstream_errors": errors,
        "ejections": dict(sorted(m.ejections.items())),
        "retries": dict(sorted(m.retries.items())),
    }


class MergedCollector:
    """A prometheus-client collector over merged worker counters (built per scrape)."""

    def __init__(self, m: Metrics, extra: dict[str, float] | None = None) -> None:
        self.m = m
        self.extra = extra or {}

    def collect(self) -> Iterator[Metric]:
        m = self.m
        requests = CounterMetricFamily(
            "gantry_proxy_requests",
            "Requests answered, by deployment, track and status.",
            labels=["deployment", "track", "code"],
        )
        for (d, t), s in sorted(m.tracks.items()):
            for code, n in sorted(s.status.items()):
                requests.add_metric([d, t, str(code)], n)
        for code, n in sorted(m.unrouted.items()):
            requests.add_metric(["", "", str(code)], n)
        yield requests
        latency = HistogramMetricFamily(
            "gantry_proxy_request_duration_seconds",
            "Time from a complete request head to the end of the response.",
            labels=["deployment", "track"],
        )
        for (d, t), s in sorted(m.tracks.items()):
            cum = _cumulative(s.buckets)
            buckets = [(_bound(b), n) for b, n in zip(BUCKETS_MS, cum, strict=False)]
            buckets.append(("+Inf", cum[-1]))
            latency.add_metric([d, t], buckets, s.latency_sum / 1000)
        yield latency
        errors = CounterMetricFamily(
            "gantry_proxy_upstream_errors",
            "Failed upstream exchanges, by reason (connect, timeout, reset, closed).",
            labels=["deployment", "reason"],
        )
        for (d, r), n in sorted(m.upstream_errors.items()):
            errors.add_metric([d, r], n)
        yield errors
        for name, doc, table in (
            ("gantry_proxy_ejections", "Endpoints ejected by outlier detection.", m.ejections),
            ("gantry_proxy_retries", "Requests retried on another endpoint.", m.retries),
        ):
            family = CounterMetricFamily(name, doc, labels=["deployment"])
            for d, n in sorted(table.items()):
                family.add_metric([d], n)
            yield family
        for name, value in sorted(self.extra.items()):
            yield GaugeMetricFamily(name, name.replace("_", " "), value=value)


def _bound(ms: float) -> str:
    seconds = ms / 1000
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


def prometheus_text(m: Metrics, *, extra: dict[str, float] | None = None) -> str:
    """Prometheus text exposition of merged metrics (plus gauges in `extra`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(m, extra))  # type: ignore[arg-type]
    return generate_latest(registry).decode()
