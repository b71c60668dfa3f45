"""Records in, records out: etcd's JSON for deployments, replicas and nodes, pure.

Owns the conversion of stored records into the model's frozen types
(`deployment_state`, `replica_state`, `node_capacity`, `node_states`), the
per-node `Allocation` of live replicas' requests, the records the loop
writes (`new_replica_record` for a placement, `draining_record` for a stop),
and a deployment's status computed from its replicas (`status_of`).

It performs no I/O, reads no clock and makes no decisions: `controller.plan`
decides, `controller.loop` reads and writes etcd.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.events import iso
from controller.model import (
    Capacity,
    DeploymentState,
    NodeState,
    Phase,
    QuantityError,
    ReplicaState,
    Track,
    template_requests,
)
from controller.plan import Placement
from controller.store import Json

STOPPED_PHASES = {"Stopped": Phase.EXITED}


def deployment_state(rec: Json) -> DeploymentState:
    status = rec.get("status") or {}
    meta = rec.get("metadata") or {}
    return DeploymentState.from_manifest(
        rec, revision=int(status.get("revision", 1)), generation=int(meta.get("generation", 1))
    )


def _requests(template: Json) -> Capacity:
    try:
        return template_requests(template)
    except QuantityError:
        return Capacity(0, 0, 1)


def replica_state(rec: Json) -> ReplicaState:
    raw = str(rec.get("phase") or "Pending")
    try:
        phase = STOPPED_PHASES.get(raw) or Phase(raw)
    except ValueError:
        phase = Phase.PENDING
    try:
        track = Track(rec.get("track") or "stable")
    except ValueError:
        track = Track.STABLE
    return ReplicaState(
        name=str(rec.get("name", "")),
        deployment=str(rec.get("deployment", "")),
        node=str(rec.get("node", "")),
        revision=int(rec.get("revision", 1)),
        track=track,
        phase=phase,
        ready=bool(rec.get("ready", False)),
        draining=bool(rec.get("draining", False)),
        epoch=int(rec.get("epoch", 1)),
        created_at=float(rec.get("createdTs", 0.0)),
        ready_since=rec.get("readySince"),
        requests=_requests(rec.get("template") or {}),
    )


def node_capacity(rec: Json) -> Capacity:
    cap = rec.get("capacity") or {}
    return Capacity(
        int(cap.get("cpuMillis", 0)), int(cap.get("memoryBytes", 0)), int(cap.get("pods", 0) or 110)
    )


class Allocation:
    """Per-node sum of the live replicas' requests, kept incrementally by replica key."""

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[str, Capacity]] = {}
        self.by_node: dict[str, Capacity] = {}

    def set(self, key: str, rec: Json | None) -> None:
        r = replica_state(rec) if rec is not None else None
        if r is not None and r.node and not r.gone:
            self.put(key, r.node, r.requests)
        else:
            self.put(key, "", Capacity())

    def put(self, key: str, node: str, need: Capacity) -> None:
        """The replica at `key` now uses `need` on `node` ("" for nowhere)."""
        old = self.by_key.pop(key, None)
        if old is not None:
            self.by_node[old[0]] = self.by_node[old[0]] - old[1]
        if node:
            self.by_key[key] = (node, need)
            self.by_node[node] = self.by_node.get(node, Capacity()) + need


def node_states(
    nodes: dict[str, Json], alive: set[str], used: Mapping[str, Capacity], *, now: float
) -> list[NodeState]:
    """NodeStates from node records, live heartbeats and per-node allocation."""
    out = []
    for rec in nodes.values():
        name = str(rec.get("name", ""))
        ready = name in alive
        since = None if ready else float(rec.get("notReadySince") or now)
        out.append(
            NodeState(
                name=name,
                ready=ready,
                capacity=node_capacity(rec),
                allocated=used.get(name, Capacity()),
                labels=dict(rec.get("labels") or {}),
                not_ready_since=since,
                address=str(rec.get("address", "")),
            )
        )
    return out


def new_replica_record(
    p: Placement, template: Json, *, epoch: int, now: float, drain_seconds: float
) -> Json:
    return {
        "name": p.name,
        "deployment": p.deployment,
        "node": p.node,
        "revision": p.revision,
        "track": p.track,
        "phase": "Scheduled",
        "ready": False,
        "draining": False,
        "epoch": epoch,
        "createdAt": iso(now),
        "createdTs": now,
        "template": template,
        "desired": "run",
        "drainSeconds": drain_seconds,
    }


def draining_record(rec: Json, *, now: float, drain_seconds: float) -> Json:
    return {
        **rec,
        "draining": True,
        "desired": "drain",
        "drainSeconds": drain_seconds,
        "drainStartedTs": now,
        "phase": "Terminating"
        if rec.get("phase") not in ("Exited", "Failed", "Stopped")
        else rec["phase"],
    }


def status_of(dep: Json, replicas: list[Json]) -> dict[str, Any]:
    """DeploymentStatus (camelCase) computed from replica records."""
    status = dict(dep.get("status") or {})
    rev = int(status.get("revision", 1))
    # The stable set: a canary's replicas run beside it and show in `rollout status`.
    live = [r for r in replicas if not r.get("draining") and r.get("track", "stable") != "canary"]
    status.update(
        replicas=len(live),
        readyReplicas=sum(1 for r in live if r.get("ready")),
        updatedReplicas=sum(1 for r in live if int(r.get("revision", 0)) == rev),
        availableReplicas=sum(1 for r in live if r.get("ready")),
        observedGeneration=int((dep.get("metadata") or {}).get("generation", 1)),
    )
    return status
