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


def test_prometheus_text() -> None:
    text = prometheus_text(merge([worker(2, 1, 3.0).snapshot()]), extra={"gantry_proxy_workers": 1})
    assert 'gantry_proxy_requests_total{deployment="web",track="stable",code="200"} 2' in text
    assert 'gantry_proxy_requests_total{deployment="web",track="canary",code="503"} 1' in text
    assert (
        'gantry_proxy_request_duration_seconds_bucket{deployment="web",track="stable",le="+Inf"} 2'
        in text
    )
    assert (
        'gantry_proxy_request_duration_seconds_bucket{deployment="web",track="stable",le="0.003"} 2'
        in text
    )
    assert 'gantry_proxy_upstream_errors_total{deployment="web",reason="connect"} 1' in text
    assert 'gantry_proxy_ejections_total{deployment="web"} 1' in text
    assert "gantry_proxy_workers 1" in text


def test_prometheus_text_parses() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = prometheus_text(merge([worker(2, 1, 3.0).snapshot()]))
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"gantry_proxy_requests", "gantry_proxy_request_duration_seconds"} <= names
