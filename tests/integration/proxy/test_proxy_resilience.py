"""Outliers, retries, timeouts, error answers, draining, Discovery leader-following, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.client import HTTPConnection

from proxyharness import Proxy, Servers, http, route, wait_for

from gantry.procs import free_port


def test_failing_endpoint_is_ejected_then_readmitted(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    bad, good = servers.backend("bad"), servers.backend("good")
    bad.fail = True
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(bad, "stable"), (good, "stable")])])
    p = launch(
        [disc.address], outlier_consecutive=3, outlier_base_ejection=6, balance="round_robin"
    )
    p.wait_table(1)
    key = f"127.0.0.1:{bad.port}"
    statuses = [http(p, "/")[0] for _ in range(6)]
    assert statuses.count(500) == 3 and statuses.count(200) == 3
    stats = p.admin_json("/admin/stats")
    assert key in stats["ejected"] and stats["ejections"]["web"] == 1
    assert 'gantry_proxy_ejections_total{deployment="web"} 1.0' in p.admin_text("/metrics")
    before = bad.hits
    statuses = [http(p, "/")[0] for _ in range(10)]
    if key in p.admin_json("/admin/stats")["ejected"]:  # still ejected: it got nothing
        assert bad.hits == before and statuses == [200] * 10
    bad.fail = False  # it recovers; after the back-off it is back in rotation
    wait_for(lambda: key not in p.admin_json("/admin/stats")["ejected"], 20, "re-admission")
    before = bad.hits
    for _ in range(10):
        assert http(p, "/")[0] == 200
    assert bad.hits >= before + 4


def test_connect_failure_is_retried_on_another_endpoint(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    good = servers.backend("good")
    dead = free_port()  # nothing listens here
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(dead, "stable"), (good, "stable")])])
    p = launch([disc.address], balance="round_robin", outlier_consecutive=100)
    p.wait_table(1)
    for method, body in (("GET", None), ("POST", b"payload"), ("GET", None), ("POST", b"x" * 10)):
        status, _, data = http(p, "/echo", method=method, body=body)
        assert status == 200, data
        assert json.loads(data)["backend"] == "good"
    stats = p.admin_json("/admin/stats")
    assert stats["retries"]["web"] >= 2
    assert stats["upstream_errors"]["web"]["connect"] >= 2


def test_a_lone_canary_that_refuses_is_retried_on_stable_unless_forced(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    stable = servers.backend("stable")
    dead_canary = free_port()  # a one-replica canary whose connection fails
    disc = servers.discovery()
    servers.publish(
        disc, 1, [route("web", [(stable, "stable"), (dead_canary, "canary")], canary_weight=100)]
    )
    p = launch([disc.address], outlier_consecutive=100)
    p.wait_table(1)
    for _ in range(3):
        status, _, data = http(p, "/echo")
        assert status == 200, data
        assert json.loads(data)["backend"] == "stable"
    forced, _, body = http(p, "/echo", headers={"X-Gantry-Canary": "always"})
    assert forced == 502 and f"connect to 127.0.0.1:{dead_canary} failed".encode() in body


def test_only_endpoint_refusing_gives_502_saying_why(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    dead = free_port()
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(dead, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    status, _, body = http(p, "/")
    assert status == 502 and f"connect to 127.0.0.1:{dead} failed".encode() in body


def test_backend_that_resets_gives_502(servers: Servers, launch: Callable[..., Proxy]) -> None:
    port = servers.raw("reset")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(port, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    status, _, body = http(p, "/", method="POST", body=b"data")
    assert status == 502 and b"before answering" in body
    assert p.admin_json("/admin/stats")["upstream_errors"]["web"]["reset"] >= 1
    assert http(p, "/", method="POST", body=b"data")[0] == 502  # the proxy is still fine


def test_backend_that_hangs_gives_504(servers: Servers, launch: Callable[..., Proxy]) -> None:
    port = servers.raw("hang")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(port, "stable")])])
    p = launch([disc.address], request_timeout=1)
    p.wait_table(1)
    status, _, body = http(p, "/")
    assert status == 504 and b"did not answer within 1s" in body
    assert p.admin_json("/admin/stats")["upstream_errors"]["web"]["timeout"] >= 1


def test_no_ready_endpoint_gives_503(servers: Servers, launch: Callable[..., Proxy]) -> None:
    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(
        disc, 1, [route("web", [(be, "stable")], **{f"ep_{be.port}": {"ready": False}})]
    )
    p = launch([disc.address])
    p.wait_table(1)
    status, _, body = http(p, "/")
    assert status == 503 and b"deployment web (stable): no ready endpoints" in body
    assert be.hits == 0


def test_draining_endpoint_finishes_in_flight_and_gets_no_new(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    old, new = servers.backend("old"), servers.backend("new")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(old, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    result: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: result.append(http(p, "/hold")[::2]))
    t.start()
    wait_for(lambda: old.inflight == 1, 20, "in-flight request")
    servers.publish(
        disc,
        2,
        [
            route(
                "web", [(old, "stable"), (new, "stable")], **{f"ep_{old.port}": {"draining": True}}
            )
        ],
    )
    p.wait_table(2)
    hits = old.hits
    for _ in range(10):
        _, _, body = http(p, "/")
        assert json.loads(body)["backend"] == "new"
    assert old.hits == hits
    old.released = True
    t.join(30)
    assert result == [(200, b"old held\n")]


def test_discovery_follows_leader_and_keeps_last_table(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    be, be2 = servers.backend("web"), servers.backend("web2")
    leader_port = free_port()
    standby = servers.discovery(leader=f"127.0.0.1:{leader_port}")
    leader = servers.discovery(port=leader_port)
    servers.publish(leader, 1, [route("web", [(be, "stable")])])
    p = launch([standby.address])  # knows only the standby: must follow its hint
    p.wait_table(1)
    assert standby.watchers and leader.watchers
    # The leader goes away: the last table keeps serving.
    servers.bg.run(leader.stop())
    wait_for(
        lambda: p.admin_json("/admin/table")["discovery"]["connected_to"] is None, 20, "stream lost"
    )
    for _ in range(5):
        assert json.loads(http(p, "/")[2])["backend"] == "web"
    # The standby takes over as leader with a new table.
    standby.leader = None
    servers.publish(standby, 2, [route("web", [(be2, "stable")])])
    p.wait_table(2, deadline=30)
    assert json.loads(http(p, "/")[2])["backend"] == "web2"


def test_sigterm_finishes_in_flight_requests(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address], workers=2)
    p.wait_table(1)
    idle = HTTPConnection("127.0.0.1", p.port, timeout=10)
    assert http(p, "/", conn=idle)[0] == 200
    result: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: result.append(http(p, "/hold")[::2]))
    t.start()
    wait_for(lambda: be.inflight == 1, 20, "in-flight request")
    p.proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_for(refused, 20, "the proxy to stop accepting")
    assert be.inflight == 1 and p.proc.poll() is None  # still finishing the held request
    be.released = True
    t.join(30)
    assert result == [(200, b"web held\n")]
    assert p.proc.wait(30) == 0
    idle.close()


def test_idempotent_request_is_retried_after_a_reset(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    reset, good = servers.raw("reset"), servers.backend("good")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(reset, "stable"), (good, "stable")])])
    p = launch([disc.address], balance="round_robin", outlier_consecutive=100)
    p.wait_table(1)
    for _ in range(4):
        status, _, body = http(p, "/get")
        assert status == 200 and json.loads(body)["backend"] == "good"
    stats = p.admin_json("/admin/stats")
    assert stats["retries"]["web"] >= 2 and stats["upstream_errors"]["web"]["reset"] >= 2
    # a POST with a body is not idempotent: it is not retried after being sent
    statuses = {http(p, "/post", method="POST", body=b"x")[0] for _ in range(4)}
    assert statuses == {200, 502}


def test_backend_closing_idle_connections_is_harmless(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    be = servers.backend("web", keepalive_timeout=0.05)
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    conn = HTTPConnection("127.0.0.1", p.port, timeout=10)
    for i in range(30):
        assert http(p, "/", conn=conn)[0] == 200
        if i % 3 == 0:
            time.sleep(0.1)  # the backend closes the pooled connection meanwhile
    conn.close()
    assert be.hits == 30


def test_client_leaving_mid_upload_closes_the_upstream(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    import socket

    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 5000
        )
        wait_for(lambda: be.hits == 1, 10, "the upload to reach the backend")
    wait_for(lambda: be.upload_aborted, 10, "the backend to see the upload cut")
    # The upstream connection was not pooled in an unknown state: the next request works.
    for _ in range(3):
        assert http(p, "/")[0] == 200
    stats = p.admin_json("/admin/stats")
    assert stats["deployments"]["web"]["stable"]["status"].get("499") == 1


def test_dead_worker_is_replaced(servers: Servers, launch: Callable[..., Proxy]) -> None:
    import os

    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address], workers=2)
    p.wait_table(1)
    workers = set(p.pids()[1:])
    assert len(workers) == 2
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(p.pids()[1:]) - {victim}) == 2, 30, "a replacement worker")
    wait_for(lambda: p.admin_json("/admin/stats")["workers"] == 2, 30, "both workers reporting")
    for _ in range(20):
        assert http(p, "/")[0] == 200


def test_connect_timeout_gives_504_and_retries_elsewhere(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    port, held = servers.blackhole()
    good = servers.backend("good")
    disc = servers.discovery()
    try:
        servers.publish(disc, 1, [route("web", [(port, "stable")])])
        p = launch([disc.address], connect_timeout=0.5)
        p.wait_table(1)
        t0 = time.monotonic()
        status, _, body = http(p, "/")
        assert status == 504 and f"connect to 127.0.0.1:{port} timed out".encode() in body
        assert time.monotonic() - t0 < 5
        assert p.admin_json("/admin/stats")["upstream_errors"]["web"]["timeout"] >= 1
        servers.publish(disc, 2, [route("web", [(port, "stable"), (good, "stable")])])
        p.wait_table(2)
        for _ in range(4):
            status, _, body = http(p, "/")
            assert status == 200 and json.loads(body)["backend"] == "good"
    finally:
        for s in held:
            s.close()
