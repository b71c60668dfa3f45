"""Reconcile, pure: a deployment's desired state vs its observed replicas -> a Plan.

Owns the decision of which replicas to create, which to stop and which to
replace because their node is lost, for plain scaling, rolling updates
(maxSurge / maxUnavailable / minReadySeconds) and canaries (the canary's
replicas beside the full stable set). It returns the plan as plain data and
does no I/O: the caller names and schedules the new replicas, drains and
stops the others, and calls again when something changes or at `requeue_at`.

Counting rules: a replica that is draining, Terminating, Exited or Failed is
*gone* and never counts; Exited/Failed ones are cleaned up (stopped). A
replica is *available* when ready on a ready node for minReadySeconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from controller.model import (
    DEAD_PHASES,
    DeploymentState,
    NodeState,
    ReplicaState,
    Track,
)
from controller.rollout import RolloutState, resolve_surge_unavailable

DEFAULT_NODE_GRACE_S = 3.0


@dataclass(frozen=True, slots=True)
class PlaceAction:
    """Create one replica of `revision` on `track` (then schedule it)."""

    deployment: str
    revision: int
    track: Track
    reason: str


@dataclass(frozen=True, slots=True)
class StopAction:
    """Drain, then stop, one replica."""

    replica: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplaceAction:
    """A replica whose node is lost: fence it off and create `substitute` instead."""

    replica: str
    node: str
    reason: str
    substitute: PlaceAction | None


@dataclass(frozen=True)
class Plan:
    deployment: str
    place: tuple[PlaceAction, ...] = ()
    stop: tuple[StopAction, ...] = ()
    replace: tuple[ReplaceAction, ...] = ()
    keep: tuple[str, ...] = ()
    requeue_at: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (self.place or self.stop or self.replace)

    @property
    def canary(self) -> tuple[PlaceAction, ...]:
        return tuple(p for p in self.place if p.track is Track.CANARY)

    def summary(self) -> str:
        parts = [f"{len(self.place)} to place", f"{len(self.stop)} to stop"]
        if self.replace:
            parts.append(f"{len(self.replace)} to replace")
        return f"{self.deployment}: " + ", ".join(parts)


@dataclass
class _Builder:
    deployment: str
    place: list[PlaceAction] = field(default_factory=list)
    stop: list[StopAction] = field(default_factory=list)
    replace: list[ReplaceAction] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_place(self, n: int, revision: int, track: Track, reason: str) -> None:
        self.place.extend(PlaceAction(self.deployment, revision, track, reason) for _ in range(n))

    def add_stop(self, replicas: Iterable[ReplicaState], reason: str) -> None:
        self.stop.extend(StopAction(r.name, reason) for r in replicas)


def is_available(r: ReplicaState, nodes: dict[str, NodeState], now: float, min_ready: int) -> bool:
    if not r.ready or r.gone or r.ready_since is None:
        return False
    node = nodes.get(r.node)
    if r.node and (node is None or not node.ready):
        return False
    return now - r.ready_since >= min_ready


def stop_order(replicas: Iterable[ReplicaState], nodes: dict[str, NodeState]) -> list[ReplicaState]:
    """Which to stop first: not ready, then newest, then on the most loaded node."""

    def key(r: ReplicaState) -> tuple[bool, bool, float, float, str]:
        node = nodes.get(r.node)
        load = node.load if node else 2.0
        return (bool(r.node), r.ready, -r.created_at, -load, r.name)

    return sorted(replicas, key=key)


def _lost(
    live: list[ReplicaState], nodes: dict[str, NodeState], now: float, grace: float
) -> tuple[list[tuple[ReplicaState, str]], list[float]]:
    lost: list[tuple[ReplicaState, str]] = []
    requeue: list[float] = []
    for r in live:
        if not r.node:
            continue
        node = nodes.get(r.node)
        if node is None:
            lost.append((r, f"node {r.node} is gone"))
        elif not node.ready:
            since = node.not_ready_since if node.not_ready_since is not None else now
            if now - since >= grace:
                lost.append((r, f"node {r.node} not ready for {now - since:.1f}s"))
            else:
                requeue.append(since + grace)
    return lost, requeue


def reconcile(
    desired: DeploymentState,
    observed: Sequence[ReplicaState],
    nodes: Sequence[NodeState],
    now: float,
    *,
    rollout: RolloutState | None = None,
    node_grace_s: float = DEFAULT_NODE_GRACE_S,
) -> Plan:
    """The actions that move `observed` towards `desired` (and the rollout, if any)."""
    b = _Builder(desired.name)
    by_node = {n.name: n for n in nodes}
    mine = [r for r in observed if r.deployment == desired.name]
    dead = [r for r in mine if r.phase in DEAD_PHASES and not r.draining]
    b.add_stop(dead, "exited")
    live = [r for r in mine if not r.gone]
    lost, requeue = _lost(live, by_node, now, node_grace_s)
    b.requeue.extend(requeue)
    lost_names = {r.name for r, _ in lost}
    live = [r for r in live if r.name not in lost_names]

    stable_rev = desired.revision
    canary_n = 0
    canary_rev = 0
    if rollout is not None and rollout.active and rollout.type == "Canary":
        stable_rev = rollout.stable_target_revision()
        if rollout.wants_canary_replicas():
            canary_n, canary_rev = rollout.canary_replicas, rollout.canary_revision

    stable = [r for r in live if r.track != Track.CANARY]
    canary = [r for r in live if r.track == Track.CANARY]
    lost_stable = sum(1 for r, _ in lost if r.track != Track.CANARY)
    lost_canary = len(lost) - lost_stable
    n_place_before = len(b.place)
    _rolling(b, desired, stable, by_node, now, revision=stable_rev, lost=lost_stable)
    stable_places = b.place[n_place_before:]
    n_place_before = len(b.place)
    _simple(b, canary, by_node, now, want=canary_n, revision=canary_rev, track=Track.CANARY)
    canary_places = b.place[n_place_before:]
    _pair_replacements(b, lost, stable_places, canary_places, lost_canary)

    stopped = {s.replica for s in b.stop} | lost_names
    keep = tuple(sorted(r.name for r in mine if not r.gone and r.name not in stopped))
    return Plan(
        deployment=desired.name,
        place=tuple(b.place),
        stop=tuple(b.stop),
        replace=tuple(b.replace),
        keep=keep,
        requeue_at=min(b.requeue) if b.requeue else None,
        notes=tuple(b.notes),
    )


def _pair_replacements(
    b: _Builder,
    lost: list[tuple[ReplicaState, str]],
    stable_places: list[PlaceAction],
    canary_places: list[PlaceAction],
    lost_canary: int,
) -> None:
    """Tie each lost replica to one new placement of its track (if one is due)."""
    pools = {Track.STABLE: list(stable_places), Track.CANARY: list(canary_places)}
    used: set[int] = set()
    for r, why in lost:
        pool = pools[Track.CANARY if r.track == Track.CANARY else Track.STABLE]
        sub = pool.pop(0) if pool else None
        if sub is not None:
            used.add(id(sub))
            sub = PlaceAction(sub.deployment, sub.revision, sub.track, f"replaces {r.name}: {why}")
        b.replace.append(ReplaceAction(r.name, r.node, why, sub))
    b.place = [p for p in b.place if id(p) not in used]


def _simple(
    b: _Builder,
    replicas: list[ReplicaState],
    nodes: dict[str, NodeState],
    now: float,
    *,
    want: int,
    revision: int,
    track: Track,
) -> None:
    """Exactly `want` replicas of `revision`: others stop at once (canary track)."""
    wrong = [r for r in replicas if r.revision != revision or want == 0]
    b.add_stop(wrong, f"{track} track no longer wants revision" if want else f"no {track} wanted")
    right = [r for r in replicas if r not in wrong]
    if len(right) < want:
        b.add_place(want - len(right), revision, track, f"scale {track} up to {want}")
    elif len(right) > want:
        b.add_stop(stop_order(right, nodes)[: len(right) - want], f"scale {track} down to {want}")


def _rolling(
    b: _Builder,
    desired: DeploymentState,
    replicas: list[ReplicaState],
    nodes: dict[str, NodeState],
    now: float,
    *,
    revision: int,
    lost: int,
) -> None:
    """The stable set: scale, and roll old revisions to `revision` within the bounds."""
    want = desired.replicas
    min_ready = desired.rolling.min_ready_seconds
    new = [r for r in replicas if r.revision == revision]
    old = [r for r in replicas if r.revision != revision]
    for r in replicas:
        if r.ready and r.ready_since is not None and now - r.ready_since < min_ready:
            b.requeue.append(r.ready_since + min_ready)
    if not old:
        if len(new) < want:
            why = "replace lost replicas" if lost else f"scale up to {want}"
            b.add_place(want - len(new), revision, Track.STABLE, why)
        elif len(new) > want:
            b.add_stop(stop_order(new, nodes)[: len(new) - want], f"scale down to {want}")
        return
    surge, unavailable = resolve_surge_unavailable(
        desired.rolling.max_surge, desired.rolling.max_unavailable, want
    )
    # Too many new ones (scaled down mid-rollout): trim those first.
    if len(new) > want:
        extra = stop_order(new, nodes)[: len(new) - want]
        b.add_stop(extra, f"scale down to {want}")
        new = [r for r in new if r not in extra]
    total = len(new) + len(old)
    room = want + surge - total
    if room > 0 and len(new) < want:
        n = min(room, want - len(new))
        b.add_place(n, revision, Track.STABLE, f"rolling update to revision {revision}")
        total += n
    # Old replicas that are not available can go at no cost to availability.
    old_unavail = [r for r in old if not is_available(r, nodes, now, min_ready)]
    old_avail = [r for r in old if r not in old_unavail]
    b.add_stop(old_unavail, f"rolling update to revision {revision} (not available)")
    total -= len(old_unavail)
    available = sum(1 for r in new if is_available(r, nodes, now, min_ready)) + len(old_avail)
    can_stop = min(len(old_avail), available - (want - unavailable))
    # Never stop more old than keeps the total above what is wanted, counting surge.
    if can_stop > 0:
        chosen = stop_order(old_avail, nodes)[:can_stop]
        b.add_stop(chosen, f"rolling update to revision {revision}")
        total -= can_stop
    # With no surge, fill the slots just freed (the new ones still count as unavailable).
    room = want + surge - total
    placed_new = len(new) + sum(
        1 for p in b.place if p.track is Track.STABLE and p.revision == revision
    )
    if room > 0 and placed_new < want:
        n = min(room, want - placed_new)
        b.add_place(n, revision, Track.STABLE, f"rolling update to revision {revision}")
