"""The one door to the controllers' gRPC services, following the leader.

Every client (CLI, agent, proxy) holds a list of controller addresses. A
standby controller answers every call except `Cluster.Leader` with
FAILED_PRECONDITION and the details `not leader; leader=<host:port>` (or
`not leader; leader=` while none is known). `LeaderChannel` finds the
leader by asking each address, keeps a channel to it, and moves on when the
leader changes or stops answering. Transport errors become `ControllerError`s
once, here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc

from gantry.v1 import cluster_pb2, cluster_pb2_grpc

T = TypeVar("T")

NOT_LEADER_PREFIX = "not leader; leader="
_LEADER_RE = re.compile(r"not leader; leader=(\S*)")

# Codes after which another controller may answer.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class ControllerError(Exception):
    """A call the controllers refused or could not answer."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class NoLeader(ControllerError):
    """No controller answered as leader before the deadline."""


def not_leader_details(leader_address: str) -> str:
    return f"{NOT_LEADER_PREFIX}{leader_address}"


def leader_hint(details: str | None) -> str | None:
    match = _LEADER_RE.search(details or "")
    return match.group(1) or None if match else None


def parse_addresses(values: Sequence[str]) -> list[str]:
    """'a:1,b:2' and ['a:1', 'b:2'] both give ['a:1', 'b:2']."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


class LeaderChannel:
    """A grpc.aio channel to whichever controller leads now."""

    def __init__(self, addresses: Sequence[str], *, call_timeout: float = 5.0) -> None:
        self.addresses = parse_addresses(addresses)
        if not self.addresses:
            raise ControllerError("no controller address given")
        self.call_timeout = call_timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._leader: str | None = None

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return self._channels[address]

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()

    async def find_leader(self, *, deadline: float = 10.0) -> str:
        """Ask each controller who leads until one says it does."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        candidates = list(self.addresses)
        while True:
            for address in ([self._leader] if self._leader else []) + candidates:
                stub = cluster_pb2_grpc.ClusterStub(self.channel(address))
                try:
                    resp = await stub.Leader(cluster_pb2.LeaderRequest(), timeout=1.0)
                except grpc.aio.AioRpcError:
                    continue
                if resp.is_leader:
                    self._leader = address
                    return address
                if resp.leader_address and resp.leader_address not in candidates:
                    candidates.append(resp.leader_address)
            self._leader = None
            if loop.time() >= end:
                raise NoLeader(f"no controller leads at {', '.join(self.addresses)}")
            await asyncio.sleep(0.2)

    async def call(
        self, fn: Callable[[grpc.aio.Channel], Awaitable[T]], *, deadline: float = 15.0
    ) -> T:
        """Run fn(channel) against the leader, re-finding it on retryable errors."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            address = self._leader or await self.find_leader(deadline=max(0.1, end - loop.time()))
            try:
                return await fn(self.channel(address))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or loop.time() >= end:
                    raise ControllerError(exc.details() or exc.code().name, exc.code()) from None
                self._leader = leader_hint(exc.details())
                await asyncio.sleep(0.1)
