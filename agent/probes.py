"""Readiness and liveness probes: HTTP, TCP and exec, with the manifest's timings.

`ProbeSpec` is the probe as plain data (built from the PodTemplate's Probe);
`ProbeState` counts consecutive results against the thresholds (pure);
`check()` performs one probe; `Prober` runs one probe periodically as a named
task and calls back with each verdict change. The container lifecycle
decides what a verdict means (agent/lifecycle.py).

Exec probes run through the runtime's `exec(container_id, argv, timeout)`:
inside the container's namespaces and cgroups, with its capabilities,
seccomp filter, user, env and cwd (as `runc exec` / `docker exec` do).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import aiohttp

from gantry.v1 import types_pb2


class ProbeKind(enum.StrEnum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"


class ProbeError(ValueError):
    """A probe definition that cannot be used (names the field)."""


@dataclass(frozen=True)
class ProbeSpec:
    kind: ProbeKind
    port: int = 0
    path: str = "/"
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


def resolve_port(text: str, ports: Sequence[types_pb2.ContainerPort], where: str) -> int:
    """A probe's port: a number, or the name of one of the template's ports."""
    text = text.strip()
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    for port in ports:
        if port.name and port.name == text:
            return int(port.container_port)
    raise ProbeError(f"{where}.port: {text!r} is neither a port number nor a named port")


def spec_from_proto(
    probe: types_pb2.Probe, ports: Sequence[types_pb2.ContainerPort], *, where: str
) -> ProbeSpec | None:
    """The probe as plain data; None when the template defines none."""
    common = {
        "initial_delay": float(max(probe.initial_delay_seconds, 0)),
        "period": float(probe.period_seconds or 10),
        "timeout": float(probe.timeout_seconds or 1),
        "failure_threshold": probe.failure_threshold or 3,
        "success_threshold": probe.success_threshold or 1,
    }
    if probe.HasField("http_get"):
        port = resolve_port(probe.http_get.port, ports, f"{where}.httpGet")
        path = probe.http_get.path or "/"
        if not path.startswith("/"):
            raise ProbeError(f"{where}.httpGet.path: must start with '/', got {path!r}")
        return ProbeSpec(ProbeKind.HTTP, port=port, path=path, **common)  # type: ignore[arg-type]
    if probe.HasField("tcp_socket"):
        port = resolve_port(probe.tcp_socket.port, ports, f"{where}.tcpSocket")
        return ProbeSpec(ProbeKind.TCP, port=port, **common)  # type: ignore[arg-type]
    if probe.HasField("exec"):
        if not probe.exec.command:
            raise ProbeError(f"{where}.exec.command: must not be empty")
        return ProbeSpec(ProbeKind.EXEC, command=tuple(probe.exec.command), **common)  # type: ignore[arg-type]
    return None


# ---- thresholds (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class ProbeState:
    """Consecutive results and the current verdict."""

    ok: bool
    successes: int = 0
    failures: int = 0


def observe(state: ProbeState, success: bool, spec: ProbeSpec) -> tuple[ProbeState, bool]:
    """Count one result; returns the new state and whether the verdict flipped."""
    if success:
        state = replace(state, successes=state.successes + 1, failures=0)
        if not state.ok and state.successes >= spec.success_threshold:
            return replace(state, ok=True), True
        return state, False
    state = replace(state, failures=state.failures + 1, successes=0)
    if state.ok and state.failures >= spec.failure_threshold:
        return replace(state, ok=False), True
    return state, False


# ---- one check ---------------------------------------------------------------------

Execer = Callable[[Sequence[str], float], Awaitable[int]]


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str


async def http_check(session: aiohttp.ClientSession, host: str, spec: ProbeSpec) -> Result:
    url = f"http://{host}:{spec.port}{spec.path}"
    try:
        timeout = aiohttp.ClientTimeout(total=spec.timeout)
        async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
            ok = 200 <= resp.status < 400
            return Result(ok, f"GET {url} -> {resp.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Result(False, f"GET {url}: {type(exc).__name__} {exc}".strip())


async def tcp_check(host: str, spec: ProbeSpec) -> Result:
    try:
        async with asyncio.timeout(spec.timeout):
            _, writer = await asyncio.open_connection(host, spec.port)
    except (TimeoutError, OSError) as exc:
        return Result(False, f"connect {host}:{spec.port}: {type(exc).__name__} {exc}".strip())
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Result(True, f"connect {host}:{spec.port} ok")


async def exec_check(execer: Execer, spec: ProbeSpec) -> Result:
    try:
        code = await execer(spec.command, spec.timeout)
    except TimeoutError:
        return Result(False, f"exec {list(spec.command)}: timed out after {spec.timeout}s")
    except OSError as exc:
        return Result(False, f"exec {list(spec.command)}: {exc}")
    return Result(code == 0, f"exec {list(spec.command)} -> exit {code}")


# ---- the periodic runner ------------------------------------------------------------


class Prober:
    """Runs one probe every period; calls `on_change(ok, detail)` when the verdict flips.

    Readiness starts not-ok (flips to ok after successThreshold successes);
    liveness starts ok (flips to failed after failureThreshold failures).
    `on_result(ok)` sees every single result (for metrics).
    """

    def __init__(
        self,
        name: str,
        spec: ProbeSpec,
        *,
        host: str,
        initially_ok: bool,
        on_change: Callable[[bool, str], None],
        on_result: Callable[[bool], None] | None = None,
        execer: Execer | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.host = host
        self.state = ProbeState(ok=initially_ok)
        self._on_change = on_change
        self._on_result = on_result
        self._execer = execer
        self._session = session
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"probe:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check_once(self) -> Result:
        spec = self.spec
        if spec.kind is ProbeKind.TCP:
            return await tcp_check(self.host, spec)
        if spec.kind is ProbeKind.EXEC:
            if self._execer is None:
                return Result(False, "exec probe: no way to run a command in this container")
            return await exec_check(self._execer, spec)
        if self._session is not None:
            return await http_check(self._session, self.host, spec)
        async with aiohttp.ClientSession() as session:
            return await http_check(session, self.host, spec)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.spec.initial_delay)
        while True:
            began = loop.time()
            result = await self.check_once()
            if self._on_result is not None:
                self._on_result(result.ok)
            self.state, flipped = observe(self.state, result.ok, self.spec)
            if flipped:
                self._on_change(self.state.ok, result.detail)
            await asyncio.sleep(max(0.0, self.spec.period - (loop.time() - began)))
