"""Helpers for the proxy's integration tests: real backends, a fake Discovery, the real proxy.

Backends (aiohttp apps and raw-socket misbehavers) and the fake Discovery
server run on an event loop in a background thread (`bg`), so tests stay
plain functions talking real HTTP to the real `python -m proxy` process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import WSMsgType, web

from gantry.procs import free_port
from proxy.fake_discovery import FakeDiscovery, endpoint_table

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")

CHUNK = b"\xab" * (1 << 20)


class Background:
    """An event loop in a thread, for servers the tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="proxy-test-bg", daemon=True
        )
        self.thread.start()
        self.cleanups: list[Callable[[], Coroutine[Any, Any, Any]]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def shutdown() -> None:
            for fn in reversed(self.cleanups):
                try:
                    await fn()
                except Exception:  # noqa: BLE001 - best effort teardown
                    pass
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(shutdown(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Backend:
    name: str
    port: int
    hits: int = 0
    peers: set[int] = field(default_factory=set)
    inflight: int = 0
    max_inflight: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    uploaded: int = 0
    fail: bool = False  # answer every echo request 500
    upload_aborted: bool = False
    released: bool = False  # /hold answers once the test sets this


def backend_app(be: Backend) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        be.hits += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            be.peers.add(peer[1])
        be.last_headers = dict(request.headers)
        body = await request.read()
        if be.fail:
            return web.Response(status=500, text=f"{be.name} fails\n")
        return web.json_response(
            {"backend": be.name, "method": request.method, "path": request.path_qs, "body": len(body),
             "headers": dict(request.headers)}
        )  # fmt: skip

    async def status(request: web.Request) -> web.Response:
        be.hits += 1
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"{be.name} says {code}\n")

    async def slow(request: web.Request) -> web.Response:
        be.hits += 1
        be.inflight += 1
        be.max_inflight = max(be.max_inflight, be.inflight)
        try:
            await asyncio.sleep(float(request.match_info["secs"]))
        finally:
            be.inflight -= 1
        return web.Response(text=f"{be.name} slow done\n")

    async def hold(request: web.Request) -> web.Response:
        """Answers only when the test sets `released`: requests stay in flight on cue."""
        be.hits += 1
        be.inflight += 1
        be.max_inflight = max(be.max_inflight, be.inflight)
        try:
            while not be.released:  # noqa: ASYNC110 - set from the test thread
                await asyncio.sleep(0.02)
        finally:
            be.inflight -= 1
        return web.Response(text=f"{be.name} held\n")

    async def download(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        resp = web.StreamResponse()
        if request.match_info["mode"] == "length":
            resp.content_length = n
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        while n > 0:
            part = CHUNK if n >= len(CHUNK) else CHUNK[:n]
            await resp.write(part)
            n -= len(part)
        await resp.write_eof()
        return resp

    async def upload(request: web.Request) -> web.Response:
        be.hits += 1
        total = 0
        try:
            async for data in request.content.iter_any():
                total += len(data)
        except (ConnectionError, aiohttp.ClientPayloadError, asyncio.CancelledError):
            be.upload_aborted = True
            raise
        be.uploaded = total
        return web.json_response({"backend": be.name, "received": total})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(f"{be.name}: {msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def nocontent(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application(client_max_size=1 << 40)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow/{secs}", slow)
    app.router.add_get("/hold", hold)
    app.router.add_get("/download/{mode}/{n}", download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/nocontent", nocontent)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


class Servers:
    """Backends and Discovery servers living on the background loop."""

    def __init__(self, bg: Background) -> None:
        self.bg = bg

    def backend(self, name: str, *, keepalive_timeout: float = 75.0) -> Backend:
        async def start() -> Backend:
            be = Backend(name, 0)
            runner = web.AppRunner(
                backend_app(be),
                access_log=None,
                shutdown_timeout=0.5,
                keepalive_timeout=keepalive_timeout,
            )
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
            be.port = port
            self.bg.cleanups.append(runner.cleanup)
            return be

        return self.bg.run(start())

    def raw(self, behaviour: str) -> int:
        """A backend that misbehaves: 'reset' (RST after the head) or 'hang' (never answers)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                if behaviour == "eof":  # a body delimited by closing the connection
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                    for i in range(5):
                        writer.write(b"part %d\n" % i)
                        await writer.drain()
                    writer.close()
                    return
                if behaviour == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    writer.transport.abort()
                    return
                await asyncio.sleep(3600)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                writer.transport.abort()

        async def start() -> int:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]

            async def stop() -> None:
                server.close()

            self.bg.cleanups.append(stop)
            return int(port)

        return self.bg.run(start())

    def blackhole(self) -> tuple[int, list[socket.socket]]:
        """A port whose accept queue is full: the kernel drops new SYNs, connects hang."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        held = [srv]
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            held.append(c)
        return int(port), held

    def discovery(self, *, leader: str | None = None, port: int = 0) -> FakeDiscovery:
        async def start() -> FakeDiscovery:
            disc = FakeDiscovery(leader=leader)
            await disc.start(port=port)
            self.bg.cleanups.append(disc.stop)
            return disc

        return self.bg.run(start())

    def publish(self, disc: FakeDiscovery, version: int, routes: list[dict[str, Any]]) -> None:
        self.bg.run(disc.publish(endpoint_table(version, routes)))


@dataclass
class Proxy:
    port: int
    admin: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=10) as r:
            return json.loads(r.read())

    def admin_text(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=10) as r:
            return str(r.read().decode())

    def wait_table(self, version: int, deadline: float = 30.0) -> None:
        wait_for(
            lambda: self.admin_json("/admin/table")["version"] == version,
            deadline,
            f"table v{version}",
        )

    def pids(self) -> list[int]:
        out = [self.proc.pid]
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return out

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def wait_for(cond: Callable[[], Any], deadline: float, what: str) -> Any:
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            value = cond()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def route(deployment: str, backends: list[tuple[Backend | int, str]], **kw: Any) -> dict[str, Any]:
    """A route dict for endpoint_table: backends are (Backend or port, track)."""
    eps = []
    for b, track in backends:
        port = b.port if isinstance(b, Backend) else b
        eps.append({"track": track, "port": port, **kw.pop(f"ep_{port}", {})})
    return {"deployment": deployment, "endpoints": eps, **kw}


def launch_proxy(
    tmp_path: Path, controllers: list[str], *, workers: int = 1, **settings: Any
) -> Proxy:
    port, admin = free_port(), free_port()
    env = dict(os.environ)
    defaults = {"connect_timeout": 2, "request_timeout": 10, "header_timeout": 2, "seed": 1234}
    for key, value in {**defaults, **settings}.items():
        env[f"GANTRY_PROXY_{key.upper()}"] = str(value)
    log = tmp_path / f"proxy-{port}.log"
    argv = [
        sys.executable, "-m", "proxy", "--listen", f"127.0.0.1:{port}",
        "--admin", f"127.0.0.1:{admin}", "--controller", ",".join(controllers),
        "--workers", str(workers), "--proxy-id", f"test-{port}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    p = Proxy(port, admin, proc, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited {proc.returncode}: {log.read_text()}")
        return p.admin_text("/healthz").strip() == "ok"

    try:
        wait_for(healthy, 30, "proxy /healthz")
    except BaseException:
        p.stop()
        raise
    return p


def http(
    proxy: Proxy,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    conn: Any = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request through the proxy (on `conn` if given, keeping it open)."""
    import http.client

    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        resp = c.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            c.close()


def raw_exchange(
    proxy: Proxy, data: bytes, *, timeout: float = 15.0, wait_close: bool = True
) -> bytes:
    """Send raw bytes, read until the proxy closes (or a timeout)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                part = s.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            out += part
            if not wait_close and b"\r\n\r\n" in out:
                break
        return out
