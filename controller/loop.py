"""The control loop: deployment keys in, fenced etcd transactions out. Leader only.

Owns the I/O around the pure core: watch events (through the Mirror) only
enqueue deployment names; a worker takes one name at a time, reads the
deployment and its replicas fresh from etcd, converts records to the model's
frozen types (`controller.records`), asks the planner (`controller.plan.decide`)
for a plan, and writes the plan's result in transactions that compare every
record's mod_revision, the deployment's mod_revision and the leader fence. A
conflict re-queues the name with fresh state; a failed fence stops the term.

The stored rollout (/gantry/rollouts/<name>) is passed to reconcile, so a
canary's replicas are kept beside the stable set; the rollout engine plugs
in at `RolloutHook` to advance the rollout before each plan.

The record conversions and the planner live beside it and are re-exported
here, so callers keep importing them from `controller.loop`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from controller import keys
from controller.errors import Temporary
from controller.events import WARNING, Events
from controller.metrics import Metrics
from controller.model import DeploymentState, ReplicaState
from controller.plan import Decision, Placement, decide, finished_draining
from controller.records import (
    STOPPED_PHASES,
    Allocation,
    deployment_state,
    draining_record,
    new_replica_record,
    node_capacity,
    node_states,
    replica_state,
    status_of,
)
from controller.rollout import RolloutState, rollout_from_record
from controller.settings import ControllerSettings
from controller.store import Delete, Item, Json, Mirror, ModIs, Op, Put, Store
from controller.workqueue import WorkQueue

__all__ = [
    "STOPPED_PHASES",
    "Allocation",
    "Decision",
    "Loop",
    "Placement",
    "RolloutHook",
    "decide",
    "deployment_state",
    "draining_record",
    "finished_draining",
    "new_replica_record",
    "node_capacity",
    "node_states",
    "replica_state",
    "rollout_state",
    "status_of",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------ the loop


def rollout_state(rec: Json | None) -> RolloutState | None:
    """A /gantry/rollouts/<name> record as RolloutState (None if absent or unreadable)."""
    if not rec:
        return None
    try:
        return rollout_from_record(rec)
    except (ValueError, TypeError):
        log.warning("unreadable rollout record for %s: ignored", rec.get("deployment"))
        return None


class RolloutHook(Protocol):
    """Where the rollout engine plugs in: called for each deployment before planning.

    Given the fresh deployment, its replicas and the stored rollout (or None),
    it may advance the rollout (persisting it, fenced, under
    /gantry/rollouts/<name>) and returns the state reconcile should plan
    with. Canary placements take their template from
    /gantry/revisions/<name>/<canaryRevision>, which the engine writes when it
    starts a canary; Discovery reads `canaryWeight` from the rollout record.
    """

    async def before_plan(
        self,
        name: str,
        dep: DeploymentState,
        replicas: list[ReplicaState],
        stored: RolloutState | None,
        *,
        now: float,
    ) -> RolloutState | None: ...


class Loop:
    """One leader term's reconcile driver."""

    def __init__(
        self,
        store: Store,
        mirror: Mirror,
        settings: ControllerSettings,
        *,
        events: Events,
        metrics: Metrics,
        rollout: RolloutHook | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.settings = settings
        self.events = events
        self.metrics = metrics
        self.rollout = rollout
        self.clock = clock
        self.rng = rng or random.Random()
        self.queue = WorkQueue("deployments")
        self.pending: dict[str, str] = {}  # deployment -> why replicas wait unplaced
        self._place_lock = asyncio.Lock()
        self.alloc = Allocation()
        self._written: dict[str, int] = {}  # replica key -> revision of our last write

    # -- event plumbing -------------------------------------------------

    def on_change(self, key: str, value: Json | None) -> None:
        if key.startswith(keys.DEPLOYMENTS):
            self.queue.add(keys.tail(keys.DEPLOYMENTS, key))
        elif key.startswith(keys.REPLICAS):
            self._account(key, value)
            parts = keys.replica_parts(key)
            if parts:
                self.queue.add(parts[0])
        elif key.startswith((keys.NODES, keys.HEARTBEATS, keys.ROLLOUTS)):
            self.enqueue_all()
        self.metrics.queue_depth.set(self.queue.depth())

    def _account(self, key: str, value: Json | None) -> None:
        """Follow the mirror, except where it has not caught up with our own write yet."""
        written = self._written.get(key)
        if written is not None:
            if self.mirror.informers["replicas"].revision < written:
                return
            del self._written[key]
        self.alloc.set(key, value)

    def enqueue_all(self) -> None:
        names = {keys.tail(keys.DEPLOYMENTS, k) for k in self.mirror["deployments"]}
        names |= {p[0] for k in self.mirror["replicas"] if (p := keys.replica_parts(k))}
        for name in sorted(names):
            self.queue.add(name)

    async def run(self) -> None:
        """Run workers and the resync until cancelled or deposed (NotLeader)."""
        await self.mirror.wait_synced()
        for key, value in self.mirror["replicas"].items():
            self.alloc.set(key, value)
        for inf in self.mirror.informers.values():
            inf.listen(self._listener)
        try:
            self.enqueue_all()
            async with asyncio.TaskGroup() as tg:
                for i in range(max(1, self.settings.workers)):
                    tg.create_task(self.queue.worker(self.handle), name=f"reconcile-worker-{i}")
                tg.create_task(self._resync(), name="reconcile-resync")
        except* Exception as group:
            raise group.exceptions[0] from None
        finally:
            for inf in self.mirror.informers.values():
                if self._listener in inf._listeners:
                    inf._listeners.remove(self._listener)

    def _listener(self, key: str, value: Json | None) -> None:
        self.on_change(key, value)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.enqueue_all()

    # -- one key ----------------------------------------------------------

    async def handle(self, name: str) -> None:
        started = time.perf_counter()
        try:
            await self._reconcile(name)
        except Temporary:
            self.metrics.reconcile_errors.inc()
            raise
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
            self.metrics.queue_depth.set(self.queue.depth())

    async def _reconcile(self, name: str) -> None:
        now = self.clock()
        deps, rep_items, ros = await self.store.read(
            keys.deployment(name), keys.replicas(name), keys.rollout(name)
        )
        dep_item = deps[0] if deps else None
        mine = {i.value.get("name", keys.tail(keys.replicas(name), i.key)): i for i in rep_items}
        own = [replica_state(i.value) for i in mine.values()]
        dep = deployment_state(dep_item.value) if dep_item else None
        rollout = None
        if dep is not None:
            rollout = rollout_state(ros[0].value if ros else None)
            if self.rollout is not None:
                rollout = await self.rollout.before_plan(name, dep, own, rollout, now=now)
        drain_started = {
            n: float(i.value.get("drainStartedTs", now))
            for n, i in mine.items()
            if i.value.get("draining")
        }
        # One placement decision at a time, over allocations that include our own
        # not-yet-mirrored writes, so two workers never fill the same capacity twice.
        async with self._place_lock:
            alive = {keys.tail(keys.HEARTBEATS, k) for k in self.mirror["heartbeats"]}
            nodes = node_states(self.mirror["nodes"], alive, self.alloc.by_node, now=now)
            decision = decide(
                dep,
                own,
                nodes,
                now=now,
                grace=self.settings.node_grace,
                drain_timeout=self.settings.drain_seconds + 15.0,
                drain_started=drain_started,
                rng=self.rng,
                rollout=rollout,
            )
            await self._write(name, dep_item, mine, decision, now=now)
        self.metrics.replicas.set(len(self.mirror["replicas"]))
        if dep_item is not None:  # a deleted deployment's events went with it
            await self._explain(name, decision)
        if decision.requeue_at is not None:
            self.queue.add_after(name, max(0.05, decision.requeue_at - self.clock()))

    async def _write(
        self,
        name: str,
        dep_item: Item | None,
        mine: dict[str, Item],
        d: Decision,
        *,
        now: float,
    ) -> None:
        fence = self.store.fence
        epoch = fence.create_revision if fence else 0
        pairs: list[tuple[ModIs | None, Op]] = []
        for rname in d.remove:
            item = mine[rname]
            pairs.append((ModIs(item.key, item.mod_revision), Delete(item.key)))
        for rname in d.drain:
            item = mine[rname]
            rec = draining_record(item.value, now=now, drain_seconds=self.settings.drain_seconds)
            pairs.append((ModIs(item.key, item.mod_revision), Put(item.key, rec)))
        templates = await self._templates(name, dep_item, {p.revision for p in d.place})
        for p in d.place:
            key = keys.replica(name, p.name)
            rec = new_replica_record(
                p,
                templates[p.revision],
                epoch=epoch,
                now=now,
                drain_seconds=self.settings.drain_seconds,
            )
            pairs.append((ModIs(key, 0), Put(key, rec)))
        self.metrics.schedule_attempts.inc(len(d.place) + d.unplaced)
        self.metrics.schedule_failures.inc(d.unplaced)
        if not pairs:
            return
        guard = ModIs(keys.deployment(name), dep_item.mod_revision if dep_item else 0)
        revision = await self.store.txn_batched([guard], pairs, size=self.settings.txn_ops)
        need = deployment_state(dep_item.value).requests if dep_item else None
        for _, op in pairs:
            if isinstance(op, Put) and need is not None and not op.value.get("draining"):
                self.alloc.put(op.key, str(op.value["node"]), need)
            else:
                self.alloc.set(op.key, None)
            self._written[op.key] = revision
        for p in d.place:
            log.info("placed %s on %s: %s", p.name, p.node, p.why)

    async def _templates(
        self, name: str, dep_item: Item | None, revisions: set[int]
    ) -> dict[int, Json]:
        """The pod template of each revision: the deployment's own, else its revision record."""
        dep = dep_item.value if dep_item else {}
        current = int((dep.get("status") or {}).get("revision", 1))
        out: dict[int, Json] = {current: (dep.get("spec") or {}).get("template") or {}}
        for rev in revisions - {current}:
            item = await self.store.get(keys.revision(name, rev))
            if item is None:
                raise Temporary(f"revision {rev} of {name} not found")
            out[rev] = item.value.get("template") or {}
        return out

    async def _explain(self, name: str, d: Decision) -> None:
        if d.place:
            where = ", ".join(f"{p.name} on {p.node}" for p in d.place[:5])
            more = f" (+{len(d.place) - 5} more)" if len(d.place) > 5 else ""
            await self.events.record("deployment", name, "Scheduled", f"placed {where}{more}")
        if d.drain:
            await self.events.record(
                "deployment", name, "Draining", f"draining {', '.join(d.drain[:5])}"
            )
        if d.replaced:
            await self.events.record(
                "deployment",
                name,
                "Replaced",
                f"replacing {', '.join(d.replaced[:5])}: node lost",
                type_=WARNING,
            )
        if d.unplaced:
            why = f"{d.unplaced} replica(s) pending: {d.unplaced_reason}"
            if self.pending.get(name) != why:
                await self.events.record("deployment", name, "FailedScheduling", why, type_=WARNING)
            self.pending[name] = why
        else:
            self.pending.pop(name, None)
