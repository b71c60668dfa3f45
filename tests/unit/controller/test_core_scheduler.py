"""The pure scheduler: filters, scores, spreading, explanations, reasons."""

from __future__ import annotations

import random
import statistics

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import Capacity, DeploymentState, GiB, MiB, NodeState, ReplicaState
from controller.scheduler import (
    Placement,
    PlacementRequest,
    Snapshot,
    Unschedulable,
    candidate_limit,
    requests_for,
    schedule,
)


def node(
    name: str, cpu: int = 4000, mem: int = 8 * GiB, pods: int = 110, **kw: object
) -> NodeState:
    return NodeState(name, capacity=Capacity(cpu, mem, pods), **kw)  # type: ignore[arg-type]


def req(name: str = "web-1", cpu: int = 100, mem: int = 64 * MiB, **kw: object) -> PlacementRequest:
    return PlacementRequest(name, "web", cpu, mem, **kw)  # type: ignore[arg-type]


def test_places_on_the_only_ready_node() -> None:
    snap = Snapshot([node("a", ready=False), node("b")])
    [p] = schedule([req()], snap, random.Random(1))
    assert isinstance(p, Placement) and p.node == "b"
    assert p.filtered == {"not ready": 1}
    assert "placed web-1 on b" in p.explain()
    assert "1 nodes filtered: 1 not ready" in p.explain()


def test_reason_string_like_kubernetes() -> None:
    nodes = [node("a", mem=32 * MiB), node("b", mem=32 * MiB), node("c", ready=False)]
    [u] = schedule([req()], Snapshot(nodes), random.Random(1))
    assert isinstance(u, Unschedulable)
    assert u.reason == "0/3 nodes: 2 insufficient memory, 1 not ready"
    assert u.explain() == "cannot place web-1: 0/3 nodes: 2 insufficient memory, 1 not ready"


def test_every_filter_has_its_reason() -> None:
    nodes = [
        node("cpu", cpu=50),
        node("pods", pods=0),
        node("sel", labels={"zone": "b"}),
        node("down", ready=False),
    ]
    [u] = schedule([req(node_selector={"zone": "a"})], Snapshot(nodes), random.Random(3))
    assert isinstance(u, Unschedulable)
    assert u.filtered == {
        "node selector mismatch": 3,  # the selector is checked before resources
        "not ready": 1,
    }
    [u] = schedule([req()], Snapshot(nodes[:2]), random.Random(3))
    assert isinstance(u, Unschedulable)
    assert u.reason == "0/2 nodes: 1 insufficient cpu, 1 too many pods"


def test_node_selector_picks_matching_nodes() -> None:
    nodes = [node(f"n{i}", labels={"disk": "ssd" if i == 3 else "hdd"}) for i in range(6)]
    out = schedule(
        [req(f"r{i}", node_selector={"disk": "ssd"}) for i in range(4)],
        Snapshot(nodes),
        random.Random(0),
    )
    assert all(isinstance(p, Placement) and p.node == "n3" for p in out)


def test_snapshot_allocations_are_updated_as_it_goes() -> None:
    snap = Snapshot([node("a", cpu=1000), node("b", cpu=1000)])
    out = schedule([req(f"r{i}", cpu=400) for i in range(5)], snap, random.Random(0))
    placed = [p for p in out if isinstance(p, Placement)]
    assert len(placed) == 4  # two of 400m per 1000m node
    assert isinstance(out[4], Unschedulable)
    assert out[4].reason == "0/2 nodes: 2 insufficient cpu"
    assert snap.allocated("a").cpu_millis == 800 and snap.allocated("b").cpu_millis == 800


def test_release_frees_room_so_a_pending_replica_fits_later() -> None:
    snap = Snapshot([node("a", cpu=500)])
    [p, u] = schedule([req("r1", cpu=400), req("r2", cpu=400)], snap, random.Random(0))
    assert isinstance(p, Placement) and isinstance(u, Unschedulable)
    snap.release("a", "web", 400, 64 * MiB)
    [p2] = schedule([req("r2", cpu=400)], snap, random.Random(0))
    assert isinstance(p2, Placement) and p2.node == "a"


