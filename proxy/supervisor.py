"""The supervisor process: workers, the Discovery watch, and the admin server.

Owns the proxy's top-level `run()`: it spawns N worker processes (each binds
the listening port with SO_REUSEPORT), watches the Discovery stream and
pushes every table to every worker over its private control socket, replaces
a worker that dies, and serves the admin port:

* `/healthz` -- 200 "ok" once every worker is up;
* `/metrics` -- Prometheus text, summed over all workers;
* `/admin/table` -- the table every worker routes by, as JSON
  (`proxy.table.table_to_dict`);
* `/admin/stats` -- per deployment and track: requests, 5xx and cumulative
  latency buckets, summed over workers (format in `proxy.metrics`).

On SIGTERM: stop the watch, SIGTERM the workers (they finish in-flight
requests within `shutdown_timeout`), then stop the admin server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
from typing import Any

import aiohttp
from aiohttp import web

from proxy import metrics as pm
from proxy.discovery import DiscoveryClient
from proxy.settings import ProxySettings, parse_hostport
from proxy.table import Table, table_to_dict, table_to_json

log = logging.getLogger("gantry.proxy")


class SupervisorError(Exception):
    """The proxy cannot start: the message says what and where."""


class WorkerHandle:
    def __init__(self, index: int, control: str) -> None:
        self.index = index
        self.control = control
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self, settings: ProxySettings, table_json: bytes) -> None:
        """Spawn the worker; it starts serving with `table_json` (later ones are pushed)."""
        table_path = self.control + ".table"
        await asyncio.to_thread(_write_file, table_path, table_json)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy.worker",
            json.dumps(settings.to_dict()),
            str(self.index),
            self.control,
            table_path,
        )
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.control),
                timeout=aiohttp.ClientTimeout(total=5),
            )

    async def wait_ready(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        assert self.proc is not None and self.session is not None
        while True:
            if self.proc.returncode is not None:
                raise SupervisorError(
                    f"proxy worker {self.index} exited with {self.proc.returncode}"
                )
            try:
                async with self.session.get("http://worker/healthz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            if loop.time() > deadline:
                raise SupervisorError(f"proxy worker {self.index} did not start")
            await asyncio.sleep(0.05)

    async def push(self, data: bytes) -> bool:
        """Send the table; True once the worker routes by it."""
        assert self.session is not None
        async with self.session.put("http://worker/table", data=data) as resp:
            if resp.status != 200:
                log.warning("worker %d refused the table: %s", self.index, await resp.text())
                return False
            return True

    async def stats(self) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get("http://worker/stats") as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class Supervisor:
    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.table = Table()  # the table every live worker acknowledged
        self.latest = self.table  # the newest from Discovery, being pushed
        self.table_json = table_to_json(self.table)
        self.workers: list[WorkerHandle] = []
        self.ready = False
        self.stopping = False
        self._push_lock = asyncio.Lock()
        self.discovery: DiscoveryClient | None = None

    async def on_table(self, table: Table) -> None:
        self.latest, self.table_json = table, table_to_json(table)
        await self.push_all()

    async def push_all(self) -> None:
        """Push the latest table to every worker. /admin/table and /metrics show it
        only once every worker acknowledged it: a caller that sees version N there
        knows that requests are routed by N."""
        async with self._push_lock:
            table, data = self.latest, self.table_json
            acked = True
            for w in self.workers:
                try:
                    acked = await w.push(data) and acked
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("could not push the table to worker %d: %s", w.index, exc)
                    acked = False
            if acked:
                self.table = table

    async def collect(self) -> list[dict[str, Any]]:
        async def one(w: WorkerHandle) -> dict[str, Any] | None:
            try:
                return await w.stats()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                return None

        results = await asyncio.gather(*(one(w) for w in self.workers))
        return [r for r in results if r is not None]

    async def monitor(self) -> None:
        """Replace a worker that died (it is not supposed to)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            for w in self.workers:
                if self.stopping:
                    return
                if w.proc is not None and w.proc.returncode is not None:
                    log.warning("worker %d exited with %s; restarting", w.index, w.proc.returncode)
                    await w.start(self.settings, self.table_json)
                    try:
                        await w.wait_ready(loop.time() + 20)
                    except (SupervisorError, aiohttp.ClientError, OSError) as exc:
                        log.warning("worker %d restart failed: %s", w.index, exc)
                        continue
                    await self.push_all()

    def admin_app(self) -> web.Application:
        async def healthz(request: web.Request) -> web.Response:
            if not self.ready:
                return web.Response(status=503, text="starting\n")
            return web.Response(text="ok\n")

        async def metrics(request: web.Request) -> web.Response:
            snaps = await self.collect()
            merged = pm.merge([s["metrics"] for s in snaps])
            disc = self.discovery.state if self.discovery else None
            extra = {
                "gantry_proxy_workers": float(len(snaps)),
                "gantry_proxy_table_version": float(self.table.version),
                "gantry_proxy_discovery_connected": float(bool(disc and disc.connected_to)),
                "gantry_proxy_inflight": float(sum(sum(s["inflight"].values()) for s in snaps)),
                "gantry_proxy_ejected_endpoints": float(
                    len({k for s in snaps for k in s["ejected"]})
                ),
            }
            return web.Response(
                text=pm.prometheus_text(merged, extra=extra),
                content_type="text/plain",
                headers={"X-Content-Type-Options": "nosniff"},
            )

        async def stats(request: web.Request) -> web.Response:
            snaps = await self.collect()
            doc = pm.stats_json(pm.merge([s["metrics"] for s in snaps]), workers=len(snaps))
            doc["ejected"] = sorted({k for s in snaps for k in s["ejected"]})
            return web.json_response(doc)

        async def table(request: web.Request) -> web.Response:
            doc = table_to_dict(self.table)
            disc = self.discovery.state if self.discovery else None
            doc["discovery"] = {
                "connected_to": disc.connected_to if disc else None,
                "tables_received": disc.tables if disc else 0,
                "last_error": disc.last_error if disc else "",
            }
            return web.json_response(doc)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/admin/stats", stats)
        app.router.add_get("/admin/table", table)
        return app


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _check_listen(address: str) -> None:
    host, port = parse_hostport(address, "--listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SupervisorError(f"--listen {address}: {exc.strerror or exc}") from None


async def run(settings: ProxySettings, *, table: Table | None = None) -> None:
    """The proxy's lifetime, in order: admin, workers, discovery; reversed on SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _check_listen(settings.listen)
    admin_host, admin_port = parse_hostport(settings.admin, "--admin")
    sup = Supervisor(settings)
    if table is not None:
        sup.table = sup.latest = table
        sup.table_json = table_to_json(table)
    runner = web.AppRunner(sup.admin_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, admin_host, admin_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SupervisorError(f"--admin {settings.admin}: {exc.strerror or exc}") from None
    tasks: list[asyncio.Task[None]] = []
    with tempfile.TemporaryDirectory(prefix="gantry-proxy-") as tmp:
        try:
            sup.workers = [
                WorkerHandle(i, os.path.join(tmp, f"w{i}.sock"))
                for i in range(settings.worker_count())
            ]
            for w in sup.workers:
                await w.start(settings, sup.table_json)
            for w in sup.workers:
                await w.wait_ready(loop.time() + 30)
            await sup.push_all()
            sup.ready = True
            log.info(
                "proxy listening on %s with %d workers; admin on %s",
                settings.listen,
                len(sup.workers),
                settings.admin,
            )
            if settings.controller:
                sup.discovery = DiscoveryClient(
                    settings.controller,
                    proxy_id=settings.proxy_id or f"{socket.gethostname()}-{os.getpid()}",
                    admin_url=f"http://{settings.admin}",
                    on_table=sup.on_table,
                )
                tasks.append(asyncio.create_task(sup.discovery.run(), name="proxy-discovery"))
            tasks.append(asyncio.create_task(sup.monitor(), name="proxy-monitor"))
            await stop.wait()
        finally:
            sup.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _stop_workers(sup.workers, settings.shutdown_timeout + 5)
            await runner.cleanup()


async def _stop_workers(workers: list[WorkerHandle], grace: float) -> None:
    for w in workers:
        if w.proc is not None and w.proc.returncode is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        if w.proc is not None:
            try:
                await asyncio.wait_for(w.proc.wait(), grace)
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        await w.close()
