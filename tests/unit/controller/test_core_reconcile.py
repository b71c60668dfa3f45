"""The pure reconciler: scaling, rolling updates, lost nodes, canaries, invariants."""

from __future__ import annotations

from dataclasses import replace

from ctlsim import apply_plan, replica, settle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import (
    Capacity,
    DeploymentState,
    NodeState,
    Phase,
    ReplicaState,
    RollingParams,
    Track,
)
from controller.reconcile import reconcile, stop_order
from controller.rollout import (
    RolloutPhase,
    RolloutState,
    RolloutType,
    resolve_surge_unavailable,
)

NODES = [NodeState("n1"), NodeState("n2"), NodeState("n3")]


def dep(replicas: int = 3, revision: int = 1, **rolling: object) -> DeploymentState:
    return DeploymentState(
        name="web",
        replicas=replicas,
        template={"image": f"web:{revision}"},
        revision=revision,
        rolling=RollingParams(**rolling),  # type: ignore[arg-type]
    )


def test_empty_deployment_places_all_replicas() -> None:
    plan = reconcile(dep(3), [], NODES, 0.0)
    assert len(plan.place) == 3
    assert {p.revision for p in plan.place} == {1}
    assert {p.track for p in plan.place} == {Track.STABLE}
    assert not plan.stop and not plan.replace


def test_converged_deployment_gives_empty_plan() -> None:
    reps = [replica(node=n) for n in ("n1", "n2", "n3")]
    plan = reconcile(dep(3), reps, NODES, 100.0)
    assert plan.empty
    assert set(plan.keep) == {r.name for r in reps}


def test_other_deployments_replicas_are_ignored() -> None:
    reps = [replica("api"), replica("api")]
    plan = reconcile(dep(1), reps, NODES, 0.0)
    assert len(plan.place) == 1 and not plan.stop


def test_scale_down_prefers_not_ready_then_newest() -> None:
    old = replica(created_at=1.0)
    newest = replica(created_at=9.0)
    middle = replica(created_at=5.0)
    unready = replica(ready=False, created_at=2.0)
    plan = reconcile(dep(2), [old, newest, middle, unready], NODES, 100.0)
    assert [s.replica for s in plan.stop] == [unready.name, newest.name]
    assert all("scale down" in s.reason for s in plan.stop)


def test_stop_order_prefers_unscheduled_and_most_loaded_node() -> None:
    nodes = {
        "busy": NodeState("busy", allocated=Capacity(3900, 7 * 2**30, 30)),
        "idle": NodeState("idle"),
    }
    on_busy = replica(node="busy", created_at=5.0)
    on_idle = replica(node="idle", created_at=5.0)
    pending = replica(node="", ready=False, created_at=0.0)
    order = stop_order([on_idle, on_busy, pending], nodes)
    assert order == [pending, on_busy, on_idle]


def test_dead_replicas_are_cleaned_up_and_replaced() -> None:
    dead = replace(replica(), phase=Phase.FAILED, ready=False)
    alive = replica()
    plan = reconcile(dep(2), [dead, alive], NODES, 0.0)
    assert [s.replica for s in plan.stop] == [dead.name]
    assert plan.stop[0].reason == "exited"
    assert len(plan.place) == 1


def test_draining_replicas_do_not_count_and_are_not_stopped_again() -> None:
    draining = replace(replica(), draining=True)
    plan = reconcile(dep(1), [draining], NODES, 0.0)
    assert len(plan.place) == 1
    assert not plan.stop
    assert draining.name not in plan.keep


def test_scale_to_zero_stops_everything() -> None:
    reps = [replica(), replica(revision=2)]
    plan = reconcile(dep(0, revision=2), reps, NODES, 0.0)
    assert {s.replica for s in plan.stop} == {r.name for r in reps}
    assert not plan.place


# ---------------------------------------------------------------- lost nodes


def test_replica_on_not_ready_node_within_grace_waits() -> None:
    nodes = [replace(NODES[0], ready=False, not_ready_since=10.0), *NODES[1:]]
    reps = [replica(node="n1"), replica(node="n2")]
    plan = reconcile(dep(2), reps, nodes, 11.0, node_grace_s=3.0)
    assert plan.empty
    assert plan.requeue_at == 13.0


