"""The controller I/O modules' pure helpers: keys, errors, records, discovery, decisions."""

from __future__ import annotations

import random

import grpc
import pytest

from controller import keys
from controller.api import applied_record, validate
from controller.discovery import endpoint_table, host_of, route_port
from controller.errors import Conflict, Invalid, NotFound, NotLeader, StoreUnavailable, status_code
from controller.events import merge_event
from controller.loop import (
    Allocation,
    decide,
    deployment_state,
    replica_state,
    rollout_state,
    status_of,
)
from controller.model import Capacity, NodeState
from controller.nodes import transition
from controller.nodes_api import observe


def doc(name: str = "web", replicas: int = 2, image: str = "busybox") -> dict:
    return {
        "apiVersion": "gantry/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": {
                "image": image,
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
            },
            "route": {"host": "web.test"},
        },
    }


def test_keys_round_trip() -> None:
    assert keys.replica("web", "web-abc12") == "/gantry/replicas/web/web-abc12"
    assert keys.replica_parts("/gantry/replicas/web/web-abc12") == ("web", "web-abc12")
    assert keys.replica_parts("/gantry/replicas/web") is None
    assert keys.tail(keys.NODES, "/gantry/nodes/n1") == "n1"
    assert keys.revision("web", 3) == "/gantry/revisions/web/00000003"


