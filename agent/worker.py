"""One replica instance: drives the pure lifecycle and performs its actions.

Owns `ReplicaWorker` (one task per replica name + epoch): it feeds events
into `lifecycle.step` and performs the actions it returns through the
Runtime (create/start/kill/delete/wait), the Provisioner (image, bundle,
network, host ports), the probes and the status reporter. Also owns the
per-container state files (`Saved`, `save_state`, `load_state`) that let
the agent adopt a running container after a restart, and the container id
scheme (`container_id_for`).

It decides nothing the lifecycle decides, never talks to the controller
itself (statuses go through the agent's Reporter), and leaves the
container alone when it is merely detached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format

from agent import lifecycle as lc
from agent import probes
from agent.provision import PortMap, Prepared
from agent.runtime.base import ContainerIO, RuntimeError_
from gantry.v1 import nodes_pb2, types_pb2

if TYPE_CHECKING:
    from agent.agent import Agent

log = logging.getLogger("gantry.agent")

STATE_VERSION = 1


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
            return lc.PullFailed(describe(exc))
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
            return lc.CreateFailed(describe(exc))
        return lc.Created()

    async def _act_start(self) -> lc.Event:
        try:
            await self.agent.runtime.start(self.cid)
        except Exception as exc:
            return lc.StartFailed(describe(exc))
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
            log.warning("releasing %s failed: %s", self.cid, describe(exc))
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


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