def test_replica_on_not_ready_node_past_grace_is_replaced() -> None:
    nodes = [replace(NODES[0], ready=False, not_ready_since=10.0), *NODES[1:]]
    lost = replica(node="n1")
    kept = replica(node="n2")
    plan = reconcile(dep(2), [lost, kept], nodes, 13.5, node_grace_s=3.0)
    assert len(plan.replace) == 1
    r = plan.replace[0]
    assert r.replica == lost.name and r.node == "n1"
    assert "not ready for 3.5s" in r.reason
    assert r.substitute is not None and r.substitute.revision == 1
    assert r.substitute.reason.startswith(f"replaces {lost.name}")
    assert not plan.place  # the substitute is the placement
    assert plan.keep == (kept.name,)


def test_replica_on_vanished_node_is_replaced_at_once() -> None:
    lost = replica(node="gone")
    plan = reconcile(dep(1), [lost], NODES, 0.0)
    assert [r.replica for r in plan.replace] == [lost.name]
    assert "node gone is gone" == plan.replace[0].reason


def test_lost_replica_beyond_desired_count_is_fenced_without_substitute() -> None:
    nodes = [replace(NODES[0], ready=False, not_ready_since=0.0), *NODES[1:]]
    reps = [replica(node="n1"), replica(node="n2"), replica(node="n3")]
    plan = reconcile(dep(2), reps, nodes, 60.0)
    assert len(plan.replace) == 1 and plan.replace[0].substitute is None
    assert not plan.place and not plan.stop


# ---------------------------------------------------------------- rolling update


def test_rolling_update_defaults_surge_one_of_four() -> None:
    reps = [replica(node=n) for n in ("n1", "n2", "n3", "n1")]
    plan = reconcile(dep(4, revision=2), reps, NODES, 100.0)
    # 25% of 4: surge 1, unavailable 1 -> one old goes, two new come: 5 in all, 3 ready
    assert len(plan.stop) == 1
    assert len(plan.place) == 2 and {p.revision for p in plan.place} == {2}


def test_rolling_update_surge_only_waits_for_new_ready() -> None:
    reps = [replica() for _ in range(3)]
    d = dep(3, revision=2, max_surge=1, max_unavailable=0)
    plan = reconcile(d, reps, NODES, 100.0)
    assert len(plan.place) == 1 and not plan.stop
    world = apply_plan(plan, reps, 100.0, NODES)
    assert reconcile(d, world, NODES, 101.0).empty  # new one not ready: nothing to do
    world = settle(world, 102.0)
    plan = reconcile(d, world, NODES, 102.0)
    # the new one is available: one old goes and the next new one takes its slot
    assert len(plan.stop) == 1 and len(plan.place) == 1
    assert plan.stop[0].replica in {r.name for r in reps}


def test_min_ready_seconds_delays_availability_and_requeues() -> None:
    reps = [replica(ready_since=-100.0) for _ in range(2)]
    d = dep(2, revision=2, max_surge=1, max_unavailable=0, min_ready_seconds=10)
    world = settle(apply_plan(reconcile(d, reps, NODES, 0.0), reps, 0.0, NODES), 5.0)
    plan = reconcile(d, world, NODES, 7.0)
    assert plan.empty and plan.requeue_at == 15.0
    plan = reconcile(d, world, NODES, 15.0)
    assert len(plan.stop) == 1


def test_unavailable_only_stops_then_places() -> None:
    reps = [replica() for _ in range(4)]
    d = dep(4, revision=2, max_surge=0, max_unavailable=2)
    plan = reconcile(d, reps, NODES, 100.0)
    assert len(plan.stop) == 2 and len(plan.place) == 2


def test_not_ready_old_replicas_go_first_in_a_rollout() -> None:
    broken = replica(ready=False)
    good = [replica() for _ in range(3)]
    d = dep(4, revision=2, max_surge=0, max_unavailable=0)  # fenceposts: unavailable 1
    plan = reconcile(d, [broken, *good], NODES, 100.0)
    assert broken.name in {s.replica for s in plan.stop}


