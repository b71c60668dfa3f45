"""Plain data for the controller's pure core: deployments, replicas, nodes.

Owns the frozen dataclasses that reconcile, schedule and rollout decide over,
resource quantities ("500m" cpu, "128Mi" memory), the template hash that
defines a deployment's revision, and replica naming. It must not import grpc,
aetcd, asyncio or the generated protobuf module: the store and the servers
convert to and from these types at the edge.

Manifest-shaped dicts (the canonical camelCase form, see gantry.manifest) go
in through `DeploymentState.from_manifest`; everything else is typed fields.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NewType

ReplicaName = NewType("ReplicaName", str)
NodeName = NewType("NodeName", str)

REPLICA_ID_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as Kubernetes: no vowels, no 0/1/3
REPLICA_ID_LEN = 5
KiB, MiB, GiB = 2**10, 2**20, 2**30


class QuantityError(ValueError):
    """A cpu or memory quantity that cannot be parsed."""


class Track(enum.StrEnum):
    STABLE = "stable"
    CANARY = "canary"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    STARTING = "Starting"
    RUNNING = "Running"
    TERMINATING = "Terminating"
    EXITED = "Exited"
    FAILED = "Failed"


DEAD_PHASES = frozenset({Phase.EXITED, Phase.FAILED})
GONE_PHASES = frozenset({Phase.TERMINATING, Phase.EXITED, Phase.FAILED})

# ---------------------------------------------------------------- quantities

_CPU_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)(m?)$")
_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)([KMGTPE]i?|k|m)?$")
_MEM_FACTORS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_cpu(value: str | int | float) -> int:
    """CPU quantity -> millicpu: "500m" -> 500, "1" -> 1000, "0.25" -> 250."""
    if isinstance(value, bool):
        raise QuantityError(f"expected a cpu quantity like '500m' or '1', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise QuantityError(f"cpu must not be negative, got {value!r}")
        return int(round(value * 1000))
    m = _CPU_RE.match(str(value).strip())
    if not m:
        raise QuantityError(f"expected a cpu quantity like '500m' or '1', got {value!r}")
    number = float(m.group(1))
    return int(round(number)) if m.group(2) else int(round(number * 1000))


def parse_memory(value: str | int | float) -> int:
    """Memory quantity -> bytes: "128Mi" -> 134217728, "1G" -> 10**9, "512" -> 512."""
    if isinstance(value, bool):
        raise QuantityError(f"expected a memory quantity like '128Mi', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise QuantityError(f"memory must not be negative, got {value!r}")
        return int(value)
    m = _MEM_RE.match(str(value).strip())
    if not m:
        raise QuantityError(f"expected a memory quantity like '128Mi' or '1Gi', got {value!r}")
    number = float(m.group(1))
    if m.group(2) == "m":  # milli-bytes, legal in Kubernetes, rounded up
        return -(-int(number) // 1000)
    return int(number * _MEM_FACTORS[m.group(2)])


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(n: int) -> str:
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


@dataclass(frozen=True, slots=True)
class Capacity:
    """cpu (millicpu), memory (bytes) and pod count: a node's capacity or use."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pods: int = 0

    def __add__(self, other: Capacity) -> Capacity:
        return Capacity(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
            self.pods + other.pods,
        )

    def __sub__(self, other: Capacity) -> Capacity:
        return Capacity(
            self.cpu_millis - other.cpu_millis,
            self.memory_bytes - other.memory_bytes,
            self.pods - other.pods,
        )


def template_requests(template: Mapping[str, Any]) -> Capacity:
    """What one replica of `template` asks for (requests, else limits), one pod."""
    res = template.get("resources") or {}
    req = res.get("requests") or {}
    lim = res.get("limits") or {}
    cpu = req.get("cpu") or lim.get("cpu") or "0"
    mem = req.get("memory") or lim.get("memory") or "0"
    return Capacity(parse_cpu(cpu), parse_memory(mem), 1)


# ---------------------------------------------------------------- identity


def template_hash(template: Mapping[str, Any]) -> str:
    """Stable 10-hex-digit hash of a pod template (key order does not matter)."""
    canon = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:10]


