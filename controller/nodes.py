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
from controller.events import WARNING, Events, iso
from controller.metrics import Metrics
from controller.store import Json, Mirror, Store

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
            is_alive = name in alive

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

    async def run(self) -> None:
        await self.mirror.wait_synced()
        seen = -1
        while True:
            version = self.mirror.version
            if version != seen:
                await self.sync_once()
                seen = version
            await self.mirror.wait_change(seen, wait=1.0)