def test_fenceposts() -> None:
    assert resolve_surge_unavailable("25%", "25%", 10) == (3, 2)
    assert resolve_surge_unavailable("25%", "25%", 1) == (1, 0)
    assert resolve_surge_unavailable(0, 0, 5) == (0, 1)
    assert resolve_surge_unavailable("0%", "0%", 5) == (0, 1)
    assert resolve_surge_unavailable(2, "50%", 5) == (2, 2)


# ---------------------------------------------------------------- canary


def _canary(phase: RolloutPhase = RolloutPhase.PROGRESSING, n: int = 2) -> RolloutState:
    return RolloutState(
        deployment="web",
        type=RolloutType.CANARY,
        phase=phase,
        canary_revision=2,
        stable_revision=1,
        canary_replicas=n,
    )


def test_canary_replicas_run_beside_full_stable_set() -> None:
    stable = [replica() for _ in range(3)]
    plan = reconcile(dep(3, revision=1), stable, NODES, 0.0, rollout=_canary())
    assert len(plan.place) == 2
    assert all(p.track is Track.CANARY and p.revision == 2 for p in plan.place)
    assert plan.canary == plan.place
    assert not plan.stop


def test_canary_converges_then_is_empty() -> None:
    d = dep(3, revision=1)
    world = [replica() for _ in range(3)]
    ro = _canary()
    for t in range(5):
        world = settle(apply_plan(reconcile(d, world, NODES, t, rollout=ro), world, t, NODES), t)
    assert reconcile(d, world, NODES, 10.0, rollout=ro).empty
    assert sum(1 for r in world if r.track is Track.CANARY) == 2


def test_abort_stops_canary_replicas_and_keeps_stable() -> None:
    stable = [replica() for _ in range(3)]
    canary = [replica(revision=2, track=Track.CANARY) for _ in range(2)]
    plan = reconcile(dep(3), stable + canary, NODES, 0.0, rollout=_canary(RolloutPhase.ABORTING))
    assert {s.replica for s in plan.stop} == {r.name for r in canary}
    assert not plan.place


def test_promote_rolls_stable_set_to_canary_revision() -> None:
    stable = [replica() for _ in range(4)]
    canary = [replica(revision=2, track=Track.CANARY) for _ in range(1)]
    plan = reconcile(
        dep(4, revision=1), stable + canary, NODES, 0.0, rollout=_canary(RolloutPhase.PROMOTING, 1)
    )
    assert all(p.revision == 2 and p.track is Track.STABLE for p in plan.place)
    assert len(plan.place) >= 1
    assert not {s.replica for s in plan.stop} & {r.name for r in canary}


def test_leftover_canaries_stop_when_no_rollout() -> None:
    c = replica(revision=2, track=Track.CANARY)
    plan = reconcile(dep(1), [replica(), c], NODES, 0.0)
    assert [s.replica for s in plan.stop] == [c.name]


# ---------------------------------------------------------------- properties


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[DeploymentState, list[ReplicaState]]:
    want = draw(st.integers(0, 12))
    surge = draw(st.one_of(st.integers(0, 4), st.sampled_from(["0%", "25%", "50%", "100%"])))
    unavail = draw(st.one_of(st.integers(0, 4), st.sampled_from(["0%", "25%", "50%"])))
    min_ready = draw(st.sampled_from([0, 0, 5]))
    d = dep(want, revision=3, max_surge=surge, max_unavailable=unavail, min_ready_seconds=min_ready)
    n_old = draw(st.integers(0, 12))
    reps = []
    for _ in range(n_old):
        rev = draw(st.sampled_from([1, 2, 3]))
        ready = draw(st.booleans())
        reps.append(replica(revision=rev, ready=ready, node=draw(st.sampled_from(["n1", "n2"]))))
    return d, reps


def _bounds(d: DeploymentState) -> tuple[int, int]:
    return resolve_surge_unavailable(d.rolling.max_surge, d.rolling.max_unavailable, d.replicas)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollouts())
