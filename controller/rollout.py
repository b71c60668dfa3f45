"""Rollout decisions, pure: rolling-update arithmetic and the canary state machine.

Owns `RolloutState` (what etcd keeps about a rollout in progress, so a
restarted controller resumes it), `next_rollout_action` (one step of the
canary machine: set a weight, wait out a pause, judge an analysis window,
promote, abort, finish), the manual `promote` / `abort` transitions, the
Kubernetes-style maxSurge / maxUnavailable arithmetic, and the conversion of
two cumulative traffic snapshots into an error rate and a p99.

It performs no I/O and reads no clock: `now` is passed in. The caller
persists the returned state, pushes weights to discovery and lets
`controller.reconcile` create and remove the canary's replicas.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.model import DeploymentState, ReplicaState, Track


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


class Action(enum.StrEnum):
    WAIT = "Wait"
    SET_WEIGHT = "SetWeight"
    ADVANCE = "Advance"
    PAUSE = "Pause"
    START_ANALYSIS = "StartAnalysis"
    PROMOTE = "Promote"
    ABORT = "Abort"
    COMPLETE = "Complete"


# ---------------------------------------------------------------- arithmetic


class StrategyError(ValueError):
    """A maxSurge / maxUnavailable value that is neither an int nor "N%"."""


def _scaled(value: str | int, total: int, *, round_up: bool) -> int:
    if isinstance(value, bool):
        raise StrategyError(f"expected an integer or a percentage, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise StrategyError(f"must not be negative, got {value}")
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            pct = int(text[:-1])
        except ValueError:
            raise StrategyError(f"expected a percentage like '25%', got {value!r}") from None
        if pct < 0:
            raise StrategyError(f"must not be negative, got {value!r}")
        exact = pct * total
        return -(-exact // 100) if round_up else exact // 100
    try:
        n = int(text)
    except ValueError:
        raise StrategyError(f"expected an integer or a percentage, got {value!r}") from None
    if n < 0:
        raise StrategyError(f"must not be negative, got {value!r}")
    return n


def resolve_surge_unavailable(
    max_surge: str | int, max_unavailable: str | int, replicas: int
) -> tuple[int, int]:
    """(surge, unavailable) for `replicas`: surge rounds up, unavailable down.

    As Kubernetes' ResolveFenceposts: if both come out 0, unavailable is 1 so
    the rollout can make progress.
    """
    surge = _scaled(max_surge, replicas, round_up=True)
    unavailable = _scaled(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas) if replicas else unavailable


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """One version's traffic over a window."""

    requests: float = 0.0
    error_rate: float = 0.0
    p99_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class TrafficStats:
    """Cumulative counters of one deployment+track, as the proxy exports them.

    `buckets` are Prometheus-style cumulative histogram buckets:
    (upper bound in seconds, count of requests at or below it), ascending,
    the last one may be +inf.
    """

    requests: float = 0.0
    errors: float = 0.0  # 5xx answers
    buckets: tuple[tuple[float, float], ...] = ()


def _delta(after: float, before: float) -> float:
    return after - before if after >= before else after  # counter reset: count from zero


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Quantile from cumulative buckets, linear within a bucket (as PromQL)."""
    if not buckets:
        return 0.0
    total = buckets[-1][1]
    if total <= 0:
        return 0.0
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def canary_metrics_from_stats(before: TrafficStats | None, after: TrafficStats) -> VersionMetrics:
    """Error rate and p99 (ms) of the traffic between two cumulative snapshots."""
    base = before or TrafficStats()
    reset = after.requests < base.requests
    if reset:
        base = TrafficStats()
    requests = _delta(after.requests, base.requests)
    errors = _delta(after.errors, base.errors)
    before_counts = dict(base.buckets)
    buckets = tuple((b, max(0.0, c - before_counts.get(b, 0.0))) for b, c in after.buckets)
    p99 = histogram_quantile(0.99, buckets) * 1000.0
    rate = errors / requests if requests > 0 else 0.0
    return VersionMetrics(requests=requests, error_rate=rate, p99_ms=p99)


@dataclass(frozen=True, slots=True)
class CanaryMetrics:
    """Both versions' traffic since the analysis window began."""

    stable: VersionMetrics
    canary: VersionMetrics
    window_start: float = 0.0