def replica_id(rng: random.Random) -> str:
    return "".join(rng.choice(REPLICA_ID_ALPHABET) for _ in range(REPLICA_ID_LEN))


def new_replica_name(deployment: str, rng: random.Random, taken: Sequence[str] = ()) -> str:
    """`<deployment>-<5 char id>`, not among `taken`."""
    used = set(taken)
    while True:
        name = f"{deployment}-{replica_id(rng)}"
        if name not in used:
            return name


# ---------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class RollingParams:
    """Strategy fields reconcile needs, still as written ("25%" or 1)."""

    max_surge: str | int = "25%"
    max_unavailable: str | int = "25%"
    min_ready_seconds: int = 0
    progress_deadline_seconds: int = 600


@dataclass(frozen=True)
class DeploymentState:
    """What a deployment asks for, at one template revision.

    `revision` is the integer revision of the current template (the store
    bumps it only when `template_hash` changes); `spec` is the canonical
    manifest spec for anything the core does not model as a field.
    """

    name: str
    replicas: int
    template: Mapping[str, Any]
    revision: int = 1
    template_hash: str = ""
    generation: int = 1
    strategy_type: str = "RollingUpdate"
    rolling: RollingParams = RollingParams()
    canary_replicas: int = 1
    canary_steps: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    route: Mapping[str, Any] = field(default_factory=dict)
    revision_history_limit: int = 10
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def requests(self) -> Capacity:
        return template_requests(self.template)

    @classmethod
    def from_manifest(
        cls, doc: Mapping[str, Any], *, revision: int = 1, generation: int = 1
    ) -> DeploymentState:
        """Build from a canonical manifest dict (as gantry.manifest returns)."""
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        template = spec.get("template") or {}
        strategy = spec.get("strategy") or {}
        ru = strategy.get("rollingUpdate") or {}
        canary = strategy.get("canary") or {}
        return cls(
            name=meta.get("name", ""),
            replicas=int(spec.get("replicas", 1)),
            template=template,
            revision=revision,
            template_hash=template_hash(template),
            generation=generation,
            strategy_type=strategy.get("type") or "RollingUpdate",
            rolling=RollingParams(
                max_surge=ru.get("maxSurge", "25%"),
                max_unavailable=ru.get("maxUnavailable", "25%"),
                min_ready_seconds=int(strategy.get("minReadySeconds", 0)),
                progress_deadline_seconds=int(strategy.get("progressDeadlineSeconds", 600)),
            ),
            canary_replicas=int(canary.get("replicas", 1) or 1),
            canary_steps=tuple(canary.get("steps") or ()),
            node_selector=dict(spec.get("nodeSelector") or {}),
            route=dict(spec.get("route") or {}),
            revision_history_limit=int(spec.get("revisionHistoryLimit", 10)),
            labels=dict(meta.get("labels") or {}),
        )


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica as observed: where it runs, which revision, how it is doing."""

    name: str
    deployment: str
    node: str = ""  # "" while unscheduled
    revision: int = 1
    track: Track = Track.STABLE
    phase: Phase = Phase.PENDING
    ready: bool = False
    draining: bool = False
    epoch: int = 1
    created_at: float = 0.0
    ready_since: float | None = None
    requests: Capacity = Capacity(0, 0, 1)

    @property
    def gone(self) -> bool:
        """On its way out (or out): no longer counts as a live replica."""
        return self.draining or self.phase in GONE_PHASES

    def with_(self, **changes: Any) -> ReplicaState:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node as the scheduler and reconciler see it."""

    name: str
    ready: bool = True
    capacity: Capacity = Capacity(4000, 8 * 2**30, 110)
    allocated: Capacity = Capacity()
    labels: Mapping[str, str] = field(default_factory=dict)
    not_ready_since: float | None = None
    address: str = ""

    @property
    def free(self) -> Capacity:
        return self.capacity - self.allocated

    @property
    def load(self) -> float:
        """Mean of allocated cpu and memory fractions, 0..1+."""
        cpu = (
            self.allocated.cpu_millis / self.capacity.cpu_millis if self.capacity.cpu_millis else 1
        )
        mem = (
            self.allocated.memory_bytes / self.capacity.memory_bytes
            if self.capacity.memory_bytes
            else 1
        )
        return (cpu + mem) / 2
