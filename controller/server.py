"""One controller process: the gRPC server, the mirror, the election and the leader's work.

Owns start-up and the ordered shutdown. Every controller serves Cluster,
Nodes, Discovery, grpc.health.v1 and reflection on one port (standbys
answer FAILED_PRECONDITION naming the leader) and keeps a Mirror of etcd.
While it leads, it also runs the reconcile loop and the node lifecycle;
those stop the moment leadership is lost.

Health follows etcd: the controller is SERVING only while a read of etcd
answers (checked every second), so a load balancer or `gantry status` sees
a controller cut off from its store as NOT_SERVING.

Shutdown order: health NOT_SERVING, leave the election (revoking the lease
hands over at once), stop the gRPC server with a grace period, stop the
informers, close etcd, stop /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.api import ClusterService
from controller.discovery import DiscoveryService
from controller.election import Election
from controller.errors import StoreUnavailable
from controller.events import Events
from controller.loop import Loop, RolloutHook
from controller.metrics import Metrics
from controller.nodes import NodeLifecycle
from controller.nodes_api import NodesService
from controller.rollouts import RolloutEngine
from controller.settings import ControllerSettings
from controller.store import Mirror, Store
from gantry.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    discovery_pb2,
    discovery_pb2_grpc,
    nodes_pb2,
    nodes_pb2_grpc,
)

log = logging.getLogger(__name__)

ETCD_CHECK_INTERVAL = 1.0
ETCD_CHECK_TIMEOUT = 2.0

SERVICE_NAMES = (
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
    nodes_pb2.DESCRIPTOR.services_by_name["Nodes"].full_name,
    discovery_pb2.DESCRIPTOR.services_by_name["Discovery"].full_name,
)


def health_status(etcd_answers: bool) -> Any:
    """The grpc.health.v1 status a controller reports."""
    if etcd_answers:
        return health_pb2.HealthCheckResponse.SERVING
    return health_pb2.HealthCheckResponse.NOT_SERVING


class Controller:
    def __init__(self, settings: ControllerSettings, *, rollout: RolloutHook | None = None) -> None:
        self.settings = settings
        self.store = Store(settings.etcd_endpoints)
        self.mirror = Mirror(self.store)
        self.metrics = Metrics()
        self.events = Events(self.store)
        self.election = Election(
            self.store, ident=settings.ident, address=settings.address, ttl=settings.leader_ttl
        )
        self.loop: Loop | None = None
        # Set once a new term has adopted the nodes: streams wait for it.
        self.term_ready = asyncio.Event()
        self.nodes = NodesService(
            self.store, self.mirror, self.election, settings, term_ready=self.term_ready
        )
        self.discovery = DiscoveryService(self.mirror, self.election, term_ready=self.term_ready)
        if rollout is None:
            self.rollouts: RolloutEngine | None = RolloutEngine(
                self.store, events=self.events, admin_urls=self.discovery.admin_urls
            )
            rollout = self.rollouts
        else:
            self.rollouts = None
        self.rollout = rollout
        self.cluster = ClusterService(
            self.store,
            self.mirror,
            self.election,
            events=self.events,
            pending=lambda name: self.loop.pending.get(name, "") if self.loop else "",
            heartbeats=lambda: dict(self.nodes.last_heartbeat),
            rollouts=self.rollouts,
        )
        self.health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._metrics_server: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._election_task: asyncio.Task[None] | None = None

    async def _lead(self) -> None:
        loop = Loop(
            self.store, self.mirror, self.settings, events=self.events, metrics=self.metrics,
            rollout=self.rollout,
        )  # fmt: skip
        lifecycle = NodeLifecycle(self.store, self.mirror, events=self.events, metrics=self.metrics)
        self.loop = loop
        if self.rollouts is not None:
            self.rollouts.requeue = loop.queue.add_after
        self.metrics.is_leader.set(1)
        try:
            await self.mirror.wait_synced()
            await lifecycle.adopt(self.settings.node_ttl)
            self.term_ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(loop.run(), name="reconcile-loop")
                tg.create_task(lifecycle.run(), name="node-lifecycle")
        except* Exception as group:
            raise group.exceptions[0] from None
        finally:
            self.term_ready.clear()
            self.metrics.is_leader.set(0)
            self.loop = None

    async def start(self) -> None:
        server = grpc.aio.server()
        cluster_pb2_grpc.add_ClusterServicer_to_server(self.cluster, server)
        nodes_pb2_grpc.add_NodesServicer_to_server(self.nodes, server)
        discovery_pb2_grpc.add_DiscoveryServicer_to_server(self.discovery, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            self.port = server.add_insecure_port(self.settings.listen)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise OSError(
                f"--listen {self.settings.listen}: cannot bind (in use, or not host:port)"
            )
        await server.start()
        self.server = server
        if self.settings.metrics:
            try:
                self._metrics_server = self.metrics.serve(self.settings.metrics)
            except (OSError, ValueError) as exc:
                raise OSError(f"--metrics {self.settings.metrics}: cannot serve: {exc}") from None
        self._tasks = [
            *self.mirror.tasks(),
            asyncio.create_task(self._follow_etcd(), name="etcd-health"),
        ]
        self._election_task = asyncio.create_task(self.election.run(self._lead), name="election")
        log.info("controller %s serving on %s", self.settings.ident, self.settings.listen)

    async def _etcd_answers(self) -> bool:
        try:
            await asyncio.wait_for(self.store.revision(), ETCD_CHECK_TIMEOUT)
        except (StoreUnavailable, TimeoutError):
            return False
        return True

    async def _follow_etcd(self) -> None:
        """Keep grpc.health.v1 in step with whether etcd answers; log each change."""
        serving: bool | None = None
        while True:
            ok = await self._etcd_answers()
            if ok != serving:
                if serving is not None:
                    log.warning("etcd %s", "answers again" if ok else "does not answer")
                await self._set_all(health_status(ok))
                serving = ok
            await asyncio.sleep(ETCD_CHECK_INTERVAL)

    async def _set_all(self, status: Any) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._set_health(name, status)

    async def _set_health(self, name: str, status: Any) -> None:
        result = self.health.set(name, status)
        if asyncio.iscoroutine(result):
            await result

    async def stop(self, grace: float = 3.0) -> None:
        for task in self._tasks:  # the etcd check first: it must not flip health back
            if task.get_name() == "etcd-health":
                task.cancel()
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.election.resign()
        if self._election_task is not None:
            self._election_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._election_task, grace)
        if self.server is not None:
            await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.rollouts is not None:
            await self.rollouts.close()
        await self.store.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