# ---------------------------------------------------------------- state


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


def judge_canary(
    analysis: Mapping[str, Any], metrics: CanaryMetrics, *, window_over: bool
) -> tuple[bool | None, str]:
    """(True pass | False fail | None undecided, why) for one analysis window.

    The canary is held to absolute thresholds (`maxErrorRate`, `maxP99Ms`) and,
    when set, to stable's figures over the same window (`maxErrorRateIncrease`:
    canary error rate minus stable's; `maxP99Ratio`: canary p99 over stable's),
    compared only once stable too has `minRequests`. A failing canary fails as
    soon as it has `minRequests`; a passing one passes only once the whole
    window is over.
    """
    max_err = float(analysis.get("maxErrorRate", 0.05) or 0.0)
    max_p99 = float(analysis.get("maxP99Ms", 0) or 0.0)
    max_increase = analysis.get("maxErrorRateIncrease")
    max_ratio = float(analysis.get("maxP99Ratio", 0) or 0.0)
    min_req = int(analysis.get("minRequests", 10) or 0)
    c, s = metrics.canary, metrics.stable
    seen = (
        f"canary error rate {c.error_rate:.2%} p99 {c.p99_ms:.0f}ms over {c.requests:.0f} requests"
        f" (stable {s.error_rate:.2%}, p99 {s.p99_ms:.0f}ms)"
    )
    if c.requests < min_req:
        if window_over:
            return None, f"inconclusive: {c.requests:.0f}/{min_req} canary requests; {seen}"
        return None, f"measuring: {seen}"
    if c.error_rate > max_err:
        return False, f"{seen} exceeds max error rate {max_err:.2%}"
    if max_p99 > 0 and c.p99_ms > max_p99:
        return False, f"{seen} exceeds max p99 {max_p99:.0f}ms"
    baseline = s.requests >= max(min_req, 1)
    if max_increase is not None and baseline and c.error_rate - s.error_rate > max_increase:
        return False, f"{seen}: error rate over stable's by more than {float(max_increase):.2%}"
    if max_ratio > 0 and baseline and s.p99_ms > 0 and c.p99_ms > max_ratio * s.p99_ms:
        return False, f"{seen}: p99 over {max_ratio:g}x stable's"
    if not window_over:
        return None, f"measuring: {seen}"
    return True, f"passed: {seen}"


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


# ---------------------------------------------------------------- rolling update


@dataclass(frozen=True, slots=True)
class RollingStatus:
    complete: bool
    updated: int
    ready: int
    available: int
    deadline_exceeded: bool
    message: str


def rolling_update_status(
    deployment: DeploymentState,
    replicas: Sequence[ReplicaState],
    *,
    started_at: float,
    now: float,
) -> RollingStatus:
    """How far a rolling update to `deployment.revision` has come."""
    stable = [r for r in replicas if r.track == Track.STABLE and not r.gone]
    updated = [r for r in stable if r.revision == deployment.revision]
    min_ready = deployment.rolling.min_ready_seconds
    avail = [
        r
        for r in updated
        if r.ready and r.ready_since is not None and now - r.ready_since >= min_ready
    ]
    ready = sum(1 for r in updated if r.ready)
    old = len(stable) - len(updated)
    complete = len(avail) >= deployment.replicas and old == 0
    exceeded = not complete and now - started_at > deployment.rolling.progress_deadline_seconds
    if complete:
        msg = f"revision {deployment.revision} rolled out: {len(avail)} available"
    else:
        msg = (
            f"{len(updated)}/{deployment.replicas} updated, {len(avail)} available, "
            f"{old} old replicas left"
        )
        if exceeded:
            msg = f"progress deadline exceeded: {msg}"
    return RollingStatus(complete, len(updated), ready, len(avail), exceeded, msg)


def revisions_to_prune(revisions: Sequence[int], *, current: int, limit: int) -> list[int]:
    """Old revisions beyond the history limit, oldest first (never `current`)."""
    old = sorted(r for r in set(revisions) if r != current)
    return old[: max(0, len(old) - limit)]


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
