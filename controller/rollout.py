"""Rollout decisions, pure: the canary state machine.

Owns `next_rollout_action` (one step of the canary machine: set a weight,
wait out a pause, judge an analysis window, promote, abort, finish), the
start of a canary (`start_canary`), the manual `promote` / `abort`
transitions, and the readable step list (`steps_summary`).

The pieces it builds on live beside it and are re-exported here, so callers
keep importing from `controller.rollout`: the state and its etcd record in
`controller.rollout_records`, canary metrics and their judgement in
`controller.canary`, and the rolling-update arithmetic in `controller.rolling`.

It performs no I/O and reads no clock: `now` is passed in. The caller
persists the returned state, pushes weights to discovery and lets
`controller.reconcile` create and remove the canary's replicas.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from controller.canary import (
    CanaryMetrics,
    TrafficStats,
    VersionMetrics,
    canary_metrics_from_stats,
    histogram_quantile,
    judge_canary,
)
from controller.model import DeploymentState, ReplicaState, Track
from controller.rolling import (
    RollingStatus,
    StrategyError,
    resolve_surge_unavailable,
    revisions_to_prune,
    rolling_update_status,
)
from controller.rollout_records import (
    ACTIVE_CANARY_PHASES,
    FINISHED_PHASES,
    RolloutPhase,
    RolloutState,
    RolloutType,
    rollout_from_record,
    rollout_to_record,
)

__all__ = [
    "ACTIVE_CANARY_PHASES",
    "FINISHED_PHASES",
    "Action",
    "CanaryMetrics",
    "RollingStatus",
    "RolloutDecision",
    "RolloutError",
    "RolloutPhase",
    "RolloutState",
    "RolloutType",
    "StrategyError",
    "TrafficStats",
    "VersionMetrics",
    "abort",
    "canary_metrics_from_stats",
    "histogram_quantile",
    "judge_canary",
    "next_rollout_action",
    "promote",
    "resolve_surge_unavailable",
    "revisions_to_prune",
    "rolling_update_status",
    "rollout_from_record",
    "rollout_to_record",
    "start_canary",
    "steps_summary",
]


class Action(enum.StrEnum):
    WAIT = "Wait"
    SET_WEIGHT = "SetWeight"
    ADVANCE = "Advance"
    PAUSE = "Pause"
    START_ANALYSIS = "StartAnalysis"
    PROMOTE = "Promote"
    ABORT = "Abort"
    COMPLETE = "Complete"


def start_canary(
    deployment: DeploymentState,
    *,
    canary_template: Mapping[str, Any],
    canary_revision: int,
    now: float,
    replicas: int | None = None,
    weight: int | None = None,
) -> RolloutState:
    """A new canary rollout of `canary_template` beside `deployment`'s stable set.

    Steps come from the manifest; `weight` (the CLI's --weight) without
    manifest steps means: set that weight, then pause until promoted.
    """
    steps: tuple[Mapping[str, Any], ...] = deployment.canary_steps
    if weight is not None or not steps:
        steps = ({"setWeight": 10 if weight is None else weight}, {"pause": {}})
    return RolloutState(
        deployment=deployment.name,
        type=RolloutType.CANARY,
        phase=RolloutPhase.PROGRESSING,
        canary_template=canary_template,
        canary_revision=canary_revision,
        stable_revision=deployment.revision,
        canary_replicas=replicas if replicas is not None else deployment.canary_replicas,
        steps=steps,
        started_at=now,
        step_started_at=now,
        message="canary started",
    )


@dataclass(frozen=True, slots=True)
class RolloutDecision:
    action: Action
    state: RolloutState
    reason: str
    requeue_at: float | None = None

    @property
    def changed(self) -> bool:
        return self.action is not Action.WAIT


# ---------------------------------------------------------------- the machine


def _ready_count(replicas: Sequence[ReplicaState], track: Track, revision: int) -> int:
    return sum(
        1
        for r in replicas
        if r.track == track and r.revision == revision and r.ready and not r.gone
    )


def _live_count(replicas: Sequence[ReplicaState], track: Track) -> int:
    return sum(1 for r in replicas if r.track == track and not r.gone)


def _step_at(state: RolloutState, now: float, **changes: Any) -> RolloutState:
    return replace(state, step=state.step + 1, step_started_at=now, **changes)


def _abort_state(state: RolloutState, reason: str, now: float) -> RolloutState:
    return replace(
        state,
        phase=RolloutPhase.ABORTING,
        canary_weight=0,
        message=reason,
        step_started_at=now,
    )


def next_rollout_action(
    state: RolloutState,
    deployment: DeploymentState,
    replicas: Sequence[ReplicaState],
    metrics: CanaryMetrics | None,
    now: float,
) -> RolloutDecision:
    """One decision for a canary rollout; the caller persists `decision.state`."""
    if state.phase in FINISHED_PHASES:
        return RolloutDecision(Action.WAIT, state, f"rollout {state.phase.lower()}")
    if state.phase is RolloutPhase.ABORTING:
        return _aborting(state, replicas, now)
    if state.phase is RolloutPhase.PROMOTING:
        return _promoting(state, deployment, replicas, now)
    ready = _ready_count(replicas, Track.CANARY, state.canary_revision)
    if ready < state.canary_replicas:
        deadline = state.step_started_at + deployment.rolling.progress_deadline_seconds
        if state.step == 0 and now >= deadline:
            reason = (
                f"progress deadline exceeded: {ready}/{state.canary_replicas} canary replicas ready"
            )
            return RolloutDecision(Action.ABORT, _abort_state(state, reason, now), reason)
        reason = f"waiting for canary replicas: {ready}/{state.canary_replicas} ready"
        return RolloutDecision(Action.WAIT, state, reason, requeue_at=deadline)
    if state.step >= len(state.steps):
        reason = "all canary steps done"
        return RolloutDecision(Action.PROMOTE, _promote_state(state, reason, now), reason)
    step = state.steps[state.step]
    if "setWeight" in step and step["setWeight"] is not None:
        weight = int(step["setWeight"])
        new = _step_at(state, now, canary_weight=weight, phase=RolloutPhase.PROGRESSING)
        new = replace(new, message=f"step {state.step + 1}: weight {weight}%")
        return RolloutDecision(Action.SET_WEIGHT, new, new.message)
    if "pause" in step:
        return _pause(state, step["pause"] or {}, now)
    if "analysis" in step:
        return _analysis(state, step["analysis"] or {}, metrics, now)
    reason = f"step {state.step + 1}: nothing to do"
    return RolloutDecision(Action.ADVANCE, _step_at(state, now), reason)


def _pause(state: RolloutState, pause: Mapping[str, Any], now: float) -> RolloutDecision:
    duration = int(pause.get("durationSeconds", 0) or 0)
    if duration <= 0:
        if state.phase is RolloutPhase.PAUSED:
            return RolloutDecision(Action.WAIT, state, state.message)
        msg = f"step {state.step + 1}: paused until promoted"
        new = replace(state, phase=RolloutPhase.PAUSED, message=msg)
        return RolloutDecision(Action.PAUSE, new, msg)
    until = state.step_started_at + duration
    if now >= until:
        msg = f"step {state.step + 1}: pause of {duration}s over"
        new = _step_at(state, now, phase=RolloutPhase.PROGRESSING, message=msg)
        return RolloutDecision(Action.ADVANCE, new, msg)
    if state.phase is RolloutPhase.PAUSED:
        return RolloutDecision(Action.WAIT, state, state.message, requeue_at=until)
    msg = f"step {state.step + 1}: paused for {duration}s"
    new = replace(state, phase=RolloutPhase.PAUSED, message=msg)
    return RolloutDecision(Action.PAUSE, new, msg, requeue_at=until)


def _analysis(
    state: RolloutState, analysis: Mapping[str, Any], metrics: CanaryMetrics | None, now: float
) -> RolloutDecision:
    window = int(analysis.get("windowSeconds", 60) or 60)
    if state.phase is not RolloutPhase.ANALYZING:
        msg = f"step {state.step + 1}: analysing canary for {window}s"
        new = replace(state, phase=RolloutPhase.ANALYZING, step_started_at=now, message=msg)
        return RolloutDecision(Action.START_ANALYSIS, new, msg, requeue_at=now + window)
    end = state.step_started_at + window
    if metrics is None:
        return RolloutDecision(Action.WAIT, state, "waiting for metrics", requeue_at=end)
    verdict, why = judge_canary(analysis, metrics, window_over=now >= end)
    seen = replace(state, stable_metrics=metrics.stable, canary_metrics=metrics.canary)
    if verdict is False:
        return RolloutDecision(Action.ABORT, _abort_state(seen, why, now), why)
    if verdict is True:
        new = _step_at(seen, now, phase=RolloutPhase.PROGRESSING, message=why)
        return RolloutDecision(Action.ADVANCE, new, why)
    if now >= end:  # inconclusive: measure another window
        new = replace(seen, step_started_at=now, message=why)
        return RolloutDecision(Action.WAIT, new, why, requeue_at=now + window)
    changed = seen.canary_metrics != state.canary_metrics
    new = replace(seen, message=why)
    return RolloutDecision(Action.WAIT, new if changed else state, why, requeue_at=end)


def _promote_state(state: RolloutState, reason: str, now: float) -> RolloutState:
    return replace(
        state,
        phase=RolloutPhase.PROMOTING,
        message=reason,
        step_started_at=now,
        step=len(state.steps),
    )


def _promoting(
    state: RolloutState, deployment: DeploymentState, replicas: Sequence[ReplicaState], now: float
) -> RolloutDecision:
    ready = _ready_count(replicas, Track.STABLE, state.canary_revision)
    old = sum(
        1
        for r in replicas
        if r.track == Track.STABLE and r.revision != state.canary_revision and not r.gone
    )
    if ready >= deployment.replicas and old == 0:
        msg = f"promoted revision {state.canary_revision}"
        new = replace(state, phase=RolloutPhase.SUCCEEDED, canary_weight=0, message=msg)
        return RolloutDecision(Action.COMPLETE, new, msg)
    msg = f"promoting: {ready}/{deployment.replicas} stable replicas on the new version ready"
    return RolloutDecision(Action.WAIT, state, msg)


def _aborting(state: RolloutState, replicas: Sequence[ReplicaState], now: float) -> RolloutDecision:
    left = _live_count(replicas, Track.CANARY)
    if left:
        return RolloutDecision(Action.WAIT, state, f"aborting: {left} canary replicas left")
    new = replace(state, phase=RolloutPhase.ABORTED, canary_weight=0)
    return RolloutDecision(Action.COMPLETE, new, f"aborted: {state.message}")


def promote(state: RolloutState, now: float, *, full: bool = False) -> RolloutState:
    """`gantry rollout promote`: skip an open-ended pause, or (full) promote now."""
    if not state.active or state.phase in (RolloutPhase.PROMOTING, RolloutPhase.ABORTING):
        raise RolloutError(f"rollout of {state.deployment} is {state.phase}, cannot promote")
    at_open_pause = state.phase is RolloutPhase.PAUSED and state.step < len(state.steps)
    if at_open_pause and not full:
        msg = f"step {state.step + 1}: promoted by hand"
        return _step_at(state, now, phase=RolloutPhase.PROGRESSING, message=msg)
    return _promote_state(state, "promoted by hand", now)


def abort(state: RolloutState, now: float, reason: str = "aborted by hand") -> RolloutState:
    """`gantry rollout abort`: weight 0 first, then the canary replicas go."""
    if not state.active or state.phase is RolloutPhase.ABORTING:
        raise RolloutError(f"rollout of {state.deployment} is {state.phase}, cannot abort")
    if state.phase is RolloutPhase.PROMOTING:
        raise RolloutError(f"rollout of {state.deployment} is already promoting")
    return _abort_state(state, reason, now)


class RolloutError(ValueError):
    """A manual transition that the rollout's phase does not allow."""


def steps_summary(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """Readable step list for `rollout status`."""
    out = []
    for s in steps:
        if s.get("setWeight") is not None:
            out.append(f"setWeight {s['setWeight']}")
        elif "pause" in s:
            d = (s["pause"] or {}).get("durationSeconds", 0)
            out.append(f"pause {d}s" if d else "pause until promoted")
        elif "analysis" in s:
            out.append(f"analysis {(s['analysis'] or {}).get('windowSeconds', 60)}s")
    return out
