"""Node lifecycle: Ready while the node's liveness lease lives, NotReady the moment it goes.

Owns the status field of /gantry/nodes/<name>. The agent's heartbeats keep
a lease alive (Nodes.Heartbeat); the lease carries /gantry/heartbeats/<name>.
When etcd expires the lease the key disappears, the Mirror hears it, and this
task (leader only) writes status NotReady with `notReadySince`; the reconcile
loop replaces the node's replicas once `node_grace` has passed since then.
Discovery drops a node's endpoints as soon as its heartbeat key is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from controller import keys
from controller.errors import Conflict, Temporary
from controller.events import WARNING, Events, iso
from controller.metrics import Metrics
from controller.store import Json, Mirror, ModIs, Put, Store

log = logging.getLogger(__name__)

READY = "Ready"
NOT_READY = "NotReady"


def alive_nodes(heartbeats: Mapping[str, Any]) -> set[str]:
    return {keys.tail(keys.HEARTBEATS, k) for k in heartbeats}


def transition(rec: Json | None, *, alive: bool, now: float) -> Json | None:
    """The node record after applying liveness (None: no change needed)."""
    if rec is None:
        return None
    status = rec.get("status")
    if alive and status != READY:
        out = {k: v for k, v in rec.items() if k != "notReadySince"}
        return {**out, "status": READY}
    if not alive and status != NOT_READY:
        return {**rec, "status": NOT_READY, "notReadySince": now, "notReadyAt": iso(now)}
    return None


class NodeLifecycle:
    """Leader-only task keeping node status in step with the heartbeat leases."""

    def __init__(
        self,
        store: Store,
        mirror: Mirror,
        *,
        events: Events,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.events = events
        self.metrics = metrics
        self.clock = clock

    async def sync_once(self) -> None:
        alive = alive_nodes(self.mirror["heartbeats"])
        self.metrics.nodes_ready.set(len(alive))
        for key, rec in list(self.mirror["nodes"].items()):
            name = keys.tail(keys.NODES, key)
            now = self.clock()
            if transition(rec, alive=name in alive, now=now) is None:
                continue
            # The mirror's informers run independently: confirm liveness at the source.
            is_alive = await self.store.get(keys.heartbeat(name)) is not None

            def apply(cur: Json | None, a: bool = is_alive, t: float = now) -> Json | None:
                return transition(cur, alive=a, now=t) or cur

            new = await self.store.update(key, apply)
            status = (new or {}).get("status")
            if status == NOT_READY:
                await self.events.record(
                    "node", name, "NodeNotReady", "liveness lease expired", type_=WARNING
                )
            elif status == READY:
                await self.events.record("node", name, "NodeReady", "heartbeats resumed")

    async def adopt(self, ttl: int) -> int:
        """At the start of a term, give each node still recorded Ready a fresh lease.

        Node leases (TTL 3 s) expire while no controller leads (up to the leader
        TTL, 5 s), through no fault of the nodes: without this, every failover
        would drop every endpoint and move every replica. A node that is really
        gone lets its provisional lease expire and goes NotReady as usual.
        Returns how many nodes were adopted.
        """
        nodes, beats = await self.store.read(keys.NODES, keys.HEARTBEATS)
        alive = {keys.tail(keys.HEARTBEATS, i.key) for i in beats}
        adopted, revision = 0, 0
        for item in nodes:
            name = keys.tail(keys.NODES, item.key)
            if item.value.get("status") != READY or name in alive:
                continue
            lease = await self.store.grant(ttl)
            value = {"lease": lease, "at": self.clock(), "provisional": True}
            try:
                revision = await self.store.txn(
                    [ModIs(keys.heartbeat(name), 0)], [Put(keys.heartbeat(name), value, lease)]
                )
                adopted += 1
            except Conflict:  # the agent registered meanwhile
                await self.store.revoke(lease)
        informer = self.mirror.informers["heartbeats"]
        while informer.revision < revision:
            await self.mirror.wait_change(self.mirror.version, wait=0.5)
        if adopted:
            log.info("adopted %d node(s) at the start of this term", adopted)
        return adopted

    async def run(self) -> None:
        await self.mirror.wait_synced()
        seen = -1
        while True:
            version = self.mirror.version
            if version != seen:
                try:
                    await self.sync_once()
                    seen = version
                except Temporary as exc:
                    log.warning("node lifecycle: %s; retrying", exc)
            await self.mirror.wait_change(seen, wait=1.0)
