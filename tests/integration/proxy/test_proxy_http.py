"""HTTP done properly: bad input, limits, slow clients, framing, pipelining, WebSocket, 1 GiB streams."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from proxyharness import CHUNK, Proxy, Servers, http, raw_exchange, route

GIB = 1 << 30


@pytest.fixture
def proxy(servers: Servers, launch: Callable[..., Proxy]) -> Proxy:
    be = servers.backend("web")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(be, "stable")])])
    p = launch([disc.address], header_timeout=1, max_header_bytes=8192, request_timeout=240)
    p.wait_table(1)
    return p


@pytest.mark.parametrize(
    "junk",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
def test_malformed_requests_get_400_and_the_proxy_lives_on(proxy: Proxy, junk: bytes) -> None:
    out = raw_exchange(proxy, junk)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    assert b"Connection: close" in out
    assert http(proxy, "/")[0] == 200


def test_oversized_head_gets_431(proxy: Proxy) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw_exchange(proxy, big).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    many = (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(300))
        + b"\r\n"
    )
    assert raw_exchange(proxy, many).startswith(b"HTTP/1.1 431")
    # trickled, never finished: still bounded
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        got = b""
        try:
            for _ in range(100):
                s.sendall(b"b" * 1000)
        except OSError:
            pass
        try:
            while chunk := s.recv(65536):
                got += chunk
        except OSError:
            pass
        assert got.startswith(b"HTTP/1.1 431")
    assert http(proxy, "/")[0] == 200


def test_slow_client_gets_408(proxy: Proxy) -> None:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 408 Request Timeout"), got
    assert b"request head not received in time" in got
    assert time.monotonic() - t0 < 15
    assert http(proxy, "/")[0] == 200


def test_pipelined_requests_are_answered_in_order(proxy: Proxy) -> None:
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
    reqs += b"GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(proxy, reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 4
    paths = [
        json.loads(part.split(b"\r\n\r\n", 1)[1])["path"]
        for part in out.split(b"HTTP/1.1 200 OK")[1:]
    ]
    assert paths == ["/p0", "/p1", "/p2", "/p3"]


def test_head_204_and_http10_framing(proxy: Proxy) -> None:
    reqs = (
        b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = raw_exchange(proxy, reqs)
    parts = out.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"204", b"200"], out
    head_resp = parts[0]
    assert head_resp.endswith(b"\r\n\r\n")  # no body after a HEAD answer
    assert json.loads(parts[2].split(b"\r\n\r\n", 1)[1])["path"] == "/y"
    # HTTP/1.0 client, chunked upstream answer: delimited by close instead
    out = raw_exchange(proxy, b"GET /download/chunked/1000 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head and b"chunked" not in head.lower()
    assert body == CHUNK[:1000]


def test_expect_100_continue(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        got = b""
        while b'"body": 5' not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200")


def test_chunked_upload_and_download(servers: Servers, proxy: Proxy) -> None:
    async def run() -> tuple[int, int]:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(50):
                yield b"z" * (1000 + i)

        async with aiohttp.ClientSession() as s:
            async with s.post(f"{proxy.base}/upload", data=gen()) as r:
                received = (await r.json())["received"]
            async with s.get(f"{proxy.base}/download/chunked/3000000") as r:
                assert r.headers.get("Transfer-Encoding") == "chunked"
                body = await r.read()
        return received, len(body)

    received, downloaded = servers.bg.run(run())
    assert received == sum(1000 + i for i in range(50))
    assert downloaded == 3000000


def test_websocket_passes_through(servers: Servers, proxy: Proxy) -> None:
    async def run() -> list[object]:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{proxy.base}/ws") as ws:
                got: list[object] = []
                for i in range(3):
                    await ws.send_str(f"hello {i}")
                    got.append((await ws.receive(timeout=10)).data)
                await ws.send_bytes(b"\x00\x01" * 40000)
                got.append(len((await ws.receive(timeout=10)).data))
                return got

    assert servers.bg.run(run()) == ["web: hello 0", "web: hello 1", "web: hello 2", 80000]
    assert http(proxy, "/")[0] == 200


def _transfer_with_rss(servers: Servers, proxy: Proxy, coro: object) -> tuple[int, int]:
    base = proxy.rss()
    fut = asyncio.run_coroutine_threadsafe(coro, servers.bg.loop)  # type: ignore[arg-type]
    peak = base
    while not fut.done():
        peak = max(peak, proxy.rss())
        time.sleep(0.05)
    return int(fut.result(timeout=1)), peak - base


def test_1gib_download_with_bounded_memory(servers: Servers, proxy: Proxy) -> None:
    async def download() -> int:
        total = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=280)) as s:
            async with s.get(f"{proxy.base}/download/length/{GIB}") as r:
                assert r.status == 200 and r.content_length == GIB
                async for data in r.content.iter_chunked(1 << 20):
                    total += len(data)
        return total

    total, growth = _transfer_with_rss(servers, proxy, download())
    assert total == GIB
    assert growth < 64 << 20, f"proxy RSS grew by {growth >> 20} MiB"


def test_1gib_upload_with_bounded_memory(servers: Servers, proxy: Proxy) -> None:
    async def upload() -> int:
        async def gen() -> AsyncIterator[bytes]:
            for _ in range(GIB // len(CHUNK)):
                yield CHUNK

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=280)) as s:
            async with s.post(
                f"{proxy.base}/upload", data=gen(), headers={"Content-Length": str(GIB)}
            ) as r:
                assert r.status == 200
                return int((await r.json())["received"])

    total, growth = _transfer_with_rss(servers, proxy, upload())
    assert total == GIB
    assert growth < 64 << 20, f"proxy RSS grew by {growth >> 20} MiB"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "nonsense"], "--listen: expected HOST:PORT, got 'nonsense'"),
        (["--balance", "random"], "invalid choice"),
        (["--workers", "x"], "invalid int value"),
        (["--table", "/nonexistent/t.json"], "--table /nonexistent/t.json: No such file"),
    ],
)
def test_bad_command_line_is_one_clear_line(args: list[str], needle: str) -> None:
    import subprocess
    import sys

    from proxyharness import ROOT

    r = subprocess.run(
        [sys.executable, "-m", "proxy", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_port_in_use_is_reported(proxy: Proxy) -> None:
    import subprocess
    import sys

    from proxyharness import ROOT

    from gantry.procs import free_port

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        r = subprocess.run(
            [sys.executable, "-m", "proxy", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{free_port()}", "--workers", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        holder.close()
    assert r.returncode == 1
    assert f"--listen 127.0.0.1:{port}:" in r.stderr and "Traceback" not in r.stderr


def test_eof_delimited_upstream_body(servers: Servers, launch: Callable[..., Proxy]) -> None:
    port = servers.raw("eof")
    disc = servers.discovery()
    servers.publish(disc, 1, [route("web", [(port, "stable")])])
    p = launch([disc.address])
    p.wait_table(1)
    want = b"".join(b"part %d\n" % i for i in range(5))
    status, headers, body = http(p, "/")  # HTTP/1.1: re-framed as chunked
    assert status == 200 and body == want and headers.get("transfer-encoding") == "chunked"
    out = raw_exchange(p, b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0: delimited by close
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(want)


def test_garbage_after_a_pipelined_request_closes_after_its_answer(proxy: Proxy) -> None:
    out = raw_exchange(proxy, b"GET /slow/0.3 HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\x00\x01\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"web slow done\n"), out
    assert out.count(b"HTTP/1.1") == 1
    assert http(proxy, "/")[0] == 200