def test_least_allocated_prefers_emptier_node() -> None:
    nodes = [node("full", allocated=Capacity(3000, 6 * GiB, 10)), node("empty")]
    [p] = schedule([req()], Snapshot(nodes), random.Random(0))
    assert isinstance(p, Placement) and p.node == "empty"
    assert p.top[0][0] == "empty"


def test_existing_allocation_counts() -> None:
    nodes = [node("a", cpu=1000, allocated=Capacity(900, 0, 1))]
    [u] = schedule([req(cpu=200)], Snapshot(nodes), random.Random(0))
    assert isinstance(u, Unschedulable) and u.reason == "0/1 nodes: 1 insufficient cpu"


def test_replicas_of_one_deployment_spread_over_nodes() -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    out = schedule([req(f"r{i}") for i in range(6)], Snapshot(nodes), random.Random(7))
    counts = statistics.multimode([p.node for p in out if isinstance(p, Placement)])
    assert len(counts) == 3  # 2 on each


def test_spreading_counts_running_replicas() -> None:
    nodes = [node("a"), node("b")]
    running = [ReplicaState(f"web-{i}", "web", node="a") for i in range(3)]
    out = schedule([req("new")], Snapshot(nodes, running), random.Random(0))
    assert isinstance(out[0], Placement) and out[0].node == "b"


def test_candidate_limit_like_nomad() -> None:
    assert candidate_limit(3) == 3
    assert candidate_limit(1000) == 10
    assert candidate_limit(1000, 2) == 20
    assert candidate_limit(5000) == 13


def test_large_cluster_scores_only_a_sample() -> None:
    nodes = [node(f"n{i}") for i in range(1000)]
    [p] = schedule([req()], Snapshot(nodes), random.Random(0))
    assert isinstance(p, Placement)
    assert p.evaluated == 10


def test_requests_for_uses_template_requests_and_selector() -> None:
    d = DeploymentState(
        name="api",
        replicas=2,
        template={"resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
        node_selector={"zone": "a"},
    )
    [r] = requests_for(d, ["api-x"])
    assert (r.cpu_millis, r.memory_bytes, dict(r.node_selector)) == (250, 128 * MiB, {"zone": "a"})


def test_same_seed_same_decisions() -> None:
    nodes = [node(f"n{i}") for i in range(200)]
    reqs = [req(f"r{i}") for i in range(50)]
    a = schedule(reqs, Snapshot(nodes), random.Random(42))
    b = schedule(reqs, Snapshot(nodes), random.Random(42))
    assert [getattr(p, "node", None) for p in a] == [getattr(p, "node", None) for p in b]


def test_fill_is_even_on_a_large_cluster() -> None:
    rng = random.Random(5)
    nodes = [node(f"n{i}", cpu=8000, mem=32 * GiB) for i in range(200)]
    reqs = [
        PlacementRequest(f"d{d}-{j}", f"d{d}", rng.choice([100, 250, 500]), 128 * MiB)
        for d in range(40)
        for j in range(50)
    ]
    snap = Snapshot(nodes)
    out = schedule(reqs, snap, rng)
    assert all(isinstance(p, Placement) for p in out)
    fr = snap.cpu_fractions()
    assert statistics.pstdev(fr) / statistics.mean(fr) < 0.1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 4000), st.integers(0, 4), st.booleans()), min_size=1, max_size=12
    ),
    st.lists(st.integers(1, 1500), min_size=1, max_size=30),
)
def test_property_never_overcommits_and_reasons_add_up(
    caps: list[tuple[int, int, bool]], cpus: list[int]
) -> None:
    nodes = [node(f"n{i}", cpu=c, pods=p, ready=r) for i, (c, p, r) in enumerate(caps)]
    snap = Snapshot(nodes)
    out = schedule([req(f"r{i}", cpu=c, mem=0) for i, c in enumerate(cpus)], snap, random.Random(1))
    for i, n in enumerate(nodes):
        assert snap.free_cpu[i] >= 0 and snap.free_pods[i] >= 0
        if not n.ready:
            assert snap.allocated(n.name).pods == 0
    for p in out:
        if isinstance(p, Unschedulable):
            assert sum(p.filtered.values()) == len(nodes)
            assert p.reason.startswith(f"0/{len(nodes)} nodes: ")