def test_one_error_table() -> None:
    assert status_code(NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert status_code(Invalid("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(Conflict("x")) == grpc.StatusCode.ABORTED
    assert status_code(StoreUnavailable("x")) == grpc.StatusCode.UNAVAILABLE
    assert status_code(NotLeader("h:1")) == grpc.StatusCode.FAILED_PRECONDITION
    assert str(NotLeader("h:1")) == "not leader; leader=h:1"
    assert status_code(RuntimeError()) == grpc.StatusCode.INTERNAL


def test_apply_created_unchanged_configured_and_revisions() -> None:
    canon = validate(doc())
    action, rec, changed = applied_record(canon, None, now=0.0)
    assert (action, changed, rec["status"]["revision"], rec["metadata"]["generation"]) == (
        "created",
        True,
        1,
        1,
    )
    assert applied_record(validate(doc()), rec, now=1.0)[0] == "unchanged"
    action, scaled, changed = applied_record(validate(doc(replicas=5)), rec, now=2.0)
    assert (action, changed, scaled["status"]["revision"], scaled["metadata"]["generation"]) == (
        "configured",
        False,
        1,
        2,
    )
    action, rolled, changed = applied_record(validate(doc(image="busybox:2")), scaled, now=3.0)
    assert (changed, rolled["status"]["revision"], rolled["metadata"]["generation"]) == (True, 2, 3)
    assert rolled["metadata"]["uid"] == rec["metadata"]["uid"]


def test_validate_locates_every_error_on_one_line() -> None:
    bad = doc(replicas=-1)
    bad["spec"]["template"]["imgae"] = "x"
    with pytest.raises(Invalid) as err:
        validate(bad)
    text = str(err.value)
    assert text.startswith("deployment web: ") and "\n" not in text
    assert "spec.replicas" in text and 'did you mean "image"' in text


def test_event_records_repeat_as_counts() -> None:
    first = merge_event(
        None, obj="deployment/web", type_="Normal", reason="Scheduled", message="m", now=0
    )
    again = merge_event(
        first, obj="deployment/web", type_="Normal", reason="Scheduled", message="m", now=5
    )
    assert again["count"] == 2 and again["firstSeen"] == first["firstSeen"]
    other = merge_event(
        again, obj="deployment/web", type_="Normal", reason="Scheduled", message="n", now=6
    )
    assert other["count"] == 1 and other["message"] == "n"


def test_node_transitions() -> None:
    ready = {"name": "n1", "status": "Ready"}
    down = transition(ready, alive=False, now=10.0)
    assert down is not None and down["status"] == "NotReady" and down["notReadySince"] == 10.0
    assert transition(down, alive=False, now=11.0) is None, "NotReady since stays the first moment"
    up = transition(down, alive=True, now=12.0)
    assert up is not None and up["status"] == "Ready" and "notReadySince" not in up


def test_status_reports_apply_only_to_the_current_owner_and_epoch() -> None:
    rec = {"name": "web-a", "node": "n1", "epoch": 7, "phase": "Scheduled", "ready": False}
    st = {
        "replica": "web-a",
        "epoch": 7,
        "phase": "Running",
        "ready": True,
        "ports": [{"containerPort": 8080, "hostPort": 31000}],
    }
    new = observe(rec, st, node="n1", now=5.0)
    assert (
        new is not None
        and new["ready"]
        and new["readySince"] == 5.0
        and new["ports"][0]["hostPort"] == 31000
    )
    assert observe(rec, st, node="n2", now=5.0) == rec, "another node cannot speak for it"
    assert observe(rec, {**st, "epoch": 6}, node="n1", now=5.0) == rec, "an older epoch is stale"
    draining = observe({**rec, "draining": True}, st, node="n1", now=5.0)
    assert draining is not None and draining["phase"] == "Terminating"


def replica(
    name: str,
    node: str,
    *,
    ready: bool = True,
    draining: bool = False,
    port: int = 31000,
    rev: int = 1,
) -> dict:
    return {
        "name": name, "deployment": "web", "node": node, "revision": rev, "track": "stable",
        "phase": "Running", "ready": ready, "draining": draining, "epoch": 1,
        "ports": [{"containerPort": 8080, "hostPort": port}], "template": doc()["spec"]["template"],
        "readySince": 0.0 if ready else None,
    }  # fmt: skip


def test_endpoint_table_keeps_ready_replicas_on_live_nodes() -> None:
    deps = {keys.deployment("web"): validate(doc())}
    reps = {
        keys.replica("web", "a"): replica("a", "n1", port=31001),
        keys.replica("web", "b"): replica("b", "n2", port=31002),
        keys.replica("web", "c"): replica("c", "n1", ready=False),
        keys.replica("web", "d"): replica("d", "n1", draining=True, port=31004),
    }
    nodes = {
        keys.node("n1"): {"name": "n1", "address": "10.0.0.1"},
        keys.node("n2"): {"name": "n2", "address": "10.0.0.2:7000"},
    }
    rollouts = {keys.rollout("web"): {"canaryWeight": 20}}
    (route,) = endpoint_table(deps, reps, nodes, {"n1"}, rollouts)
    assert (route["host"], route["canaryWeight"]) == ("web.test", 20)
    eps = {e["replica"]: e for e in route["endpoints"]}
    assert set(eps) == {"a", "d"}, "n2 is not alive; c is not ready"
    assert (eps["a"]["address"], eps["a"]["port"], eps["a"]["draining"]) == (
        "10.0.0.1",
        31001,
        False,
    )
    assert eps["d"]["draining"]
    assert host_of("10.0.0.2:7000") == "10.0.0.2"
    assert (
        route_port(
            {
                "template": {
                    "ports": [{"name": "a", "containerPort": 1}, {"name": "b", "containerPort": 2}]
                },
                "route": {"port": "b"},
            }
        )
        == 2
    )


def node(
    name: str, *, ready: bool = True, since: float | None = None, mem: int = 8 * 2**30
) -> NodeState:
    return NodeState(
        name=name, ready=ready, capacity=Capacity(4000, mem, 110), not_ready_since=since
    )


def test_decide_replaces_lost_replicas_only_after_the_grace_period() -> None:
    dep = deployment_state({**validate(doc()), "status": {"revision": 1}})
    reps = [replica_state(replica("web-a", "n1")), replica_state(replica("web-b", "n2"))]
    nodes = [node("n1", ready=False, since=100.0), node("n2"), node("n3")]
    kw = dict(grace=3.0, drain_timeout=10.0, drain_started={}, rng=random.Random(1))
    early = decide(dep, reps, nodes, now=101.0, **kw)
    assert not early.place and not early.remove and early.requeue_at == 103.0
    late = decide(dep, reps, nodes, now=103.5, **kw)
    assert late.remove == ("web-a",) and late.replaced == ("web-a",)
    assert len(late.place) == 1 and late.place[0].node == "n3", "spread away from n2's replica"


def test_decide_explains_unplaceable_replicas() -> None:
    dep = deployment_state({**validate(doc(replicas=3)), "status": {"revision": 1}})
    nodes = [node("n1", mem=2**29), node("n2", mem=2**29), node("n3", ready=False, since=0.0)]
    d = decide(
        dep,
        [],
        nodes,
        now=1.0,
        grace=3.0,
        drain_timeout=10.0,
        drain_started={},
        rng=random.Random(1),
    )
    assert not d.place and d.unplaced == 3
    assert d.unplaced_reason == "0/3 nodes: 2 insufficient memory, 1 not ready"


def test_decide_on_a_deleted_deployment_drains_then_removes() -> None:
    reps = [
        replica_state(replica("web-a", "n1")),
        replica_state({**replica("web-b", "n1", draining=True), "phase": "Stopped"}),
    ]
    d = decide(
        None,
        reps,
        [node("n1")],
        now=1.0,
        grace=3.0,
        drain_timeout=10.0,
        drain_started={"web-b": 0.0},
        rng=random.Random(1),
    )
    assert d.drain == ("web-a",) and d.remove == ("web-b",)
    stuck = [replica_state(replica("web-c", "n1", draining=True))]
    d = decide(
        None,
        stuck,
        [node("n1")],
        now=20.0,
        grace=3.0,
        drain_timeout=10.0,
        drain_started={"web-c": 5.0},
        rng=random.Random(1),
    )
    assert d.remove == ("web-c",), "a drain that never finishes times out"


def test_status_counts_live_replicas() -> None:
    rec = {**validate(doc()), "status": {"revision": 2}}
    reps = [
        replica("a", "n1", rev=2),
        replica("b", "n1", ready=False, rev=1),
        replica("c", "n1", draining=True, rev=2),
    ]
    st = status_of(rec, reps)
    assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"]) == (2, 1, 1)


def test_allocation_follows_replica_records() -> None:
    alloc = Allocation()
    a, b = replica("a", "n1"), replica("b", "n1")
    alloc.set("ka", a)
    alloc.set("kb", b)
    assert alloc.by_node["n1"] == Capacity(1000, 2 * 2**30, 2)
    alloc.set("kb", {**b, "draining": True})
    assert alloc.by_node["n1"] == Capacity(500, 2**30, 1), "a draining replica frees its room"
    alloc.set("ka", {**a, "node": "n2"})
    alloc.set("kb", None)
    assert alloc.by_node["n1"] == Capacity() and alloc.by_node["n2"] == Capacity(500, 2**30, 1)


def test_rollout_records_read_as_rollout_state() -> None:
    assert rollout_state(None) is None
    ro = rollout_state(
        {
            "deployment": "web",
            "type": "Canary",
            "phase": "Paused",
            "canaryWeight": 20,
            "canaryRevision": 3,
            "stableRevision": 2,
            "canaryReplicas": 2,
            "steps": [{"setWeight": 20}],
        }
    )
    assert ro is not None and (
        ro.phase,
        ro.canary_weight,
        ro.canary_revision,
        ro.canary_replicas,
    ) == ("Paused", 20, 3, 2)
    assert ro.wants_canary_replicas()
    assert rollout_state({"deployment": "web", "phase": "Bogus"}) is None


def test_revision_numbers_reuse_known_templates_and_never_collide() -> None:
    from controller.model import template_hash

    v1, v2 = validate(doc()), validate(doc(image="busybox:2"))
    _, rec, _ = applied_record(v1, None, now=0.0)
    # Revisions 1 (v1), 2 (v2) and 3 (an aborted canary) are stored; the deployment is back on 1.
    known = {
        1: template_hash(v1["spec"]["template"]),
        2: template_hash(v2["spec"]["template"]),
        3: "c0ffee",
    }
    _, back, changed = applied_record(v2, rec, now=1.0, revisions=known)
    assert changed and back["status"]["revision"] == 2, "a template seen before keeps its revision"
    _, new, _ = applied_record(validate(doc(image="busybox:4")), back, now=2.0, revisions=known)
    assert new["status"]["revision"] == 4, "a new template comes after every stored revision"
