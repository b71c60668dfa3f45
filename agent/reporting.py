"""Status reporting: coalesced ReportStatus calls to the leading controller.

Owns `Reporter` (the latest status per container, sent in one batch and
resent after a failure) and `unary`, the helper that turns a Nodes call
into a function for `LeaderChannel.call` (the agent also uses it for
Register and Heartbeat).

It does not compute statuses (the workers and the agent hand them in) and
never drops a status it has not sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from agent.metrics import AgentMetrics
from gantry.client import ControllerError, LeaderChannel
from gantry.v1 import nodes_pb2, nodes_pb2_grpc

log = logging.getLogger("gantry.agent")


def unary(method: str, request: Any, time_limit: float) -> Callable[[grpc.aio.Channel], Any]:
    """A Nodes call for LeaderChannel.call: fn(channel) -> awaitable response."""

    def call(ch: grpc.aio.Channel) -> Any:
        return getattr(nodes_pb2_grpc.NodesStub(ch), method)(request, timeout=time_limit)

    return call


# ---- status reporting -------------------------------------------------------------------


class Reporter:
    """Coalesces status changes and sends them in one ReportStatus; retries on failure."""

    def __init__(self, node: str, channel: LeaderChannel, metrics: AgentMetrics) -> None:
        self.node = node
        self.channel = channel
        self.metrics = metrics
        self._pending: dict[str, nodes_pb2.ReplicaStatus] = {}
        self._wake = asyncio.Event()
        self.sent = 0

    def update(self, key: str, status: nodes_pb2.ReplicaStatus) -> None:
        self._pending[key] = status
        self._wake.set()

    def idle(self) -> bool:
        return not self._pending

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if self._pending:
                await asyncio.sleep(0.5)
                self._wake.set()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        req = nodes_pb2.StatusReport(node=self.node, replicas=list(batch.values()))
        try:
            await self.channel.call(unary("ReportStatus", req, 5.0), deadline=5)
            self.sent += 1
        except ControllerError as exc:
            self.metrics.report_failures.inc()
            log.warning("status report failed (%s); will resend", exc)
            for key, status in batch.items():
                self._pending.setdefault(key, status)
