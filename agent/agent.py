"""The node agent: registers its node, runs what the controller assigns, reports back.

Owns the I/O around the pure lifecycle (agent/lifecycle.py): one
`ReplicaWorker` task per replica instance (replica name + epoch) feeds events
into `lifecycle.step` and performs the actions it returns through the
Runtime (create/start/kill/delete/wait), the Provisioner (image, bundle,
network, host ports), the probes and the status reporter. `Agent.run` owns
the long-lived tasks: heartbeat (its own task, so a busy agent keeps its
lease), the assignments stream (reconnects, follows the leader), the
status reporter (coalesces changes, resends on failure) and the log
capper. After a restart of the agent it adopts containers still running,
using its per-container state files, before it registers.

It does not decide anything the lifecycle decides, and it never stops
containers on its own exit unless told to (`stop_containers_on_exit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import grpc
from google.protobuf import json_format

from agent import lifecycle as lc
from agent import probes
from agent.logs import LogStore
from agent.metrics import AgentMetrics
from agent.runtime.base import ContainerIO, Runtime, RuntimeError_, Status
from agent.settings import AgentSettings, agent_url, capacity, node_name, parse_labels
from gantry.client import ControllerError, LeaderChannel
from gantry.v1 import nodes_pb2, nodes_pb2_grpc, types_pb2

log = logging.getLogger("gantry.agent")

STATE_VERSION = 1


# ---- the provisioning seam -------------------------------------------------------


@dataclass(frozen=True)
class PortMap:
    name: str
    container_port: int
    host_port: int


@dataclass(frozen=True)
class Prepared:
    """A container's bundle and network, ready for runtime.create."""

    bundle: Path
    ip: str
    ports: tuple[PortMap, ...] = ()


class Provisioner(Protocol):
    """Images, bundles and networks: everything a container needs besides the runtime."""

    async def pull(self, image: str) -> None:
        """Make the image present locally (pull it when missing)."""
        ...

    async def prepare(
        self, container_id: str, template: types_pb2.PodTemplate, *, hostname: str
    ) -> Prepared:
        """Build the bundle and the network (netns, veth, IP, published ports)."""
        ...

    async def release(self, container_id: str) -> None:
        """Remove the container's network and bundle; harmless when already gone."""
        ...


# ---- per-container state files ---------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    container_id: str
    assignment: nodes_pb2.Assignment
    prepared: Prepared
    restarts: int


