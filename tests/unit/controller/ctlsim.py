"""A tiny simulated cluster for testing the pure reconciler (no I/O).

Applying a plan here is what the real controller does through etcd and the
agents, reduced to data: stops remove replicas, placements add unready ones
on a round-robin node, `settle` makes everything ready.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from controller.model import NodeState, Phase, ReplicaState
from controller.reconcile import Plan

_ids = itertools.count(1)


def replica(
    dep: str = "web",
    *,
    revision: int = 1,
    ready: bool = True,
    node: str = "n1",
    created_at: float = 0.0,
    ready_since: float | None = 0.0,
    **kw: object,
) -> ReplicaState:
    return ReplicaState(
        name=f"{dep}-{next(_ids):05d}",
        deployment=dep,
        node=node,
        revision=revision,
        phase=Phase.RUNNING if ready else Phase.STARTING,
        ready=ready,
        created_at=created_at,
        ready_since=ready_since if ready else None,
        **kw,  # type: ignore[arg-type]
    )


def apply_plan(
    plan: Plan,
    replicas: Sequence[ReplicaState],
    now: float,
    nodes: Sequence[NodeState] = (),
) -> list[ReplicaState]:
    """The world after `plan`: stopped/replaced ones gone, new ones unready."""
    gone = {s.replica for s in plan.stop} | {r.replica for r in plan.replace}
    out = [r for r in replicas if r.name not in gone]
    ready_nodes = [n.name for n in nodes if n.ready] or ["n1"]
    news = list(plan.place) + [r.substitute for r in plan.replace if r.substitute]
    for i, p in enumerate(news):
        out.append(
            ReplicaState(
                name=f"{p.deployment}-{next(_ids):05d}",
                deployment=p.deployment,
                node=ready_nodes[i % len(ready_nodes)],
                revision=p.revision,
                track=p.track,
                phase=Phase.STARTING,
                created_at=now,
            )
        )
    return out


def settle(replicas: Sequence[ReplicaState], now: float) -> list[ReplicaState]:
    """Every replica becomes ready (those already ready keep their ready_since)."""
    return [
        r if r.ready else replace(r, ready=True, phase=Phase.RUNNING, ready_since=now)
        for r in replicas
    ]
