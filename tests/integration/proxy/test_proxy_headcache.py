"""Answers whose head the proxy has seen before, byte for byte (the upstream head
cache): the body is framed by counting bytes, and the upstream connection is
reused only when the counted answer ended exactly and allowed keep-alive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from proxyharness import Background, Proxy, Servers, http, route

BODY = b"0123456789abcdef"


def fixed_backend(bg: Background, behaviour: str) -> tuple[int, list[int]]:
    """A keep-alive backend answering every request with the same head (no Date).

    'split': the body comes in two writes; 'extra': bytes follow the body in the
    same write; 'close': the head says Connection: close. Returns the port and a
    list that gets one entry per accepted connection."""
    accepted: list[int] = []
    connection = b"close" if behaviour == "close" else b"keep-alive"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(BODY)
    head += b"Connection: " + connection + b"\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if behaviour == "split":
                    writer.write(head + BODY[:5])
                    await writer.drain()
                    await asyncio.sleep(0.05)  # the proxy reads the rest separately
                    writer.write(BODY[5:])
                elif behaviour == "extra":
                    writer.write(head + BODY + b"HTTP/1.1 200 OK\r\n\r\n")
                else:
                    writer.write(head + BODY)
                await writer.drain()
                if behaviour == "close":
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.transport.abort()

    async def start() -> int:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)

        async def stop() -> None:
            server.close()

        bg.cleanups.append(stop)
        return int(server.sockets[0].getsockname()[1])

    return bg.run(start()), accepted


@pytest.mark.parametrize(
    ("behaviour", "reused"), [("split", True), ("plain", True), ("extra", False), ("close", False)]
)
def test_repeated_head_framed_by_count(
    bg: Background,
    servers: Servers,
    launch: Callable[..., Proxy],
    behaviour: str,
    reused: bool,
) -> None:
    port, accepted = fixed_backend(bg, behaviour)
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(port, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    n = 4
    for _ in range(n):  # the first answer is parsed; the later ones hit the cache
        status, headers, body = http(p, "/")
        assert (status, body) == (200, BODY)
        assert headers.get("content-length") == str(len(BODY))
        assert headers.get("connection") == "keep-alive"
    # Reused only after an answer that ended exactly where its length said.
    assert len(accepted) == (1 if reused else n), accepted


def test_repeated_request_head_still_chosen_and_counted_per_request(
    servers: Servers, launch: Callable[..., Proxy]
) -> None:
    """The same request bytes again (the request head cache): the canary choice, the
    sticky cookie, X-Forwarded-For and the counters are still made per request."""
    import http.client as hc
    import json

    stable, canary = servers.backend("stable"), servers.backend("canary")
    disc = servers.discovery()
    servers.publish(
        disc, 1, [route("web", [(stable, "stable"), (canary, "canary")], canary_weight=50)]
    )
    p = launch([disc.address])
    p.wait_table(1)
    conn = hc.HTTPConnection("127.0.0.1", p.port, timeout=30)
    seen: dict[str, int] = {}
    cookies = set()
    n = 40
    try:
        for _ in range(n):  # identical bytes each time, one request per read
            status, headers, body = http(p, "/same", conn=conn)
            assert status == 200
            answer = json.loads(body)
            assert answer["path"] == "/same"
            assert answer["headers"]["X-Forwarded-For"] == "127.0.0.1"
            seen[answer["backend"]] = seen.get(answer["backend"], 0) + 1
            cookies.add(headers.get("set-cookie"))
        status, _, body = http(p, "/same", conn=conn, headers={"X-Gantry-Canary": "always"})
        assert status == 200 and json.loads(body)["backend"] == "canary"
    finally:
        conn.close()
    assert set(seen) == {"stable", "canary"}, seen  # 50 % split: both, per request
    assert len(cookies) > 2, cookies  # a fresh random bucket for each cookie-less request
    stats = p.admin_json("/admin/stats")["deployments"]["web"]
    assert sum(t["requests"] for t in stats.values()) == n + 1, stats
