"""Rollout decisions: canary steps, analysis, promote/abort, metrics arithmetic."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from ctlsim import replica
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import DeploymentState, RollingParams, Track
from controller.rollout import (
    Action,
    CanaryMetrics,
    RolloutError,
    RolloutPhase,
    RolloutState,
    TrafficStats,
    VersionMetrics,
    abort,
    canary_metrics_from_stats,
    histogram_quantile,
    judge_canary,
    next_rollout_action,
    promote,
    resolve_surge_unavailable,
    revisions_to_prune,
    rolling_update_status,
    start_canary,
    steps_summary,
)

ANALYSIS = {"maxErrorRate": 0.05, "maxP99Ms": 300.0, "windowSeconds": 30, "minRequests": 20}
STEPS = (
    {"setWeight": 20},
    {"pause": {"durationSeconds": 10}},
    {"analysis": ANALYSIS},
    {"pause": {"durationSeconds": 0}},
)


def dep(steps: tuple = STEPS, replicas: int = 3) -> DeploymentState:
    return DeploymentState(
        name="web",
        replicas=replicas,
        template={"image": "web:1"},
        revision=1,
        strategy_type="Canary",
        canary_steps=steps,
        rolling=RollingParams(progress_deadline_seconds=120),
    )


def canary_ready(n: int = 1) -> list:
    stable = [replica(revision=1) for _ in range(3)]
    return stable + [replica(revision=2, track=Track.CANARY) for _ in range(n)]


def good() -> CanaryMetrics:
    return CanaryMetrics(VersionMetrics(500, 0.0, 100.0), VersionMetrics(100, 0.01, 120.0))


def bad() -> CanaryMetrics:
    return CanaryMetrics(VersionMetrics(500, 0.0, 100.0), VersionMetrics(100, 0.5, 120.0))


def started(now: float = 0.0) -> RolloutState:
    return start_canary(dep(), canary_template={"image": "web:2"}, canary_revision=2, now=now)


def test_start_canary_takes_manifest_steps_and_revisions() -> None:
    s = started()
    assert s.phase is RolloutPhase.PROGRESSING and s.step == 0 and s.canary_weight == 0
    assert (s.stable_revision, s.canary_revision, s.canary_replicas) == (1, 2, 1)
    assert s.steps == STEPS


def test_start_canary_with_cli_weight_sets_weight_then_waits_for_promote() -> None:
    s = start_canary(dep(()), canary_template={}, canary_revision=2, now=0, weight=15, replicas=2)
    assert s.steps == ({"setWeight": 15}, {"pause": {}})
    assert s.canary_replicas == 2


def test_waits_for_canary_replicas_before_the_first_step() -> None:
    d = next_rollout_action(started(), dep(), canary_ready(0), None, 5.0)
    assert d.action is Action.WAIT and not d.changed
    assert d.reason == "waiting for canary replicas: 0/1 ready"
    assert d.requeue_at == 120.0


def test_progress_deadline_aborts_a_canary_that_never_gets_ready() -> None:
    d = next_rollout_action(started(), dep(), canary_ready(0), None, 121.0)
    assert d.action is Action.ABORT
    assert d.state.phase is RolloutPhase.ABORTING and d.state.canary_weight == 0
    assert "progress deadline exceeded" in d.reason


def test_full_happy_path_to_promote_and_success() -> None:
    reps = canary_ready()
    s = started()
    d = next_rollout_action(s, dep(), reps, None, 1.0)
    assert d.action is Action.SET_WEIGHT and d.state.canary_weight == 20 and d.state.step == 1
    d = next_rollout_action(d.state, dep(), reps, None, 2.0)
    assert d.action is Action.PAUSE and d.state.phase is RolloutPhase.PAUSED
    assert d.requeue_at == 11.0
    d2 = next_rollout_action(d.state, dep(), reps, None, 5.0)
    assert d2.action is Action.WAIT
    d = next_rollout_action(d.state, dep(), reps, None, 11.0)
    assert d.action is Action.ADVANCE and d.state.step == 2
    d = next_rollout_action(d.state, dep(), reps, None, 12.0)
    assert d.action is Action.START_ANALYSIS and d.state.phase is RolloutPhase.ANALYZING
    assert d.requeue_at == 42.0
    d = next_rollout_action(d.state, dep(), reps, good(), 20.0)
    assert d.action is Action.WAIT and "measuring" in d.reason
    assert d.state.canary_metrics == good().canary  # shown by rollout status
    d = next_rollout_action(d.state, dep(), reps, good(), 42.0)
    assert d.action is Action.ADVANCE and d.reason.startswith("passed")
    d = next_rollout_action(d.state, dep(), reps, None, 43.0)
    assert d.action is Action.PAUSE and d.reason.endswith("paused until promoted")
    assert next_rollout_action(d.state, dep(), reps, None, 1e6).action is Action.WAIT
    s = promote(d.state, 50.0)
    assert s.phase is RolloutPhase.PROGRESSING and s.step == 4
    d = next_rollout_action(s, dep(), reps, None, 51.0)
    assert d.action is Action.PROMOTE and d.state.phase is RolloutPhase.PROMOTING
    assert d.state.stable_target_revision() == 2
    # stable set not yet on revision 2
    assert next_rollout_action(d.state, dep(), reps, None, 52.0).action is Action.WAIT
    promoted = [replica(revision=2) for _ in range(3)] + [replica(revision=2, track=Track.CANARY)]
    d = next_rollout_action(d.state, dep(), promoted, None, 60.0)
    assert d.action is Action.COMPLETE
    assert d.state.phase is RolloutPhase.SUCCEEDED and d.state.canary_weight == 0
    assert not d.state.active and not d.state.wants_canary_replicas()


def _at_analysis() -> RolloutState:
    return replace(
        started(),
        step=2,
        phase=RolloutPhase.ANALYZING,
        canary_weight=20,
        step_started_at=100.0,
    )


def test_failing_analysis_aborts_early_within_the_window() -> None:
    d = next_rollout_action(_at_analysis(), dep(), canary_ready(), bad(), 105.0)
    assert d.action is Action.ABORT
    assert d.state.phase is RolloutPhase.ABORTING and d.state.canary_weight == 0
    assert "exceeds max error rate 5.00%" in d.reason
    assert d.state.message == d.reason


def test_slow_canary_aborts_on_p99() -> None:
    slow = CanaryMetrics(VersionMetrics(500, 0, 100), VersionMetrics(100, 0.0, 900.0))
    d = next_rollout_action(_at_analysis(), dep(), canary_ready(), slow, 131.0)
    assert d.action is Action.ABORT and "exceeds max p99 300ms" in d.reason


def test_too_few_requests_is_inconclusive_and_measures_again() -> None:
    few = CanaryMetrics(VersionMetrics(5, 0, 1), VersionMetrics(3, 1.0, 1))
    d = next_rollout_action(_at_analysis(), dep(), canary_ready(), few, 131.0)
    assert d.action is Action.WAIT and d.reason.startswith("inconclusive")
    assert d.state.step_started_at == 131.0 and d.requeue_at == 161.0


def test_no_metrics_waits() -> None:
    d = next_rollout_action(_at_analysis(), dep(), canary_ready(), None, 131.0)
    assert d.action is Action.WAIT and d.reason == "waiting for metrics"


def test_aborting_completes_when_canary_replicas_are_gone() -> None:
    s = abort(started(), 5.0)
    assert s.phase is RolloutPhase.ABORTING and s.message == "aborted by hand"
    assert next_rollout_action(s, dep(), canary_ready(), None, 6.0).action is Action.WAIT
    d = next_rollout_action(s, dep(), canary_ready(0), None, 7.0)
    assert d.action is Action.COMPLETE and d.state.phase is RolloutPhase.ABORTED
    assert next_rollout_action(d.state, dep(), [], None, 8.0).action is Action.WAIT


def test_draining_canaries_count_as_gone() -> None:
    s = abort(started(), 5.0)
    reps = [replace(r, draining=True) for r in canary_ready()]
    assert next_rollout_action(s, dep(), reps, None, 6.0).action is Action.COMPLETE


def test_manual_transitions_guarded() -> None:
    s = abort(started(), 1.0)
    with pytest.raises(RolloutError):
        promote(s, 2.0)
    with pytest.raises(RolloutError):
        abort(s, 2.0)
    p = promote(started(), 1.0, full=True)
    assert p.phase is RolloutPhase.PROMOTING
    with pytest.raises(RolloutError):
        abort(p, 2.0)


def test_promote_full_skips_remaining_steps() -> None:
    s = replace(started(), step=1, phase=RolloutPhase.PAUSED)
    p = promote(s, 3.0, full=True)
    assert p.phase is RolloutPhase.PROMOTING and p.step == len(STEPS)


def test_judge_canary_passes_only_after_window() -> None:
    assert judge_canary(ANALYSIS, good(), window_over=False)[0] is None
    verdict, why = judge_canary(ANALYSIS, good(), window_over=True)
    assert verdict is True
    assert why == (
        "passed: canary error rate 1.00% p99 120ms over 100 requests (stable 0.00%, p99 100ms)"
    )


def test_judge_canary_compares_with_stable_when_asked() -> None:
    relative = {**ANALYSIS, "maxErrorRateIncrease": 0.02, "maxP99Ratio": 1.5}
    # 1 point over stable's error rate, p99 1.2x stable's: within both
    assert judge_canary(relative, good(), window_over=True)[0] is True
    # 4 % errors: under the absolute 5 %, but 3 points over stable's 1 %
    worse = CanaryMetrics(VersionMetrics(500, 0.01, 100.0), VersionMetrics(100, 0.04, 120.0))
    assert judge_canary(ANALYSIS, worse, window_over=True)[0] is True
    verdict, why = judge_canary(relative, worse, window_over=False)
    assert verdict is False and why.endswith("error rate over stable's by more than 2.00%")
    # p99 200 ms: under the absolute 300 ms, but 2x stable's 100 ms
    slower = CanaryMetrics(VersionMetrics(500, 0.0, 100.0), VersionMetrics(100, 0.0, 200.0))
    assert judge_canary(ANALYSIS, slower, window_over=True)[0] is True
    verdict, why = judge_canary(relative, slower, window_over=False)
    assert verdict is False and why.endswith("p99 over 1.5x stable's")
    # stable without minRequests in the window: nothing to compare with
    no_baseline = CanaryMetrics(VersionMetrics(5, 0.0, 100.0), VersionMetrics(100, 0.04, 200.0))
    assert judge_canary(relative, no_baseline, window_over=True)[0] is True


# ---------------------------------------------------------------- metrics


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = ((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.198)
    assert histogram_quantile(0.99, ()) == 0.0
    assert histogram_quantile(0.99, ((0.1, 0.0),)) == 0.0


def test_histogram_quantile_in_the_inf_bucket_returns_last_bound() -> None:
    assert histogram_quantile(0.99, ((0.1, 10.0), (math.inf, 100.0))) == 0.1


def test_canary_metrics_from_two_snapshots() -> None:
    before = TrafficStats(100, 2, ((0.05, 90.0), (0.5, 100.0), (math.inf, 100.0)))
    after = TrafficStats(300, 12, ((0.05, 90.0), (0.5, 300.0), (math.inf, 300.0)))
    m = canary_metrics_from_stats(before, after)
    assert m.requests == 200
    assert m.error_rate == pytest.approx(0.05)
    # all 200 new requests fall in (0.05, 0.5]: p99 = 0.05 + 0.45 * 198/200
    assert m.p99_ms == pytest.approx((0.05 + 0.45 * 0.99) * 1000)


def test_canary_metrics_without_before_and_after_reset() -> None:
    after = TrafficStats(10, 1, ((0.1, 10.0),))
    assert canary_metrics_from_stats(None, after).requests == 10
    reset = canary_metrics_from_stats(TrafficStats(1000, 50, ((0.1, 1000.0),)), after)
    assert reset.requests == 10 and reset.error_rate == pytest.approx(0.1)


def test_no_traffic_is_zero_not_a_division_error() -> None:
    assert canary_metrics_from_stats(TrafficStats(), TrafficStats()) == VersionMetrics(0, 0, 0)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1000), st.integers(0, 1000))
def test_property_error_rate_is_a_share(req: int, err: int) -> None:
    m = canary_metrics_from_stats(None, TrafficStats(req, min(err, req), ()))
    assert 0.0 <= m.error_rate <= 1.0


# ---------------------------------------------------------------- rolling helpers


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 500), st.integers(0, 100), st.integers(0, 100))
def test_property_fenceposts_round_like_kubernetes(n: int, s: int, u: int) -> None:
    surge, unavail = resolve_surge_unavailable(f"{s}%", f"{u}%", n)
    assert surge == math.ceil(s * n / 100)
    assert surge + unavail >= 1
    if not (surge == 0 and u * n // 100 == 0):
        assert unavail == min(u * n // 100, n)


def test_fenceposts_reject_garbage() -> None:
    from controller.rollout import StrategyError

    for bad_value in ("x", "-1", "a%", -1):
        with pytest.raises(StrategyError):
            resolve_surge_unavailable(bad_value, 1, 4)


def test_rolling_update_status() -> None:
    d = replace(
        dep(), revision=2, rolling=RollingParams(min_ready_seconds=5, progress_deadline_seconds=60)
    )
    reps = [replica(revision=2, ready_since=0.0) for _ in range(2)] + [replica(revision=1)]
    st_ = rolling_update_status(d, reps, started_at=0.0, now=10.0)
    assert not st_.complete and st_.updated == 2 and st_.available == 2
    assert st_.message == "2/3 updated, 2 available, 1 old replicas left"
    late = rolling_update_status(d, reps, started_at=0.0, now=61.0)
    assert late.deadline_exceeded and late.message.startswith("progress deadline exceeded")
    done = [replica(revision=2, ready_since=0.0) for _ in range(3)]
    assert rolling_update_status(d, done, started_at=0.0, now=10.0).complete


def test_revisions_to_prune_keeps_history_limit() -> None:
    assert revisions_to_prune([1, 2, 3, 4, 5], current=5, limit=2) == [1, 2]
    assert revisions_to_prune([1, 5], current=5, limit=2) == []
    assert revisions_to_prune([3, 1, 2], current=1, limit=0) == [2, 3]


def test_steps_summary() -> None:
    assert steps_summary(STEPS) == [
        "setWeight 20",
        "pause 10s",
        "analysis 30s",
        "pause until promoted",
    ]


# ---------------------------------------------------------------- etcd record


def test_record_round_trip_resumes_the_same_state() -> None:
    from controller.rollout import rollout_from_record, rollout_to_record

    s = replace(
        started(1700000000.5),
        step=2,
        phase=RolloutPhase.ANALYZING,
        canary_weight=20,
        step_started_at=1700000010.25,
        canary_metrics=VersionMetrics(10, 0.1, 50.0),
        stable_metrics=VersionMetrics(90, 0.0, 40.0),
    )
    rec = rollout_to_record(s)
    assert rec["startedAt"] == "2023-11-14T22:13:20Z"
    assert rec["canaryMetrics"] == {"requests": 10, "errorRate": 0.1, "p99Ms": 50.0}
    assert rollout_from_record(rec) == s


def test_record_is_readable_as_the_rollout_message() -> None:
    from google.protobuf import json_format

    from controller.rollout import rollout_to_record
    from gantry.v1 import types_pb2

    rec = rollout_to_record(replace(started(5.0), canary_metrics=VersionMetrics(1, 0, 2)))
    msg = json_format.ParseDict(rec, types_pb2.Rollout(), ignore_unknown_fields=True)
    assert msg.phase == "Progressing" and msg.canary_revision == 2
    assert msg.canary_template.image == "web:2"
    assert msg.canary_metrics.p99_ms == 2


def test_record_from_protobuf_json_with_string_int64() -> None:
    from controller.rollout import rollout_from_record

    s = rollout_from_record({"deployment": "web", "canaryRevision": "7", "stableRevision": "6"})
    assert (s.canary_revision, s.stable_revision, s.phase) == (7, 6, RolloutPhase.PROGRESSING)
