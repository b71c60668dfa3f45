"""The rollout engine's pure helpers: proxy stats, sums, when a canary starts."""

from __future__ import annotations

from controller.model import DeploymentState, Phase, ReplicaState, Track
from controller.rollout import RolloutPhase, RolloutState, TrafficStats, canary_metrics_from_stats
from controller.rollouts import canary_to_start, next_revision, stats_from_admin, sum_stats

DOC = {
    "buckets_ms": [1, 10, 100],
    "deployments": {
        "web": {
            "stable": {"requests": 100, "errors_5xx": 1, "latency_ms_buckets": [50, 90, 100, 100]},
            "canary": {"requests": 10, "errors_5xx": 5, "latency_ms_buckets": [0, 0, 10, 10]},
        }
    },
}


def test_stats_from_admin_reads_tracks_in_seconds() -> None:
    stats = stats_from_admin(DOC, "web")
    assert stats["stable"].requests == 100 and stats["stable"].errors == 1
    assert stats["canary"].buckets == ((0.001, 0.0), (0.01, 0.0), (0.1, 10.0), (float("inf"), 10.0))
    assert stats_from_admin(DOC, "api") == {}


def test_sum_stats_adds_proxies_bucket_by_bucket() -> None:
    a = TrafficStats(10, 1, ((0.01, 5), (float("inf"), 10)))
    b = TrafficStats(4, 2, ((0.01, 4), (float("inf"), 4)))
    total = sum_stats([a, b])
    assert (total.requests, total.errors) == (14, 3)
    assert total.buckets == ((0.01, 9), (float("inf"), 14))


def test_window_metrics_from_two_snapshots() -> None:
    before = stats_from_admin(DOC, "web")["canary"]
    later = {**DOC["deployments"]["web"]["canary"], "requests": 110, "errors_5xx": 15,
             "latency_ms_buckets": [0, 0, 110, 110]}  # fmt: skip
    after = stats_from_admin({**DOC, "deployments": {"web": {"canary": later}}}, "web")["canary"]
    m = canary_metrics_from_stats(before, after)
    assert m.requests == 100 and abs(m.error_rate - 0.10) < 1e-9
    assert 10 < m.p99_ms <= 100


def dep(revision: int, strategy: str = "Canary") -> DeploymentState:
    return DeploymentState(
        name="web", replicas=3, template={"image": "x"}, revision=revision, strategy_type=strategy
    )


def reps(*revisions: int) -> list[ReplicaState]:
    return [ReplicaState(name=f"web-{i}", deployment="web", revision=r, track=Track.STABLE, phase=Phase.RUNNING)
            for i, r in enumerate(revisions)]  # fmt: skip


def test_applied_change_on_canary_strategy_starts_a_canary_against_what_runs() -> None:
    assert canary_to_start(dep(2), reps(1, 1, 1), None) == 1


def test_no_canary_for_rolling_updates_new_deployments_or_running_revision() -> None:
    assert canary_to_start(dep(2, "RollingUpdate"), reps(1, 1), None) is None
    assert canary_to_start(dep(1), [], None) is None
    assert canary_to_start(dep(2), reps(1, 2), None) is None


def test_no_second_canary_for_a_revision_that_had_one() -> None:
    done = RolloutState(
        deployment="web", phase=RolloutPhase.ABORTED, canary_revision=2, stable_revision=1
    )
    assert canary_to_start(dep(2), reps(1, 1), done) is None
    active = RolloutState(
        deployment="web", phase=RolloutPhase.PAUSED, canary_revision=3, stable_revision=1
    )
    assert canary_to_start(dep(2), reps(1, 1), active) is None


def test_next_revision_is_above_every_known_one() -> None:
    assert next_revision([1, 2, 5], 3) == 6
    assert next_revision([], 1) == 2
