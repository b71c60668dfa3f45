"""One worker process: the data path on a SO_REUSEPORT socket, and its control socket.

Owns a worker's lifetime: uvloop, the shared listening port (every worker
binds it with SO_REUSEPORT, the kernel spreads connections), the periodic
sweep (timeouts, re-admissions, idle upstream connections), a private
control server on a Unix socket for the supervisor (PUT /table, GET /stats,
GET /healthz), and the graceful shutdown on SIGTERM: stop accepting, close
idle connections, let in-flight requests finish within `shutdown_timeout`.
Run as `python -m proxy.worker SETTINGS_JSON INDEX CONTROL_SOCKET [TABLE_JSON_FILE]`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from aiohttp import web

from proxy.server import Proxy
from proxy.settings import ProxySettings, parse_hostport
from proxy.table import Table, TableError, table_from_json

log = logging.getLogger("gantry.proxy.worker")

SWEEP_INTERVAL = 0.25


def listen_socket(address: str) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, shared by all workers."""
    host, port = parse_hostport(address, "--listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def control_app(proxy: Proxy, index: int) -> web.Application:
    async def put_table(request: web.Request) -> web.Response:
        try:
            table = table_from_json(await request.read())
        except TableError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        proxy.set_table(table)
        return web.Response(text="ok\n")

    async def stats(request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "index": index,
            "pid": os.getpid(),
            "metrics": proxy.metrics.snapshot(),
            "inflight": dict(proxy.inflight),
            "ejected": sorted(proxy.outliers.ejected),
            "connections": len(proxy.clients),
            "table_version": proxy.table.version,
        }
        return web.json_response(body)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_put("/table", put_table)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    return app


async def _sweeper(proxy: Proxy) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        proxy.sweep()


async def run_worker(
    settings: ProxySettings, index: int, control_path: str, table: Table | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    seed = settings.seed + index if settings.seed else None
    proxy = Proxy(settings, seed=seed)
    if table is not None:
        proxy.set_table(table)
    server = await loop.create_server(proxy.new_connection, sock=listen_socket(settings.listen))
    runner = web.AppRunner(control_app(proxy, index), access_log=None)
    await runner.setup()
    await web.UnixSite(runner, control_path).start()
    sweeper = asyncio.create_task(_sweeper(proxy), name=f"proxy-worker{index}-sweep")
    # Start-up objects (modules, aiohttp) never die: keep the cyclic GC from walking them
    # on the request path (full collections were multi-ms latency spikes). Requests make
    # few cycles; collect young objects less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    try:
        await stop.wait()
    finally:
        # Ordered shutdown: stop accepting, drain, then the control server.
        server.close()
        proxy.close_idle()
        deadline = loop.time() + settings.shutdown_timeout
        while proxy.clients and loop.time() < deadline:  # noqa: ASYNC110 - polls a set
            await asyncio.sleep(0.05)
        for client in list(proxy.clients):
            client._abort()
        for task in list(proxy.connecting):
            task.cancel()
        proxy.pool.close_all()
        sweeper.cancel()
        await asyncio.gather(sweeper, *proxy.connecting, return_exceptions=True)
        await runner.cleanup()


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s proxy-worker{argv[1]} %(levelname)s %(message)s"
    )
    raw = json.loads(argv[0])
    raw["controller"] = tuple(raw.get("controller", ()))
    settings = ProxySettings(**raw)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run  # type: ignore[assignment]
    try:
        table = None
        if len(argv) > 3:
            with open(argv[3], "rb") as f:
                table = table_from_json(f.read())
        runner(run_worker(settings, int(argv[1]), argv[2], table))
    except (OSError, TableError) as exc:
        print(f"proxy worker {argv[1]}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
