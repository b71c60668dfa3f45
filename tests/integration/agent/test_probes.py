"""Probes against real listeners: an aiohttp server, a TCP socket, a real command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web

from agent import probes
from agent.probes import ProbeKind, ProbeSpec
from gantry import procs

_releases: dict[int, asyncio.Event] = {}


def release_hung_handlers(state: dict[str, int]) -> None:
    _releases[id(state)].set()


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """An aiohttp server whose /status answers with the status in `state['code']`."""
    state = {"code": 200, "hanging": 0}
    release = asyncio.Event()
    _releases[id(state)] = release

    async def status(request: web.Request) -> web.Response:
        if state["code"] == 0:
            state["hanging"] += 1
            try:
                await release.wait()
            finally:
                state["hanging"] -= 1
        return web.Response(status=state["code"], headers={"Location": "/"})

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    port = procs.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port, state
    release.set()
    _releases.pop(id(state), None)
    await runner.cleanup()


@pytest.mark.parametrize(("code", "ok"), [(200, True), (302, True), (399, True), (404, False)])
async def test_http_status_ranges(
    http_server: tuple[int, dict[str, int]], code: int, ok: bool
) -> None:
    port, state = http_server
    state["code"] = code
    p = probes.Prober(
        "t",
        ProbeSpec(ProbeKind.HTTP, port=port, path="/status"),
        host="127.0.0.1",
        initially_ok=False,
        on_change=lambda ok, d: None,
    )
    result = await p.check_once()
    assert result.ok is ok, result.detail
    assert str(code) in result.detail


async def test_http_timeout_fails(http_server: tuple[int, dict[str, int]]) -> None:
    port, state = http_server
    state["code"] = 0  # the handler hangs
    spec = ProbeSpec(ProbeKind.HTTP, port=port, path="/status", timeout=0.3)
    p = probes.Prober("t", spec, host="127.0.0.1", initially_ok=False, on_change=lambda o, d: None)
    result = await p.check_once()
    assert not result.ok and "Timeout" in result.detail
    release_hung_handlers(state)
    await wait_for(lambda: state["hanging"] == 0)


async def test_tcp_probe_open_and_closed_port() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await probes.tcp_check("127.0.0.1", ProbeSpec(ProbeKind.TCP, port=port))).ok
    finally:
        server.close()
        await server.wait_closed()
    closed = await probes.tcp_check("127.0.0.1", ProbeSpec(ProbeKind.TCP, port=port))
    assert not closed.ok and "connect" in closed.detail


async def local_exec(argv: Sequence[str], time_limit: float) -> int:
    proc = await asyncio.create_subprocess_exec(*argv)
    try:
        async with asyncio.timeout(time_limit):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


@pytest.mark.parametrize(
    ("argv", "limit", "ok", "detail"),
    [
        (("true",), 30.0, True, "exit 0"),
        (("sh", "-c", "exit 3"), 30.0, False, "exit 3"),
        (("sleep", "30"), 1.0, False, "timed out"),
        (("/nonexistent-probe-binary",), 30.0, False, "No such file"),
    ],
)
async def test_exec_check(argv: tuple[str, ...], limit: float, ok: bool, detail: str) -> None:
    spec = ProbeSpec(ProbeKind.EXEC, command=argv, timeout=limit)
    result = await probes.exec_check(local_exec, spec)
    assert result.ok is ok and detail in result.detail


async def test_prober_readiness_flips_with_thresholds(
    http_server: tuple[int, dict[str, int]],
) -> None:
    port, state = http_server
    changes: list[bool] = []
    results: list[bool] = []
    spec = ProbeSpec(
        ProbeKind.HTTP,
        port=port,
        path="/status",
        period=0.05,
        failure_threshold=2,
        success_threshold=2,
    )
    p = probes.Prober(
        "t",
        spec,
        host="127.0.0.1",
        initially_ok=False,
        on_change=lambda ok, d: changes.append(ok),
        on_result=results.append,
    )
    p.start()
    try:
        await wait_for(lambda: changes == [True])
        state["code"] = 500
        await wait_for(lambda: changes == [True, False])
        assert False in results
    finally:
        await p.stop()


async def test_prober_respects_initial_delay() -> None:
    loop = asyncio.get_running_loop()
    seen: list[float] = []
    spec = ProbeSpec(ProbeKind.TCP, port=procs.free_port(), initial_delay=0.5, period=0.01)
    p = probes.Prober(
        "t",
        spec,
        host="127.0.0.1",
        initially_ok=True,
        on_change=lambda o, d: None,
        on_result=lambda ok: seen.append(loop.time()),
    )
    began = loop.time()
    p.start()
    try:
        await wait_for(lambda: seen)
    finally:
        await p.stop()
    assert seen[0] - began >= 0.5


async def wait_for(cond: object, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)
