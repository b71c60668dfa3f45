"""Worker counters, merging across workers, /admin/stats and Prometheus text."""

from __future__ import annotations

from proxy.metrics import BUCKETS_MS, Metrics, merge, prometheus_text, stats_json


def worker(n_ok: int, n_err: int, latency_ms: float) -> Metrics:
    m = Metrics()
    for _ in range(n_ok):
        m.track("web", "stable").observe(200, latency_ms)
    for _ in range(n_err):
        m.track("web", "canary").observe(503, latency_ms)
    m.upstream_error("web", "connect")
    m.ejection("web")
    return m


def test_merge_sums_workers_and_stats_are_cumulative() -> None:
    merged = merge([worker(3, 1, 0.7).snapshot(), worker(2, 0, 40.0).snapshot()])
    doc = stats_json(merged, workers=2, now=1.0)
    stable = doc["deployments"]["web"]["stable"]
    canary = doc["deployments"]["web"]["canary"]
    assert stable["requests"] == 5 and stable["errors_5xx"] == 0
    assert canary["requests"] == 1 and canary["errors_5xx"] == 1
    buckets = stable["latency_ms_buckets"]
    assert len(buckets) == len(BUCKETS_MS) + 1
    assert buckets == sorted(buckets) and buckets[-1] == 5
    assert buckets[BUCKETS_MS.index(1)] == 3  # 0.7 ms <= 1 ms
    assert buckets[BUCKETS_MS.index(50)] == 5
    assert doc["upstream_errors"] == {"web": {"connect": 2}} and doc["ejections"] == {"web": 2}
    assert doc["workers"] == 2 and doc["buckets_ms"] == list(BUCKETS_MS)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_text() -> None:
    got = samples(
        prometheus_text(merge([worker(2, 1, 3.0).snapshot()]), extra={"gantry_proxy_workers": 1})
    )
    web_stable = {("deployment", "web"), ("track", "stable")}
    assert got[("gantry_proxy_requests_total", frozenset({*web_stable, ("code", "200")}))] == 2
    assert (
        got[
            (
                "gantry_proxy_requests_total",
                frozenset({("deployment", "web"), ("track", "canary"), ("code", "503")}),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "gantry_proxy_request_duration_seconds_bucket",
                frozenset({*web_stable, ("le", "+Inf")}),
            )
        ]
        == 2
    )
    assert (
        got[
            (
                "gantry_proxy_request_duration_seconds_bucket",
                frozenset({*web_stable, ("le", "0.003")}),
            )
        ]
        == 2
    )
    assert (
        got[
            (
                "gantry_proxy_request_duration_seconds_bucket",
                frozenset({*web_stable, ("le", "0.002")}),
            )
        ]
        == 0
    )
    assert got[("gantry_proxy_request_duration_seconds_count", frozenset(web_stable))] == 2
    assert (
        got[
            (
                "gantry_proxy_upstream_errors_total",
                frozenset({("deployment", "web"), ("reason", "connect")}),
            )
        ]
        == 1
    )
    assert got[("gantry_proxy_ejections_total", frozenset({("deployment", "web")}))] == 1
    assert got[("gantry_proxy_workers", frozenset())] == 1
