"""In-memory stand-ins for the runtime and the provisioner, for tests of OTHER code.

`FakeRuntime` implements the Runtime protocol without processes: containers
are records, `start` makes them "running", a signal makes them exit (TERM ->
143 unless the test made the container ignore it, KILL -> 137), and a test
can end one with `exit(container_id, code)`. Every call is recorded with the
loop time in `calls`, so tests can check the order and spacing of what the
agent did. `FakeProvisioner` hands out bundles, an IP (127.0.0.1 by default,
so probes reach listeners the test runs) and host ports without touching
the host. Neither is used outside tests.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import signal as signals
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.agent import PortMap, Prepared
from agent.runtime.base import (
    ContainerExists,
    ContainerIO,
    ContainerNotFound,
    ContainerState,
    Status,
)
from gantry.v1 import types_pb2


@dataclass(frozen=True)
class Call:
    at: float
    verb: str
    container_id: str
    arg: object = None


@dataclass
class _Box:
    state: ContainerState
    io: ContainerIO
    ignore_term: bool = False
    exited: asyncio.Future[int] | None = None


@dataclass
class FakeRuntime:
    name: str = "fake"
    calls: list[Call] = field(default_factory=list)
    # Containers whose id contains one of these ignore SIGTERM (need SIGKILL).
    ignore_term: set[str] = field(default_factory=set)
    # Make create/start fail for ids containing these substrings.
    fail_create: set[str] = field(default_factory=set)
    exec_codes: dict[str, int] = field(default_factory=dict)
    _boxes: dict[str, _Box] = field(default_factory=dict)
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))

    def _record(self, verb: str, cid: str, arg: object = None) -> None:
        self.calls.append(Call(asyncio.get_running_loop().time(), verb, cid, arg))

    def _box(self, cid: str) -> _Box:
        try:
            return self._boxes[cid]
        except KeyError:
            raise ContainerNotFound(f"container {cid!r} does not exist") from None

    def verbs(self, cid: str | None = None) -> builtins.list[str]:
        return [
            c.verb if c.arg is None else f"{c.verb}:{c.arg}"
            for c in self.calls
            if cid in (None, c.container_id)
        ]

    async def create(self, container_id: str, bundle: Path, io: ContainerIO) -> None:
        self._record("create", container_id)
        if any(s in container_id for s in self.fail_create):
            raise ContainerExists(f"{container_id}: create refused by the test")
        if container_id in self._boxes:
            raise ContainerExists(f"container {container_id!r} exists")
        state = ContainerState(container_id, Status.CREATED, 0, bundle)
        self._boxes[container_id] = _Box(
            state, io, ignore_term=any(s in container_id for s in self.ignore_term)
        )

    async def start(self, container_id: str) -> None:
        self._record("start", container_id)
        box = self._box(container_id)
        box.state = ContainerState(container_id, Status.RUNNING, next(self._pids), box.state.bundle)
        box.exited = asyncio.get_running_loop().create_future()
        if box.io.stdout is not None:
            with box.io.stdout.open("ab") as f:
                f.write(f"started {container_id}\n".encode())

    async def state(self, container_id: str) -> ContainerState:
        return self._box(container_id).state

    def exit(self, container_id: str, code: int) -> None:
        """End a running container with `code` (as if its process exited)."""
        box = self._box(container_id)
        if box.state.status is not Status.RUNNING:
            return
        box.state = ContainerState(container_id, Status.STOPPED, 0, box.state.bundle, code)
        if box.exited is not None and not box.exited.done():
            box.exited.set_result(code)

    async def kill(self, container_id: str, signal: int) -> None:
        self._record("kill", container_id, signals.Signals(signal).name)
        box = self._box(container_id)
        if signal == signals.SIGKILL or (signal == signals.SIGTERM and not box.ignore_term):
            self.exit(container_id, 128 + signal)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        self._record("delete", container_id)
        box = self._box(container_id)
        if box.state.status is Status.RUNNING:
            if not force:
                raise ContainerExists(f"container {container_id!r} is running")
            self.exit(container_id, 137)
        del self._boxes[container_id]

    async def run(self, container_id: str, bundle: Path, io: ContainerIO) -> int:
        await self.create(container_id, bundle, io)
        await self.start(container_id)
        return await self.wait(container_id)

    async def wait(self, container_id: str) -> int:
        box = self._box(container_id)
        if box.state.status is Status.STOPPED:
            return box.state.exit_code or 0
        assert box.exited is not None
        return await asyncio.shield(box.exited)

    async def list(self) -> list[ContainerState]:
        return [b.state for b in self._boxes.values()]

    async def exec(self, container_id: str, argv: Sequence[str], time_limit: float) -> int:
        self._record("exec", container_id, " ".join(argv))
        return self.exec_codes.get(" ".join(argv), 0)

    def running(self) -> builtins.list[str]:
        return sorted(c for c, b in self._boxes.items() if b.state.status is Status.RUNNING)


@dataclass
class FakeProvisioner:
    """Bundles in `root`, IP `ip`, host ports counting up from `first_port`."""

    root: Path
    ip: str = "127.0.0.1"
    first_port: int = 31000
    missing_images: set[str] = field(default_factory=set)
    # When set, pulls wait for it (a slow registry).
    pull_gate: asyncio.Event | None = None
    pulls: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    _ports: itertools.count[int] | None = None

    async def pull(self, image: str) -> None:
        self.pulls.append(image)
        if self.pull_gate is not None:
            await self.pull_gate.wait()
        if image in self.missing_images:
            raise LookupError(f"{image}: not found in the registry")

    async def prepare(
        self, container_id: str, template: types_pb2.PodTemplate, *, hostname: str
    ) -> Prepared:
        if self._ports is None:
            self._ports = itertools.count(self.first_port)
        bundle = self.root / container_id
        bundle.mkdir(parents=True, exist_ok=True)
        ports = tuple(PortMap(p.name, p.container_port, next(self._ports)) for p in template.ports)
        return Prepared(bundle=bundle, ip=self.ip, ports=ports)

    async def release(self, container_id: str) -> None:
        self.released.append(container_id)
