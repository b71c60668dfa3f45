"""The node agent: registers its node, runs what the controller assigns, reports back.

Owns the `Agent`, which ties the pieces together: the replica workers
(agent/worker.py, one per replica instance), the provisioner
(agent/provision.py) and the status reporter (agent/reporting.py).
`Agent.run` owns the long-lived tasks: heartbeat (its own task, so a busy
agent keeps its lease), the assignments stream (reconnects, follows the
leader; each set is applied to the workers), the status reporter
(coalesces changes, resends on failure), the worker reaper and the log
capper, and shuts them down in order. After a restart of the agent it
adopts containers still running, using its per-container state files,
before it registers.

It does not decide anything the lifecycle decides, and it never stops
containers on its own exit unless told to (`stop_containers_on_exit`).
Names other code imports from here (the provisioning types, `image_ref`,
`spec_options`, `container_id_for`, ...) are re-exported from their modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format

from agent import lifecycle as lc
from agent import probes
from agent.logs import LogStore
from agent.metrics import AgentMetrics
from agent.provision import (
    HostProvisioner,
    PortMap,
    Prepared,
    Provisioner,
    image_ref,
    make_provisioner,
    parse_user,
    spec_options,
)
from agent.reporting import Reporter, unary
from agent.runtime.base import Runtime, RuntimeError_, Status
from agent.settings import AgentSettings, agent_url, capacity, node_name, parse_labels
from agent.worker import ReplicaWorker, Saved, container_id_for, describe, load_state
from gantry.client import ControllerError, LeaderChannel
from gantry.v1 import nodes_pb2, nodes_pb2_grpc, types_pb2

__all__ = [
    "Agent",
    "HostProvisioner",
    "PortMap",
    "Prepared",
    "Provisioner",
    "ReplicaWorker",
    "Reporter",
    "container_id_for",
    "image_ref",
    "make_provisioner",
    "parse_user",
    "spec_options",
]

log = logging.getLogger("gantry.agent")


# ---- the agent ------------------------------------------------------------------------------


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        runtime: Runtime,
        provisioner: Provisioner,
        channel: LeaderChannel | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.name = node_name(settings)
        self.runtime = runtime
        self.provisioner = provisioner
        self.channel = channel or LeaderChannel(settings.controller)
        self.metrics = metrics or AgentMetrics()
        self.logs = LogStore(settings.state_dir / "logs", max_bytes=settings.log_max_bytes)
        self.reporter = Reporter(self.name, self.channel, self.metrics)
        self.workers: dict[str, ReplicaWorker] = {}
        self.max_epoch: dict[str, int] = {}
        self.registered = asyncio.Event()
        self.bound_port = 0
        self.heartbeat_interval = settings.heartbeat_interval
        self.http_session: aiohttp.ClientSession | None = None
        self.assignment_version = -1
        self._reported_gone: set[str] = set()
        self._reregister = asyncio.Event()

    # -- paths --
    def state_path(self, cid: str) -> Path:
        return self.settings.state_dir / "replicas" / f"{cid}.json"

    def execer(self, cid: str) -> probes.Execer:
        async def run(argv: Sequence[str], time_limit: float) -> int:
            return await self.runtime.exec(cid, argv, time_limit)

        return run

    def refresh_phase_gauge(self) -> None:
        self.metrics.set_phases(w.rec.phase for w in self.workers.values())

    # -- start-up: adoption ---
    async def adopt(self) -> list[str]:
        """Resume replicas whose containers still run; clean up the rest. Returns adopted ids."""
        (self.settings.state_dir / "replicas").mkdir(parents=True, exist_ok=True)
        files = sorted((self.settings.state_dir / "replicas").glob("*.json"))
        mine = f"{self.settings.prefix}-"
        live = {s.id: s for s in await self.runtime.list() if s.id.startswith(mine)}
        adopted: list[str] = []
        for path in files:
            try:
                saved = await asyncio.to_thread(load_state, path)
            except (OSError, ValueError, KeyError, json_format.ParseError) as exc:
                log.warning("state file %s unreadable (%s); removed", path, exc)
                path.unlink(missing_ok=True)
                continue
            state = live.pop(saved.container_id, None)
            if state is not None and state.status is Status.RUNNING:
                self._adopt_one(saved)
                adopted.append(saved.container_id)
                continue
            log.info("container %s is gone or stopped; cleaning up", saved.container_id)
            with contextlib.suppress(RuntimeError_):
                await self.runtime.delete(saved.container_id, force=True)
            await self._release_quietly(saved.container_id)
            path.unlink(missing_ok=True)
        for orphan in live:
            log.warning("container %s has no state file; removing it", orphan)
            with contextlib.suppress(RuntimeError_):
                await self.runtime.delete(orphan, force=True)
            await self._release_quietly(orphan)
        return adopted

    def _adopt_one(self, saved: Saved) -> None:
        a = saved.assignment
        worker = ReplicaWorker(self, a, restarts=saved.restarts)
        worker.prepared = saved.prepared
        worker.rec = replace(worker.rec, pulled=True, phase=lc.Phase.STARTING)
        self.workers[worker.cid] = worker
        self.max_epoch[a.replica] = max(self.max_epoch.get(a.replica, 0), a.epoch)
        worker.watch_exit()
        worker.start(lc.Adopted())
        log.info("adopted running container %s (replica %s)", worker.cid, a.replica)

    async def _release_quietly(self, cid: str) -> None:
        try:
            await self.provisioner.release(cid)
        except Exception as exc:
            log.warning("releasing %s failed: %s", cid, describe(exc))

    # -- assignments --
    def apply(self, aset: nodes_pb2.AssignmentSet) -> None:
        """Make the node's workers match the full desired set."""
        self.metrics.assignment_sets.inc()
        self.assignment_version = aset.version
        for a in aset.assignments:
            self.max_epoch[a.replica] = max(self.max_epoch.get(a.replica, 0), a.epoch)
        desired = {
            (a.replica, a.epoch): a
            for a in aset.assignments
            if a.epoch >= self.max_epoch.get(a.replica, 0)
        }
        for worker in list(self.workers.values()):
            a = desired.get(worker.key)
            if a is None:
                newer = self.max_epoch.get(worker.key[0], 0) > worker.key[1]
                reason = "Superseded" if newer else "Removed"
                drain = 0.0 if newer else worker.assignment.drain_seconds
                worker.post(lc.StopRequested(drain, reason=reason))
            elif a.desired == "drain":
                worker.post(lc.StopRequested(a.drain_seconds, reason="Drain"))
            else:
                worker.assignment = a
        running = {w.key for w in self.workers.values()}
        for key, a in desired.items():
            if key in running:
                continue
            if a.desired == "drain":
                self._report_gone(a)
                continue
            worker = ReplicaWorker(self, a)
            self.workers[worker.cid] = worker
            worker.start(lc.Assigned())
        self.refresh_phase_gauge()

    def _report_gone(self, a: nodes_pb2.Assignment) -> None:
        """A drain for a replica this node no longer runs: say it is stopped (once)."""
        cid = container_id_for(self.settings.prefix, a.replica, a.epoch)
        if cid in self._reported_gone:
            return
        self._reported_gone.add(cid)
        status = nodes_pb2.ReplicaStatus(
            replica=a.replica,
            epoch=a.epoch,
            phase="Stopped",
            reason="NotRunning",
            container_id=cid,
            deployment=a.deployment,
        )
        self.reporter.update(cid, status)

    def statuses(self) -> list[nodes_pb2.ReplicaStatus]:
        return [w.status() for w in self.workers.values() if not w.done.is_set()]

    # -- controller calls --
    def _node(self) -> types_pb2.Node:
        cpu, mem, pods = capacity(self.settings)
        return types_pb2.Node(
            name=self.name,
            address=self.settings.address,
            capacity=types_pb2.Capacity(cpu_millis=cpu, memory_bytes=mem, pods=pods),
            labels=parse_labels(self.settings.labels),
            agent_url=agent_url(self.settings, self.bound_port),
            subnet=self.settings.subnet,
        )

    async def register(self) -> None:
        """Register (with the replicas already running) until a controller accepts."""
        while True:
            req = nodes_pb2.RegisterRequest(node=self._node(), running=self.statuses())
            try:
                resp = await self.channel.call(unary("Register", req, 5.0), deadline=10)
            except ControllerError as exc:
                log.warning("register failed: %s; retrying", exc)
                await asyncio.sleep(1.0)
                continue
            if resp.heartbeat_interval_seconds > 0:
                self.heartbeat_interval = resp.heartbeat_interval_seconds
            self.registered.set()
            log.info("registered node %s with %d running", self.name, len(req.running))
            return

    async def heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        req = nodes_pb2.HeartbeatRequest(node=self.name)
        while True:
            began = loop.time()
            limit = max(1.0, 2 * self.heartbeat_interval)
            try:
                resp = await self.channel.call(unary("Heartbeat", req, limit), deadline=limit)
                if not resp.known:
                    log.warning("controller does not know node %s; registering again", self.name)
                    self.registered.clear()
                    await self.register()
            except ControllerError as exc:
                self.metrics.heartbeat_failures.inc()
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(max(0.0, self.heartbeat_interval - (loop.time() - began)))

    async def assignments_loop(self) -> None:
        req = nodes_pb2.AssignmentsRequest(node=self.name)
        while True:
            try:
                address = await self.channel.find_leader(deadline=5.0)
                stub = nodes_pb2_grpc.NodesStub(self.channel.channel(address))
                async for aset in stub.Assignments(req):
                    self.apply(aset)
                log.info("assignments stream from %s ended; reconnecting", address)
            except ControllerError as exc:
                log.warning("no controller for assignments: %s", exc)
            except grpc.aio.AioRpcError as exc:
                log.warning("assignments stream: %s %s", exc.code().name, exc.details())
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    await self.register()
            await asyncio.sleep(0.5)

    async def reaper_loop(self) -> None:
        """Drop workers whose lifecycle ended (FORGET)."""
        while True:
            await asyncio.sleep(0.5)
            for cid, worker in list(self.workers.items()):
                if worker.done.is_set() and worker.task is not None and worker.task.done():
                    del self.workers[cid]
            self.refresh_phase_gauge()

    async def log_capper_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self.logs.rotate_all)
            except OSError as exc:
                log.warning("log rotation failed: %s", exc)

    # -- the whole agent --
    async def run(
        self, stop: asyncio.Event, *, ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Adopt, register, run until `stop` is set, then shut down in order."""
        self.http_session = aiohttp.ClientSession()
        tasks: list[asyncio.Task[None]] = []
        try:
            adopted = await self.adopt()
            log.info("adopted %d running container(s)", len(adopted))
            if ready is not None:
                await ready()
            tasks.append(asyncio.create_task(self.reporter.run(), name="agent:reporter"))
            registering = asyncio.create_task(self.register(), name="agent:register")
            await _first(registering, stop)
            if registering.done():
                tasks.append(asyncio.create_task(self.heartbeat_loop(), name="agent:heartbeat"))
                tasks.append(asyncio.create_task(self.assignments_loop(), name="agent:assignments"))
                tasks.append(asyncio.create_task(self.reaper_loop(), name="agent:reaper"))
                tasks.append(asyncio.create_task(self.log_capper_loop(), name="agent:logcap"))
                await stop.wait()
            else:
                registering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registering
        finally:
            await self.shutdown(tasks)

    async def shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        by_name = {t.get_name(): t for t in tasks}
        for name in ("agent:assignments", "agent:reaper", "agent:logcap"):
            await _cancel(by_name.get(name))
        if self.settings.stop_containers_on_exit:
            await self.stop_all()
        for worker in list(self.workers.values()):
            await worker.detach()
        with contextlib.suppress(TimeoutError, ControllerError):
            async with asyncio.timeout(3):
                await self.reporter.flush()
        await _cancel(by_name.get("agent:heartbeat"))
        await _cancel(by_name.get("agent:reporter"))
        if self.http_session is not None:
            await self.http_session.close()
        await self.channel.close()

    async def stop_all(self) -> None:
        """Stop every container now (no drain), waiting up to each grace period."""
        limit = 10.0
        for worker in self.workers.values():
            worker.post(lc.StopRequested(0.0, reason="AgentExit"))
            limit = max(limit, worker.rec.grace_seconds + worker.rec.timing.kill_timeout + 5)
        waits = [w.done.wait() for w in self.workers.values()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await asyncio.gather(*waits)


async def _first(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    waiter = asyncio.create_task(stop.wait(), name="agent:stop-wait")
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel(waiter)


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
