"""A rollout as etcd keeps it: phases, the frozen `RolloutState`, and its JSON record.

Owns `RolloutType`, `RolloutPhase` and the phase sets, `RolloutState` (what
/gantry/rollouts/<name> holds, so a restarted controller resumes a rollout),
and the conversion both ways: `rollout_to_record` (gantry.v1.Rollout's JSON
mapping plus exact floats for resuming) and `rollout_from_record`.

It performs no I/O and makes no decisions: `controller.rollout` moves the
state from one phase to the next, `controller.rollouts` reads and writes the
record.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.canary import VersionMetrics


class RolloutType(enum.StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    CANARY = "Canary"


class RolloutPhase(enum.StrEnum):
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ANALYZING = "Analyzing"
    PROMOTING = "Promoting"
    ABORTING = "Aborting"
    SUCCEEDED = "Succeeded"
    ABORTED = "Aborted"


ACTIVE_CANARY_PHASES = frozenset(
    {RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.ANALYZING}
)
FINISHED_PHASES = frozenset({RolloutPhase.SUCCEEDED, RolloutPhase.ABORTED})


@dataclass(frozen=True)
class RolloutState:
    """A rollout in progress (or just finished), as etcd keeps it."""

    deployment: str
    type: RolloutType = RolloutType.CANARY
    phase: RolloutPhase = RolloutPhase.PROGRESSING
    step: int = 0
    canary_weight: int = 0
    canary_template: Mapping[str, Any] = field(default_factory=dict)
    canary_revision: int = 0
    stable_revision: int = 0
    canary_replicas: int = 1
    steps: tuple[Mapping[str, Any], ...] = ()
    message: str = ""
    started_at: float = 0.0
    step_started_at: float = 0.0
    stable_metrics: VersionMetrics | None = None
    canary_metrics: VersionMetrics | None = None

    @property
    def active(self) -> bool:
        return self.phase not in FINISHED_PHASES

    def stable_target_revision(self) -> int:
        """Revision the stable set should run now (the canary's once promoting)."""
        if self.phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED):
            return self.canary_revision
        return self.stable_revision

    def wants_canary_replicas(self) -> bool:
        """Canary replicas exist while the canary runs and while promotion is underway."""
        return self.type is RolloutType.CANARY and self.phase in (
            ACTIVE_CANARY_PHASES | {RolloutPhase.PROMOTING}
        )


# ---------------------------------------------------------------- etcd record


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else ""


def _metrics_record(m: VersionMetrics | None) -> dict[str, float] | None:
    if m is None:
        return None
    return {"requests": m.requests, "errorRate": m.error_rate, "p99Ms": m.p99_ms}


def _metrics_of(rec: Any) -> VersionMetrics | None:
    if not isinstance(rec, Mapping):
        return None
    return VersionMetrics(
        float(rec.get("requests", 0.0)),
        float(rec.get("errorRate", 0.0)),
        float(rec.get("p99Ms", 0.0)),
    )


def rollout_to_record(state: RolloutState) -> dict[str, Any]:
    """The JSON kept at /gantry/rollouts/<name>: gantry.v1.Rollout's JSON mapping
    plus `steps`, `startedTs` and `stepStartedTs` (exact floats) for resuming."""
    rec: dict[str, Any] = {
        "deployment": state.deployment,
        "type": str(state.type),
        "phase": str(state.phase),
        "step": state.step,
        "canaryWeight": state.canary_weight,
        "canaryTemplate": dict(state.canary_template),
        "canaryRevision": state.canary_revision,
        "stableRevision": state.stable_revision,
        "canaryReplicas": state.canary_replicas,
        "message": state.message,
        "startedAt": _iso(state.started_at),
        "stepStartedAt": _iso(state.step_started_at),
        "steps": [dict(s) for s in state.steps],
        "startedTs": state.started_at,
        "stepStartedTs": state.step_started_at,
    }
    for key, m in (
        ("stableMetrics", state.stable_metrics),
        ("canaryMetrics", state.canary_metrics),
    ):
        if m is not None:
            rec[key] = _metrics_record(m)
    return rec


def rollout_from_record(rec: Mapping[str, Any]) -> RolloutState:
    """Back from etcd (int64 fields may arrive as strings, as protobuf JSON writes them)."""
    return RolloutState(
        deployment=str(rec.get("deployment", "")),
        type=RolloutType(rec.get("type") or RolloutType.CANARY),
        phase=RolloutPhase(rec.get("phase") or RolloutPhase.PROGRESSING),
        step=int(rec.get("step", 0)),
        canary_weight=int(rec.get("canaryWeight", 0)),
        canary_template=dict(rec.get("canaryTemplate") or {}),
        canary_revision=int(rec.get("canaryRevision", 0)),
        stable_revision=int(rec.get("stableRevision", 0)),
        canary_replicas=int(rec.get("canaryReplicas", 1)),
        steps=tuple(rec.get("steps") or ()),
        message=str(rec.get("message", "")),
        started_at=float(rec.get("startedTs", 0.0)),
        step_started_at=float(rec.get("stepStartedTs", 0.0)),
        stable_metrics=_metrics_of(rec.get("stableMetrics")),
        canary_metrics=_metrics_of(rec.get("canaryMetrics")),
    )
