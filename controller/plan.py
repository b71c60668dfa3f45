"""The planning adapter, pure: the reconcile plan turned into what to write.

Owns `decide` (reconcile a deployment, then name and schedule each wanted
replica over a snapshot of the nodes), its result `Decision` (replicas to
place, drain and delete, why any stay unplaced, when to look again), each
`Placement` with its explanation, and when a draining replica is finished.

It performs no I/O and reads no clock: `now` and a seeded `rng` are passed
in. `controller.records` builds the records for a Decision and
`controller.loop` writes them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller import scheduler
from controller.model import (
    DEAD_PHASES,
    DeploymentState,
    NodeState,
    ReplicaState,
    new_replica_name,
)
from controller.reconcile import PlaceAction, reconcile
from controller.rollout_records import RolloutState


@dataclass(frozen=True)
class Placement:
    name: str
    deployment: str
    node: str
    revision: int
    track: str
    why: str


@dataclass(frozen=True)
class Decision:
    """What to write: new replicas, replicas to drain, records to delete."""

    place: tuple[Placement, ...] = ()
    drain: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    unplaced: int = 0
    unplaced_reason: str = ""
    requeue_at: float | None = None


def finished_draining(
    r: ReplicaState, nodes: Mapping[str, NodeState], *, now: float, started: float, timeout: float
) -> bool:
    node = nodes.get(r.node)
    return r.phase in DEAD_PHASES or node is None or not node.ready or now - started > timeout


def decide(
    dep: DeploymentState | None,
    replicas: Sequence[ReplicaState],
    nodes: Sequence[NodeState],
    *,
    now: float,
    grace: float,
    drain_timeout: float,
    drain_started: Mapping[str, float],
    rng: random.Random,
    rollout: RolloutState | None = None,
) -> Decision:
    """The pure core (reconcile, then schedule each placement) as a Decision."""
    by_node = {n.name: n for n in nodes}
    remove = [
        r.name
        for r in replicas
        if r.draining
        and finished_draining(
            r, by_node, now=now, started=drain_started.get(r.name, now), timeout=drain_timeout
        )
    ]
    if dep is None:
        live = [r for r in replicas if not r.draining]
        remove += [r.name for r in live if r.phase in DEAD_PHASES or not r.node]
        drain = [r.name for r in live if r.name not in remove]
        return Decision(drain=tuple(drain), remove=tuple(remove))
    plan = reconcile(dep, replicas, nodes, now, rollout=rollout, node_grace_s=grace)
    dead = {r.name for r in replicas if r.phase in DEAD_PHASES}
    remove += [s.replica for s in plan.stop if s.replica in dead]
    drain = [s.replica for s in plan.stop if s.replica not in dead]
    remove += [r.replica for r in plan.replace]
    wanted: list[PlaceAction] = [*plan.place, *(r.substitute for r in plan.replace if r.substitute)]
    placements, unplaced, reason = _place_all(dep, wanted, replicas, list(nodes), rng)
    return Decision(
        place=tuple(placements),
        drain=tuple(drain),
        remove=tuple(remove),
        replaced=tuple(r.replica for r in plan.replace),
        unplaced=unplaced,
        unplaced_reason=reason,
        requeue_at=plan.requeue_at,
    )


def _place_all(
    dep: DeploymentState,
    wanted: Sequence[PlaceAction],
    replicas: Sequence[ReplicaState],
    nodes: list[NodeState],
    rng: random.Random,
) -> tuple[list[Placement], int, str]:
    """Name each wanted replica and run the scheduler over a snapshot of the nodes."""
    taken = [r.name for r in replicas]
    names = []
    for _ in wanted:
        names.append(new_replica_name(dep.name, rng, taken))
        taken.append(names[-1])
    results = scheduler.schedule(
        scheduler.requests_for(dep, names), scheduler.Snapshot(nodes, replicas), rng
    )
    out: list[Placement] = []
    unplaced, reason = 0, ""
    for action, result in zip(wanted, results, strict=True):
        if isinstance(result, scheduler.Unschedulable):
            unplaced, reason = unplaced + 1, result.reason
            continue
        out.append(
            Placement(
                result.replica, dep.name, result.node, action.revision, str(action.track),
                f"{action.reason}; {result.explain()}",
            )
        )  # fmt: skip
    return out, unplaced, reason
