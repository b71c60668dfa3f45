"""The scheduler, pure: feasibility filters then scorers over a cluster snapshot.

Owns where a replica goes. Filters (in order, the first failing one is the
node's reason): node ready, nodeSelector, pod slots, free cpu, free memory.
Scorers: least-allocated (free cpu and memory after placement, 0..100),
minus a balanced-allocation penalty (cpu and memory use drifting apart, as
Kubernetes' NodeResourcesBalancedAllocation), minus a spreading penalty for
each replica of the same deployment already on the node. Like Nomad, when the cluster is large only the first
`max(2, ceil(log2 n)) * k` feasible nodes of a shuffled, rotating order are
scored; the rotation keeps the fill even. Every decision explains itself,
and a replica that fits nowhere gets Kubernetes' kind of reason:
`0/3 nodes: 2 insufficient memory, 1 not ready`.

No I/O, no clock; randomness comes from the `rng` passed in. `Snapshot` is
the one mutable object: `schedule` updates its allocations as it places.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.model import Capacity, DeploymentState, NodeState, ReplicaState

NOT_READY = "not ready"
SELECTOR = "node selector mismatch"
PODS = "too many pods"
CPU = "insufficient cpu"
MEMORY = "insufficient memory"

SPREAD_PENALTY = 10.0  # score points per replica of the same deployment on the node
BALANCE_WEIGHT = 0.5  # balanced allocation: penalty per point of cpu/memory imbalance
EXHAUSTIVE_BELOW = 64  # score every feasible node in clusters smaller than this


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """One replica to place, with what it asks for."""

    replica: str
    deployment: str
    cpu_millis: int = 0
    memory_bytes: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)


def requests_for(deployment: DeploymentState, names: Iterable[str]) -> list[PlacementRequest]:
    req = deployment.requests
    return [
        PlacementRequest(
            n, deployment.name, req.cpu_millis, req.memory_bytes, deployment.node_selector
        )
        for n in names
    ]


def _reason_text(total: int, feasible: int, filtered: Mapping[str, int]) -> str:
    parts = sorted(filtered.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{n} {why}" for why, n in parts)
    return f"{feasible}/{total} nodes" + (f": {text}" if text else "")


@dataclass(frozen=True, slots=True)
class Placement:
    """A replica placed on `node`, with how the choice was made."""

    replica: str
    node: str
    score: float
    evaluated: int
    filtered: Mapping[str, int]
    top: tuple[tuple[str, float], ...]

    def explain(self) -> str:
        text = f"placed {self.replica} on {self.node}: score {self.score:.0f}"
        nf = sum(self.filtered.values())
        if nf:
            parts = sorted(self.filtered.items(), key=lambda kv: (-kv[1], kv[0]))
            text += f"; {nf} nodes filtered: " + ", ".join(f"{n} {w}" for w, n in parts)
        others = [f"{n} {s:.0f}" for n, s in self.top if n != self.node][:2]
        if others:
            text += f"; next best: {', '.join(others)}"
        return text


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """A replica that fits nowhere now; `reason` says why on each node."""

    replica: str
    reason: str
    filtered: Mapping[str, int]

    def explain(self) -> str:
        return f"cannot place {self.replica}: {self.reason}"


class Snapshot:
    """The cluster as one scheduling batch sees it: capacities, use, spreading.

    Built from NodeState (whose `allocated` already counts running replicas)
    and the live replicas (only their deployment and node matter, for
    spreading). `assign` and `release` keep it current within a batch.
    """

    def __init__(self, nodes: Sequence[NodeState], replicas: Iterable[ReplicaState] = ()) -> None:
        self.names = [n.name for n in nodes]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.ready = [n.ready for n in nodes]
        self.labels = [n.labels for n in nodes]
        self.cap_cpu = [n.capacity.cpu_millis for n in nodes]
        self.cap_mem = [n.capacity.memory_bytes for n in nodes]
        self.cap_pods = [n.capacity.pods for n in nodes]
        self.free_cpu = [n.capacity.cpu_millis - n.allocated.cpu_millis for n in nodes]
        self.free_mem = [n.capacity.memory_bytes - n.allocated.memory_bytes for n in nodes]
        self.free_pods = [n.capacity.pods - n.allocated.pods for n in nodes]
        self._inv_cpu = [50.0 / c if c > 0 else 0.0 for c in self.cap_cpu]
        self._inv_mem = [50.0 / m if m > 0 else 0.0 for m in self.cap_mem]
        self.spread: dict[str, dict[int, int]] = {}
        for r in replicas:
            if r.node in self.index and not r.gone:
                per = self.spread.setdefault(r.deployment, {})
                i = self.index[r.node]
                per[i] = per.get(i, 0) + 1
        self._order: list[int] = []
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.names)

    def assign(self, i: int, deployment: str, cpu: int, mem: int) -> None:
        self.free_cpu[i] -= cpu
        self.free_mem[i] -= mem
        self.free_pods[i] -= 1
        per = self.spread.setdefault(deployment, {})
        per[i] = per.get(i, 0) + 1

    def release(self, node: str, deployment: str, cpu: int, mem: int) -> None:
        i = self.index[node]
        self.free_cpu[i] += cpu
        self.free_mem[i] += mem
        self.free_pods[i] += 1
        per = self.spread.get(deployment, {})
        if per.get(i, 0) > 0:
            per[i] -= 1

    def allocated(self, node: str) -> Capacity:
        i = self.index[node]
        return Capacity(
            self.cap_cpu[i] - self.free_cpu[i],
            self.cap_mem[i] - self.free_mem[i],
            self.cap_pods[i] - self.free_pods[i],
        )

    def cpu_fractions(self) -> list[float]:
        return [(c - f) / c if c else 0.0 for c, f in zip(self.cap_cpu, self.free_cpu, strict=True)]

    def reason_of(self, i: int, req: PlacementRequest) -> str | None:
        """The first filter node `i` fails for `req`, or None if it fits."""
        if not self.ready[i]:
            return NOT_READY
        if req.node_selector:
            labels = self.labels[i]
            for k, v in req.node_selector.items():
                if labels.get(k) != v:
                    return SELECTOR
        if self.free_pods[i] < 1:
            return PODS
        if self.free_cpu[i] < req.cpu_millis:
            return CPU
        if self.free_mem[i] < req.memory_bytes:
            return MEMORY
        return None


def candidate_limit(n: int, k: int = 1) -> int:
    """How many feasible nodes to score: all in small clusters, else max(2, log2 n)·k."""
    if n < EXHAUSTIVE_BELOW:
        return max(n, 1)
    return max(2, math.ceil(math.log2(n))) * k


def schedule(
    requests: Sequence[PlacementRequest],
    snapshot: Snapshot,
    rng: random.Random,
    *,
    k: int = 1,
) -> list[Placement | Unschedulable]:
    """Place each request in turn, updating `snapshot` as it goes."""
    n = len(snapshot)
    if len(snapshot._order) != n:
        snapshot._order = list(range(n))
        snapshot._cursor = 0
    rng.shuffle(snapshot._order)
    limit = candidate_limit(n, k)
    return [_place_one(req, snapshot, limit) for req in requests]


def _place_one(req: PlacementRequest, s: Snapshot, limit: int) -> Placement | Unschedulable:
    n = len(s.names)
    order, start = s._order, s._cursor
    ready, free_cpu, free_mem, free_pods = s.ready, s.free_cpu, s.free_mem, s.free_pods
    cpu, mem, selector = req.cpu_millis, req.memory_bytes, req.node_selector
    inv_cpu, inv_mem = s._inv_cpu, s._inv_mem
    siblings = s.spread.get(req.deployment) or {}
    filtered: dict[str, int] = {}
    scored: list[tuple[float, int]] = []
    scanned = 0
    while scanned < n:
        i = order[(start + scanned) % n]
        scanned += 1
        if (
            ready[i]
            and free_pods[i] >= 1
            and free_cpu[i] >= cpu
            and free_mem[i] >= mem
            and (not selector or s.reason_of(i, req) is None)
        ):
            cpu_free = (free_cpu[i] - cpu) * inv_cpu[i]  # 0..50
            mem_free = (free_mem[i] - mem) * inv_mem[i]  # 0..50
            # least allocated (0..100), minus how far cpu and memory use drift apart
            score = cpu_free + mem_free - BALANCE_WEIGHT * abs(cpu_free - mem_free)
            if siblings:
                score -= SPREAD_PENALTY * siblings.get(i, 0)
            scored.append((score, i))
            if len(scored) >= limit:
                break
        else:
            why = s.reason_of(i, req) or NOT_READY
            filtered[why] = filtered.get(why, 0) + 1
    s._cursor = (start + scanned) % n if n else 0
    if not scored:
        return Unschedulable(req.replica, _reason_text(n, 0, filtered), filtered)
    best_score, best = scored[0]
    for sc, i in scored:
        if sc > best_score:
            best_score, best = sc, i
    s.assign(best, req.deployment, cpu, mem)
    names = s.names
    runners_up = [(names[i], sc) for sc, i in sorted(scored, reverse=True)[:3] if i != best]
    top = ((names[best], best_score), *runners_up[:2])
    return Placement(req.replica, s.names[best], best_score, scanned, filtered, top)
