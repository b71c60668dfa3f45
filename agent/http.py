"""The agent's small HTTP server: /metrics, /healthz, /replicas, /logs/<replica>.

GET /metrics                 Prometheus text format (the agent's own registry)
GET /healthz                 200 {"status": "ok", "node", "registered", "replicas"}
GET /replicas                200 [ReplicaStatus as JSON, ...]
GET /logs/<replica>?tail=N&follow=1
                             text/plain: the last N lines (all without tail), then,
                             with follow, whatever the container writes until the
                             client hangs up. 404 when the node has no logs for it,
                             400 for a bad parameter.

It only reads what the agent holds; it never changes a container.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf import json_format

from agent.logs import LogError
from agent.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from agent.agent import Agent

AGENT_KEY = web.AppKey("agent", object)


def _agent(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]  # type: ignore[return-value]


async def metrics(request: web.Request) -> web.Response:
    body = _agent(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    agent = _agent(request)
    return web.json_response(
        {
            "status": "ok",
            "node": agent.name,
            "registered": agent.registered.is_set(),
            "replicas": len(agent.statuses()),
        }
    )


async def replicas(request: web.Request) -> web.Response:
    statuses = [json_format.MessageToDict(s) for s in _agent(request).statuses()]
    return web.json_response(statuses)


def _tail_param(request: web.Request) -> int | None:
    raw = request.query.get("tail", "")
    if raw in ("", "all", "-1"):
        return None
    if not raw.isdigit():
        raise web.HTTPBadRequest(text=f"tail: expected a number of lines, got {raw!r}\n")
    return int(raw)


def _follow_param(request: web.Request) -> bool:
    return request.query.get("follow", "").lower() in ("1", "true", "yes")


async def logs(request: web.Request) -> web.StreamResponse:
    store = _agent(request).logs
    replica = request.match_info["replica"]
    lines = _tail_param(request)
    try:
        if not _follow_param(request):
            body = await asyncio.to_thread(store.tail, replica, lines)
            return web.Response(body=body, content_type="text/plain")
        await asyncio.to_thread(store.tail, replica, 0)  # 404 before streaming
    except LogError as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        async for chunk in store.follow(replica, lines=lines):
            await resp.write(chunk)
    return resp


def make_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/replicas", replicas)
    app.router.add_get("/logs/{replica}", logs)
    return app


async def start(agent: Agent, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the agent's app; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(make_app(agent), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return runner, bound
