"""Routing, forwarding headers, canary split, balancing, caps, admin and metrics over real HTTP."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection

from proxyharness import Proxy, Servers, http, route, wait_for


def test_routes_by_host_and_longest_prefix(servers: Servers, launch: Callable[..., Proxy]) -> None:
    web, api, shop = servers.backend("web"), servers.backend("api"), servers.backend("shop")
    disc = servers.discovery()
    servers.publish(
        disc,
        1,
        [
            route("web", [(web, "stable")], path_prefix="/"),
            route("api", [(api, "stable")], path_prefix="/api"),
            route("shop", [(shop, "stable")], host="shop.test", path_prefix="/"),
        ],
    )
    p = launch([disc.address])
    p.wait_table(1)
    cases = [("x.test", "/", "web"), ("x.test", "/api/users?q=1", "api"), ("x.test", "/apix", "web"),
             ("SHOP.test:8080", "/api", "shop")]  # fmt: skip
    for host, path, want in cases:
        status, _, body = http(p, path, headers={"Host": host})
        assert status == 200, body
        got = json.loads(body)
        assert got["backend"] == want, (host, path)
        assert got["path"] == path


def test_no_route_is_404_saying_why(servers: Servers, launch: Callable[..., Proxy]) -> None:
    api = servers.backend("api")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("api", [(api, "stable")], path_prefix="/api")])
    p = launch([disc.address])
    p.wait_table(1)
    status, _, body = http(p, "/other", headers={"Host": "nowhere.test"})
    assert status == 404 and b"no route for host 'nowhere.test'" in body


def test_forwarded_headers_and_hop_by_hop(servers: Servers, launch: Callable[..., Proxy]) -> None:
    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    status, _, body = http(
        p,
        "/h",
        headers={"Host": "app.test", "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "secret",
                 "Keep-Alive": "timeout=5", "X-Forwarded-For": "203.0.113.9", "X-Keep": "yes",
                 "Proxy-Authorization": "Basic Zm9v"},
    )  # fmt: skip
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "app.test"
    assert seen["host"] == "app.test" and seen["x-keep"] == "yes"
    for hop in ("x-drop-me", "keep-alive", "proxy-authorization"):
        assert hop not in seen, hop


def test_canary_split_override_and_sticky_cookie(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    stable = [servers.backend("stable-1"), servers.backend("stable-2")]
    canary = servers.backend("canary-1")
    disc = servers.discovery()
    servers.publish(
        disc,
        1,
        [
            route(
                "web",
                [(stable[0], "stable"), (stable[1], "stable"), (canary, "canary")],
                canary_weight=10,
            )
        ],
    )
    p = launch([disc.address])
    p.wait_table(1)
    conn = HTTPConnection("127.0.0.1", p.port, timeout=30)
    n = 1000
    counts: Counter[str] = Counter()
    cookies = set()
    for _ in range(n):
        status, headers, body = http(p, "/", conn=conn)
        assert status == 200
        counts[json.loads(body)["backend"]] += 1
        cookies.add(headers.get("set-cookie", "").split(";")[0])
    share = counts["canary-1"] / n
    assert abs(share - 0.10) <= 0.03, counts  # 3 sigma at n=1000
    assert all(c.startswith("gantry-bucket=") for c in cookies)
    # header override
    for value, want in (("always", "canary-1"), ("never", "stable")):
        for _ in range(20):
            _, _, body = http(p, "/", headers={"X-Gantry-Canary": value}, conn=conn)
            assert json.loads(body)["backend"].startswith(want)
    # sticky: a user with a bucket below the weight stays on the canary, above on stable
    for bucket, want in (("3", "canary-1"), ("42", "stable")):
        for _ in range(30):
            _, headers, body = http(
                p, "/", headers={"Cookie": f"a=b; gantry-bucket={bucket}"}, conn=conn
            )
            assert json.loads(body)["backend"].startswith(want)
            assert "set-cookie" not in headers
    conn.close()
    stats = p.admin_json("/admin/stats")
    web = stats["deployments"]["web"]
    assert web["canary"]["requests"] == counts["canary-1"] + 20 + 30
    assert web["stable"]["requests"] == n - counts["canary-1"] + 20 + 30


def test_round_robin_and_keepalive_pooling(servers: Servers, launch: Callable[..., Proxy]) -> None:
    bes = [servers.backend(f"b{i}") for i in range(3)]
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(b, "stable") for b in bes])])
    p = launch([disc.address], balance="round_robin")
    p.wait_table(1)
    conn = HTTPConnection("127.0.0.1", p.port, timeout=30)
    for _ in range(60):
        assert http(p, "/", conn=conn)[0] == 200
    conn.close()
    assert [b.hits for b in bes] == [20, 20, 20]
    # sequential requests reuse one pooled upstream connection per backend
    assert all(len(b.peers) == 1 for b in bes), [b.peers for b in bes]


def test_least_request_avoids_the_busy_endpoint(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    a, b = servers.backend("a"), servers.backend("b")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(a, "stable"), (b, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    # Park 4 requests: least-request with two choices sends each to the less busy one: 2/2.
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(http(p, "/hold")[0])) for _ in range(4)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: a.inflight + b.inflight == 4, 20, "4 parked requests")
    assert a.inflight == 2 and b.inflight == 2
    a.released = b.released = True
    for t in threads:
        t.join(30)
    assert results == [200] * 4


def test_per_endpoint_concurrency_cap(servers: Servers, launch: Callable[..., Proxy]) -> None:
    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address], max_inflight_per_endpoint=2, request_timeout=120)
    p.wait_table(1)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(http(p, "/hold")[0])) for _ in range(2)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: be.inflight == 2, 60, "2 parked requests")
    status, _, body = http(p, "/")
    assert status == 503 and b"concurrency cap" in body
    be.released = True
    for t in threads:
        t.join(30)
    assert results == [200, 200]
    assert be.max_inflight == 2


def test_admin_table_stats_metrics_healthz(servers: Servers, launch: Callable[..., Proxy]) -> None:
    be, c = servers.backend("web"), servers.backend("canary")
    disc = servers.discovery()
    servers.publish(disc, 4, [route("web", [(be, "stable"), (c, "canary")], canary_weight=50)])
    p = launch([disc.address])
    p.wait_table(4)
    table = p.admin_json("/admin/table")
    assert table["routes"][0]["deployment"] == "web" and table["routes"][0]["canary_weight"] == 50
    assert {e["track"] for e in table["routes"][0]["endpoints"]} == {"stable", "canary"}
    assert table["discovery"]["connected_to"] == disc.address
    assert disc.watchers == [f"http://127.0.0.1:{p.admin}"]
    for _ in range(10):
        http(p, "/status/500", headers={"X-Gantry-Canary": "always"})
        http(p, "/", headers={"X-Gantry-Canary": "never"})
    stats = p.admin_json("/admin/stats")
    web = stats["deployments"]["web"]
    assert web["canary"]["requests"] == 10 and web["canary"]["errors_5xx"] == 10
    assert web["stable"]["requests"] == 10 and web["stable"]["errors_5xx"] == 0
    assert web["stable"]["latency_ms_buckets"][-1] == 10
    assert len(web["stable"]["latency_ms_buckets"]) == len(stats["buckets_ms"]) + 1
    from prometheus_client.parser import text_string_to_metric_families

    got = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for f in text_string_to_metric_families(p.admin_text("/metrics"))
        for x in f.samples
    }
    web = (("deployment", "web"),)
    assert got[("gantry_proxy_requests_total", (("code", "500"), *web, ("track", "canary")))] == 10
    assert got[("gantry_proxy_requests_total", (("code", "200"), *web, ("track", "stable")))] == 10
    assert got[("gantry_proxy_request_duration_seconds_count", (*web, ("track", "stable")))] == 10
    assert got[("gantry_proxy_workers", ())] == 1
    assert got[("gantry_proxy_table_version", ())] == 4
    assert p.admin_text("/healthz") == "ok\n"


def test_workers_share_the_port_and_metrics_add_up(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address], workers=2)
    p.wait_table(1)
    assert len(p.pids()) == 3  # supervisor + 2 workers
    n = 200
    for _ in range(n):  # a new connection each: the kernel spreads them over workers
        assert http(p, "/")[0] == 200
    stats = p.admin_json("/admin/stats")
    assert stats["workers"] == 2
    assert stats["deployments"]["web"]["stable"]["requests"] == n
    assert be.hits == n