def test_property_converges_to_exact_count_and_empty_plan(
    case: tuple[DeploymentState, list[ReplicaState]],
) -> None:
    d, world = case
    now = 1000.0
    for _ in range(60):
        plan = reconcile(d, world, NODES, now)
        if plan.empty and plan.requeue_at is None and all(r.ready for r in world):
            break
        world = settle(apply_plan(plan, world, now, NODES), now)
        now += 10.0
    else:
        raise AssertionError(f"did not converge: {world}")
    assert len(world) == d.replicas
    assert all(r.revision == d.revision and r.ready for r in world)
    assert reconcile(d, world, NODES, now + 100).empty


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollouts())
def test_property_surge_and_unavailable_bounds_hold_during_a_rollout(
    case: tuple[DeploymentState, list[ReplicaState]],
) -> None:
    d, _ = case
    surge, unavail = _bounds(d)
    # Start from a steady, fully ready set on the old revision.
    world = [replica(revision=1, node="n2") for _ in range(d.replicas)]
    now = 1000.0
    for _ in range(60):
        plan = reconcile(d, world, NODES, now)
        if plan.empty and plan.requeue_at is None:
            break
        after = apply_plan(plan, world, now, NODES)
        assert len(after) <= d.replicas + surge, plan
        ready = sum(1 for r in after if r.ready)
        assert ready >= d.replicas - unavail, plan
        # Half of the new ones become ready at each step: a slow rollout.
        pending = [r for r in after if not r.ready]
        slow = {r.name for r in pending[: (len(pending) + 1) // 2]}
        world = [
            replace(r, ready=True, phase=Phase.RUNNING, ready_since=now) if r.name in slow else r
            for r in after
        ]
        now += 10.0
    assert sorted(r.revision for r in world) == [3] * d.replicas


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10), st.integers(0, 10), st.integers(0, 3))
def test_property_plain_scaling_places_or_stops_the_difference(
    have: int, want: int, lost: int
) -> None:
    nodes = [NodeState("n1"), NodeState("n2"), NodeState("dead", ready=False, not_ready_since=0)]
    world = [replica(node="n1") for _ in range(have)]
    world += [replica(node="dead") for _ in range(lost)]
    plan = reconcile(dep(want), world, nodes, 100.0)
    created = len(plan.place) + sum(1 for r in plan.replace if r.substitute)
    assert have + created - len(plan.stop) == want
    assert len(plan.replace) == lost
    # Never both create and stop when only scaling.
    assert not (plan.place and plan.stop)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 6),
    st.integers(1, 3),
    st.sampled_from(list(RolloutPhase)),
    st.integers(0, 4),
)
def test_property_canary_converges_for_every_phase(
    want: int, canary_n: int, phase: RolloutPhase, junk: int
) -> None:
    d = dep(want, revision=1)
    ro = replace(_canary(phase, canary_n))
    world = [replica(revision=1) for _ in range(want)]
    world += [replica(revision=5, track=Track.CANARY) for _ in range(junk)]
    now = 0.0
    for _ in range(40):
        plan = reconcile(d, world, NODES, now, rollout=ro)
        if plan.empty and plan.requeue_at is None and all(r.ready for r in world):
            break
        world = settle(apply_plan(plan, world, now, NODES), now)
        now += 10
    else:
        raise AssertionError("did not converge")
    canaries = [r for r in world if r.track is Track.CANARY]
    stable = [r for r in world if r.track is Track.STABLE]
    expect_canary = canary_n if ro.wants_canary_replicas() else 0
    assert len(canaries) == expect_canary
    assert all(r.revision == 2 for r in canaries)
    assert len(stable) == want
    assert {r.revision for r in stable} <= {ro.stable_target_revision() if ro.active else 1}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8), st.lists(st.sampled_from(["n1", "n2", "n3"]), min_size=1, max_size=8))
def test_property_lost_node_work_moves_to_ready_nodes(want: int, placement: list[str]) -> None:
    nodes = [replace(NODES[0], ready=False, not_ready_since=0.0), *NODES[1:]]
    world = [replica(node=n) for n in placement]
    now = 100.0
    for _ in range(20):
        plan = reconcile(dep(want), world, nodes, now)
        if plan.empty and plan.requeue_at is None and all(r.ready for r in world):
            break
        world = settle(apply_plan(plan, world, now, nodes), now)
        now += 10
    assert len(world) == want
    assert all(r.node != "n1" for r in world)
