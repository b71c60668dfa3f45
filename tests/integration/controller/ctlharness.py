"""Helpers for the controller's integration tests: controller processes, fake agents, polling."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakeagent import FakeAgent

from gantry import procs
from gantry.client import LeaderChannel

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Ctl:
    name: str
    address: str
    metrics: str
    argv: list[str]
    log: Path
    svc: procs.Service | None = None

    def kill9(self) -> None:
        assert self.svc is not None
        os.killpg(self.svc.pid, signal.SIGKILL)
        self.svc.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop(timeout=10)

    def start(self) -> None:
        self.svc = procs.spawn(
            self.name, self.argv, log=self.log, health_url=f"http://{self.metrics}/metrics",
            cwd=ROOT, timeout=30,
        )  # fmt: skip


class Fleet:
    """Fake agents and client channels owned by one test; close them before the test ends."""

    def __init__(self) -> None:
        self.agents: list[FakeAgent] = []
        self.channels: list[LeaderChannel] = []

    def agent(self, name: str, controllers: list[str], **kw: Any) -> FakeAgent:
        agent = FakeAgent(name, controllers, **kw)
        agent.start()
        self.agents.append(agent)
        return agent

    def client(self, addresses: list[str]) -> LeaderChannel:
        self.channels.append(LeaderChannel(addresses))
        return self.channels[-1]

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for a in self.agents:
            await a.close()
        for c in self.channels:
            await c.close()


async def wait_for(
    cond: Callable[[], Awaitable[Any]], *, deadline: float = 30.0, what: str = ""
) -> Any:
    """Poll cond() until it returns something truthy; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: Any = None
    while loop.time() < end:
        try:
            last = await cond()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        if last and not isinstance(last, Exception):
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {deadline:.0f}s waiting for {what or cond}: last {last!r}")
