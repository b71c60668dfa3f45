"""Canary analysis, pure: traffic counters into figures, figures into a verdict.

Owns `TrafficStats` (cumulative counters of one deployment+track as the proxy
exports them), `histogram_quantile` (PromQL-style, linear within a bucket),
`canary_metrics_from_stats` (the error rate and p99 of the traffic between
two snapshots), `VersionMetrics` / `CanaryMetrics`, and `judge_canary` (one
analysis window's pass / fail / undecided, with the reason).

It performs no I/O, reads no clock and knows nothing of rollout phases:
`controller.rollout` decides what a verdict does to the rollout, and
`controller.rollouts` fetches the counters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """One version's traffic over a window."""

    requests: float = 0.0
    error_rate: float = 0.0
    p99_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class TrafficStats:
    """Cumulative counters of one deployment+track, as the proxy exports them.

    `buckets` are Prometheus-style cumulative histogram buckets:
    (upper bound in seconds, count of requests at or below it), ascending,
    the last one may be +inf.
    """

    requests: float = 0.0
    errors: float = 0.0  # 5xx answers
    buckets: tuple[tuple[float, float], ...] = ()


def _delta(after: float, before: float) -> float:
    return after - before if after >= before else after  # counter reset: count from zero


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Quantile from cumulative buckets, linear within a bucket (as PromQL)."""
    if not buckets:
        return 0.0
    total = buckets[-1][1]
    if total <= 0:
        return 0.0
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def canary_metrics_from_stats(before: TrafficStats | None, after: TrafficStats) -> VersionMetrics:
    """Error rate and p99 (ms) of the traffic between two cumulative snapshots."""
    base = before or TrafficStats()
    reset = after.requests < base.requests
    if reset:
        base = TrafficStats()
    requests = _delta(after.requests, base.requests)
    errors = _delta(after.errors, base.errors)
    before_counts = dict(base.buckets)
    buckets = tuple((b, max(0.0, c - before_counts.get(b, 0.0))) for b, c in after.buckets)
    p99 = histogram_quantile(0.99, buckets) * 1000.0
    rate = errors / requests if requests > 0 else 0.0
    return VersionMetrics(requests=requests, error_rate=rate, p99_ms=p99)


@dataclass(frozen=True, slots=True)
class CanaryMetrics:
    """Both versions' traffic since the analysis window began."""

    stable: VersionMetrics
    canary: VersionMetrics
    window_start: float = 0.0


def judge_canary(
    analysis: Mapping[str, Any], metrics: CanaryMetrics, *, window_over: bool
) -> tuple[bool | None, str]:
    """(True pass | False fail | None undecided, why) for one analysis window.

    The canary is held to absolute thresholds (`maxErrorRate`, `maxP99Ms`) and,
    when set, to stable's figures over the same window (`maxErrorRateIncrease`:
    canary error rate minus stable's; `maxP99Ratio`: canary p99 over stable's),
    compared only once stable too has `minRequests`. A failing canary fails as
    soon as it has `minRequests`; a passing one passes only once the whole
    window is over.
    """
    max_err = float(analysis.get("maxErrorRate", 0.05) or 0.0)
    max_p99 = float(analysis.get("maxP99Ms", 0) or 0.0)
    max_increase = analysis.get("maxErrorRateIncrease")
    max_ratio = float(analysis.get("maxP99Ratio", 0) or 0.0)
    min_req = int(analysis.get("minRequests", 10) or 0)
    c, s = metrics.canary, metrics.stable
    seen = (
        f"canary error rate {c.error_rate:.2%} p99 {c.p99_ms:.0f}ms over {c.requests:.0f} requests"
        f" (stable {s.error_rate:.2%}, p99 {s.p99_ms:.0f}ms)"
    )
    if c.requests < min_req:
        if window_over:
            return None, f"inconclusive: {c.requests:.0f}/{min_req} canary requests; {seen}"
        return None, f"measuring: {seen}"
    if c.error_rate > max_err:
        return False, f"{seen} exceeds max error rate {max_err:.2%}"
    if max_p99 > 0 and c.p99_ms > max_p99:
        return False, f"{seen} exceeds max p99 {max_p99:.0f}ms"
    baseline = s.requests >= max(min_req, 1)
    if max_increase is not None and baseline and c.error_rate - s.error_rate > max_increase:
        return False, f"{seen}: error rate over stable's by more than {float(max_increase):.2%}"
    if max_ratio > 0 and baseline and s.p99_ms > 0 and c.p99_ms > max_ratio * s.p99_ms:
        return False, f"{seen}: p99 over {max_ratio:g}x stable's"
    if not window_over:
        return None, f"measuring: {seen}"
    return True, f"passed: {seen}"