def save_state(path: Path, saved: Saved) -> None:
    doc = {
        "version": STATE_VERSION,
        "container_id": saved.container_id,
        "assignment": json_format.MessageToDict(saved.assignment),
        "bundle": str(saved.prepared.bundle),
        "ip": saved.prepared.ip,
        "ports": [[p.name, p.container_port, p.host_port] for p in saved.prepared.ports],
        "restarts": saved.restarts,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def load_state(path: Path) -> Saved:
    doc = json.loads(path.read_text())
    assignment = json_format.ParseDict(doc["assignment"], nodes_pb2.Assignment())
    prepared = Prepared(
        Path(doc["bundle"]),
        doc["ip"],
        tuple(PortMap(n, int(c), int(h)) for n, c, h in doc["ports"]),
    )
    return Saved(doc["container_id"], assignment, prepared, int(doc.get("restarts", 0)))


def container_id_for(prefix: str, replica: str, epoch: int) -> str:
    return f"{prefix}-{replica}-{epoch}"


def _unary(method: str, request: Any, time_limit: float) -> Callable[[grpc.aio.Channel], Any]:
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
            await self.channel.call(_unary("ReportStatus", req, 5.0), deadline=5)
            self.sent += 1
        except ControllerError as exc:
            self.metrics.report_failures.inc()
            log.warning("status report failed (%s); will resend", exc)
            for key, status in batch.items():
                self._pending.setdefault(key, status)


# ---- one replica instance -------------------------------------------------------------------

Post = Callable[[lc.Event], None]


class ReplicaWorker:
    """Drives one replica instance through the lifecycle; performs its actions."""

    def __init__(self, agent: Agent, assignment: nodes_pb2.Assignment, *, restarts: int = 0):
        self.agent = agent
        self.assignment = assignment
        self.cid = container_id_for(agent.settings.prefix, assignment.replica, assignment.epoch)
        s = agent.settings
        t = assignment.template
        grace = float(t.termination_grace_period_seconds or s.termination_grace_seconds)
        timing = lc.Timing(s.backoff_base, s.backoff_cap, s.backoff_reset)
        self.invalid = ""
        try:
            policy = lc.RestartPolicy.parse(t.restart_policy)
        except ValueError as exc:
            policy, self.invalid = lc.RestartPolicy.NEVER, str(exc)
        self.rec = lc.Replica(
            assignment.replica,
            assignment.epoch,
            policy=policy,
            grace_seconds=grace,
            timing=timing,
            restarts=restarts,
        )
        self.prepared: Prepared | None = None
        self.queue: asyncio.Queue[lc.Event] = asyncio.Queue()
        self.probers: list[probes.Prober] = []
        self.waiter: asyncio.Task[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self._assigned_at = 0.0
        self._create_began = 0.0

    # -- plumbing --
    @property
    def key(self) -> tuple[str, int]:
        return (self.assignment.replica, self.assignment.epoch)

    def post(self, event: lc.Event) -> None:
        self.queue.put_nowait(event)

    def start(self, first: lc.Event) -> None:
        self._assigned_at = self._now()
        if self.invalid:
            self.rec = replace(
                self.rec, phase=lc.Phase.FAILED, reason="InvalidTemplate", message=self.invalid
            )
            self.report()
        else:
            self.post(first)
        self.task = asyncio.create_task(self._loop(), name=f"replica:{self.cid}")

    async def detach(self) -> None:
        """Stop driving this replica without touching its container."""
        for task in (self.task, self.waiter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stop_probes()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _loop(self) -> None:
        while not self.done.is_set():
            deadline = lc.next_deadline(self.rec)
            try:
                if deadline is None:
                    event = await self.queue.get()
                else:
                    async with asyncio.timeout(max(0.0, deadline - self._now())):
                        event = await self.queue.get()
            except TimeoutError:
                event = lc.Tick()
            await self._handle(event)

    async def _handle(self, event: lc.Event) -> None:
        pending: list[lc.Event] = [event]
        while pending:
            before = self.rec
            self.rec, actions = lc.step(self.rec, pending.pop(0), self._now())
            if self.rec.restarts > before.restarts:
                self.agent.metrics.restarts.inc()
            if self.rec.phase != before.phase:
                log.info(
                    "replica %s epoch %d: %s -> %s %s",
                    self.rec.name,
                    self.rec.epoch,
                    before.phase,
                    self.rec.phase,
                    self.rec.reason,
                )
            for act in actions:
                follow = await self._do(act)
                if follow is not None:
                    pending.append(follow)
            if actions:
                self.agent.refresh_phase_gauge()

    # -- actions --
    async def _do(self, act: lc.Act) -> lc.Event | None:
        handler = getattr(self, f"_act_{act.value}")
        try:
            result: lc.Event | None = await handler()
        except Exception:  # a bug must not leave the replica without a driver
            log.exception("replica %s: action %s failed", self.rec.name, act.value)
            return None
        return result

    async def _act_pull(self) -> lc.Event:
        try:
            await self.agent.provisioner.pull(self.assignment.template.image)
        except Exception as exc:  # any failure backs off; the message tells why
            return lc.PullFailed(_describe(exc))
        return lc.Pulled()

    async def _act_create(self) -> lc.Event:
        self._create_began = self._now()
        agent = self.agent
        try:
            log_path = await asyncio.to_thread(agent.logs.prepare, self.assignment.replica)
            self.prepared = await agent.provisioner.prepare(
                self.cid, self.assignment.template, hostname=self.assignment.replica
            )
            io = ContainerIO(stdout=log_path, stderr=log_path)
            await agent.runtime.create(self.cid, self.prepared.bundle, io)
            await asyncio.to_thread(self._save)
        except Exception as exc:
            return lc.CreateFailed(_describe(exc))
        return lc.Created()

    async def _act_start(self) -> lc.Event:
        try:
            await self.agent.runtime.start(self.cid)
        except Exception as exc:
            return lc.StartFailed(_describe(exc))
        now = self._now()
        self.agent.metrics.start_latency.observe(now - self._create_began)
        self.agent.metrics.assign_to_running.observe(now - self._assigned_at)
        self.watch_exit()
        return lc.Started()

    def watch_exit(self) -> None:
        self.waiter = asyncio.create_task(self._wait_exit(), name=f"wait:{self.cid}")

    async def _wait_exit(self) -> None:
        try:
            code = await self.agent.runtime.wait(self.cid)
        except RuntimeError_ as exc:
            log.warning("waiting for %s failed: %s; assuming it exited", self.cid, exc)
            code = 255
        self.post(lc.Exited(code))

    async def _act_start_probes(self) -> None:
        t = self.assignment.template
        host = self.prepared.ip if self.prepared else "127.0.0.1"
        agent = self.agent
        for kind, probe, initially in (
            ("readiness", t.readiness_probe, False),
            ("liveness", t.liveness_probe, True),
        ):
            try:
                spec = probes.spec_from_proto(probe, t.ports, where=f"{kind}Probe")
            except probes.ProbeError as exc:
                log.warning("replica %s: %s; probe ignored", self.rec.name, exc)
                spec = None
            if spec is None:
                if kind == "readiness":
                    self.post(lc.Readiness(True))
                continue
            self.probers.append(
                probes.Prober(
                    f"{kind}:{self.cid}",
                    spec,
                    host=host,
                    initially_ok=initially,
                    on_change=self._on_probe(kind),
                    on_result=self._on_probe_result(kind, spec.kind.value),
                    execer=agent.execer(self.cid),
                    session=agent.http_session,
                )
            )
        for prober in self.probers:
            prober.start()

    def _on_probe(self, kind: str) -> Callable[[bool, str], None]:
        def changed(ok: bool, detail: str) -> None:
            log.info("replica %s %s probe: %s (%s)", self.rec.name, kind, ok, detail)
            if kind == "readiness":
                self.post(lc.Readiness(ok))
            elif not ok:
                self.post(lc.LivenessFailed(detail))

        return changed

    def _on_probe_result(self, kind: str, probe_kind: str) -> Callable[[bool], None]:
        def result(ok: bool) -> None:
            self.agent.metrics.probe_checks.labels(probe=kind, kind=probe_kind).inc()
            if not ok:
                self.agent.metrics.probe_failures.labels(probe=kind, kind=probe_kind).inc()

        return result

    async def _stop_probes(self) -> None:
        probers, self.probers = self.probers, []
        for prober in probers:
            await prober.stop()

    async def _act_stop_probes(self) -> None:
        await self._stop_probes()

    async def _signal(self, sig: int) -> None:
        try:
            await self.agent.runtime.kill(self.cid, sig)
        except RuntimeError_ as exc:
            log.warning("signal %s to %s: %s", signal.Signals(sig).name, self.cid, exc)

    async def _act_signal_term(self) -> None:
        await self._signal(signal.SIGTERM)

    async def _act_signal_kill(self) -> None:
        await self._signal(signal.SIGKILL)

    async def _act_cleanup(self) -> None:
        if self.waiter is not None:
            self.waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.waiter
            self.waiter = None
        agent = self.agent
        with contextlib.suppress(RuntimeError_):
            await agent.runtime.delete(self.cid, force=True)
        try:
            await agent.provisioner.release(self.cid)
        except Exception as exc:
            log.warning("releasing %s failed: %s", self.cid, _describe(exc))
        await asyncio.to_thread(agent.state_path(self.cid).unlink, missing_ok=True)

    async def _act_report(self) -> None:
        self.report()

    async def _act_forget(self) -> None:
        self.done.set()

    # -- status --
    def report(self) -> None:
        self.agent.reporter.update(self.cid, self.status())

    def status(self) -> nodes_pb2.ReplicaStatus:
        rec, p = self.rec, self.prepared
        live = rec.phase in lc.LIVE
        ports = []
        if p is not None and live:
            ports = [
                types_pb2.PortBinding(
                    name=m.name,
                    container_port=m.container_port,
                    host_port=m.host_port,
                    host_ip=self.agent.settings.address,
                )
                for m in p.ports
            ]
        return nodes_pb2.ReplicaStatus(
            replica=rec.name,
            epoch=rec.epoch,
            phase=lc.report_phase(rec),
            ready=rec.ready,
            ip=p.ip if p is not None and live else "",
            ports=ports,
            restarts=rec.restarts,
            reason=rec.reason,
            message=rec.message,
            exit_code=rec.exit_code or 0,
            container_id=self.cid,
            deployment=self.assignment.deployment,
        )

    def _save(self) -> None:
        assert self.prepared is not None
        saved = Saved(self.cid, self.assignment, self.prepared, self.rec.restarts)
        save_state(self.agent.state_path(self.cid), saved)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


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
        runtime_exec = getattr(self.runtime, "exec", None)

        async def run(argv: Sequence[str], time_limit: float) -> int:
            if runtime_exec is not None:
                code: int = await runtime_exec(cid, argv, time_limit)
                return code
            state = await self.runtime.state(cid)
            return await probes.nsenter_exec(state.pid, argv, time_limit)

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
            log.warning("releasing %s failed: %s", cid, _describe(exc))

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
                resp = await self.channel.call(_unary("Register", req, 5.0), deadline=10)
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
                resp = await self.channel.call(_unary("Heartbeat", req, limit), deadline=limit)
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


# ---- the real provisioner: images + spec builder + network ------------------------------------


def image_ref(image: str, registry: str) -> str:
    """A bare name ('web:1') is pulled from the node's registry; a full ref is kept."""
    first = image.split("/", 1)[0]
    names_registry = "/" in image and ("." in first or ":" in first or first == "localhost")
    if names_registry or not registry:
        return image
    return f"{registry}/{image}"


def parse_user(text: str) -> tuple[int, int]:
    """The image's User: 'uid[:gid]' numbers only (names need the image's passwd)."""
    if not text:
        return 0, 0
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"image user {text!r}: only numeric uid[:gid] is supported")
    return int(uid), int(gid or uid)


def spec_options(
    *,
    template: types_pb2.PodTemplate,
    image_config: dict[str, Any],
    layer_dirs: Sequence[Path],
    bundle: Path,
    hostname: str,
    netns_path: str,
) -> Any:
    """The SpecOptions for a container of `template` over an image (pure)."""
    from agent.runtime import spec
    from controller.model import parse_cpu, parse_memory

    cfg = image_config.get("config") or {}
    entrypoint = list(template.command) or list(cfg.get("Entrypoint") or [])
    cmd = list(template.args) if template.args or template.command else list(cfg.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise ValueError("template: no command, and the image defines no Entrypoint or Cmd")
    env = dict(e.split("=", 1) for e in (cfg.get("Env") or spec.DEFAULT_ENV) if "=" in e)
    env.update({e.name: e.value for e in template.env})
    uid, gid = parse_user(str(cfg.get("User") or ""))
    limits = template.resources.limits
    memory = parse_memory(limits.memory) if limits.memory else None
    cpu = parse_cpu(limits.cpu) if limits.cpu else None
    return spec.SpecOptions(
        args=tuple(argv),
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=template.working_dir or str(cfg.get("WorkingDir") or "/"),
        uid=uid,
        gid=gid,
        hostname=hostname[:63],
        rootfs=str(bundle / "rootfs"),
        overlay=spec.Overlay(
            lower=tuple(str(d) for d in reversed(layer_dirs)),
            upper=str(bundle / "upper"),
            work=str(bundle / "work"),
        ),
        netns_path=netns_path,
        memory_bytes=memory,
        cpu_quota_us=spec.cpus_to_quota(cpu / 1000) if cpu else None,
        pids_limit=1024,
    )


class HostProvisioner:
    """Images from the node's store (pulled when missing), bundles, the node network."""

    def __init__(self, settings: AgentSettings, *, images: Any, network: Any) -> None:
        self.settings = settings
        self.images = images
        self.network = network
        self.bundles = settings.state_dir / "bundles"
        lo, _, hi = settings.host_ports.partition("-")
        self.port_range = range(int(lo), int(hi or lo) + 1)
        self._next_port = self.port_range.start

    async def pull(self, image: str) -> None:
        await self.images.resolve(image_ref(image, self.settings.registry))

    def _host_ports(self, count: int) -> list[int]:
        taken = {p.host_port for a in self.network.attachments().values() for p in a.ports}
        out: list[int] = []
        for _ in range(len(self.port_range)):
            port = self._next_port
            self._next_port = port + 1 if port + 1 < self.port_range.stop else self.port_range.start
            if port not in taken and port not in out:
                out.append(port)
                if len(out) == count:
                    return out
        raise RuntimeError(f"no free host port left in {self.settings.host_ports}")

    async def prepare(
        self, container_id: str, template: types_pb2.PodTemplate, *, hostname: str
    ) -> Prepared:
        from agent import network as net
        from agent.runtime import spec

        image = await self.images.resolve(image_ref(template.image, self.settings.registry))
        bundle = self.bundles / container_id
        specs = [p for p in template.ports if p.container_port]
        host_ports = self._host_ports(len(specs)) if specs else []
        mappings = [
            net.PortMapping(h, p.container_port, (p.protocol or "tcp").lower())
            for h, p in zip(host_ports, specs, strict=True)
        ]
        att = await self.network.attach(container_id, mappings)
        try:
            opts = spec_options(
                template=template,
                image_config=image.config,
                layer_dirs=image.layer_dirs,
                bundle=bundle,
                hostname=hostname,
                netns_path=att.netns_path,
            )
            await asyncio.to_thread(_make_bundle, bundle, spec.build_spec(opts))
        except BaseException:
            await self.release(container_id)
            raise
        ports = tuple(
            PortMap(p.name, p.container_port, m.host_port)
            for p, m in zip(specs, att.ports, strict=True)
        )
        return Prepared(bundle=bundle, ip=att.ip, ports=ports)

    async def release(self, container_id: str) -> None:
        await self.network.detach(container_id)
        bundle = self.bundles / container_id
        if bundle.exists():
            await asyncio.to_thread(_remove_tree, bundle)

    async def close(self) -> None:
        await self.images.close()


def _make_bundle(bundle: Path, doc: dict[str, Any]) -> None:
    from agent.runtime import spec

    for sub in ("upper", "work"):
        (bundle / sub).mkdir(parents=True, exist_ok=True)
    spec.write_bundle(bundle, doc)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def make_provisioner(settings: AgentSettings) -> HostProvisioner:
    from agent.images.service import Images
    from agent.network import NetworkConfig, NodeNetwork

    cfg = NetworkConfig(
        state_dir=settings.state_dir / "network",
        prefix=settings.prefix,
        node_address=settings.address,
        **({"subnet": settings.subnet} if settings.subnet else {}),
    )
    network = NodeNetwork(cfg)
    await network.setup()
    # The cluster's own registry is spoken to over plain HTTP (Docker's "insecure registry").
    insecure = frozenset({settings.registry}) if settings.registry else frozenset()
    images = Images(settings.state_dir / "images", insecure=insecure)
    return HostProvisioner(settings, images=images, network=network)
