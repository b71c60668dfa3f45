"""Plain data of the controller core: quantities, template hash, names, state."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import (
    Capacity,
    DeploymentState,
    GiB,
    MiB,
    NodeState,
    Phase,
    QuantityError,
    ReplicaState,
    format_cpu,
    format_memory,
    new_replica_name,
    parse_cpu,
    parse_memory,
    template_hash,
    template_requests,
)


@pytest.mark.parametrize(
    ("text", "millis"),
    [("500m", 500), ("1", 1000), ("0.25", 250), ("2.5", 2500), (".5", 500), (2, 2000), ("0", 0)],
)
def test_parse_cpu(text: object, millis: int) -> None:
    assert parse_cpu(text) == millis  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("128Mi", 128 * MiB),
        ("1Gi", GiB),
        ("1G", 10**9),
        ("512", 512),
        ("1.5Gi", 3 * GiB // 2),
        ("64Ki", 65536),
        ("1k", 1000),
    ],
)
def test_parse_memory(text: str, n: int) -> None:
    assert parse_memory(text) == n


@pytest.mark.parametrize("bad", ["lots", "1.2.3", "-1", "m", "", "5 Mi", True])
def test_bad_quantities(bad: object) -> None:
    with pytest.raises(QuantityError):
        parse_cpu(bad)  # type: ignore[arg-type]
    with pytest.raises(QuantityError):
        parse_memory(bad)  # type: ignore[arg-type]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6))
def test_cpu_round_trips(m: int) -> None:
    assert parse_cpu(format_cpu(m)) == m


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**40))
def test_memory_round_trips(n: int) -> None:
    assert parse_memory(format_memory(n)) == n


def test_template_hash_ignores_key_order_and_changes_with_content() -> None:
    a = {"image": "x:1", "env": [{"name": "A", "value": "1"}], "ports": []}
    b = {"ports": [], "env": [{"value": "1", "name": "A"}], "image": "x:1"}
    assert template_hash(a) == template_hash(b)
    assert len(template_hash(a)) == 10
    assert template_hash(a) != template_hash({**a, "image": "x:2"})


def test_replica_names() -> None:
    rng = random.Random(3)
    name = new_replica_name("web", rng)
    assert name.startswith("web-") and len(name) == 9
    suffix = name[4:]
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in suffix)
    taken = [new_replica_name("web", random.Random(3))]
    assert new_replica_name("web", random.Random(3), taken) != taken[0]


def test_from_manifest_reads_the_canonical_form() -> None:
    doc = {
        "metadata": {"name": "web", "labels": {"app": "a"}},
        "spec": {
            "replicas": 3,
            "template": {"image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            "strategy": {
                "type": "Canary",
                "rollingUpdate": {"maxSurge": "1", "maxUnavailable": "0"},
                "canary": {"replicas": 2, "steps": [{"setWeight": 5}]},
                "minReadySeconds": 4,
            },
            "nodeSelector": {"zone": "a"},
            "route": {"host": "h"},
        },
    }
    d = DeploymentState.from_manifest(doc, revision=7, generation=2)
    assert (d.name, d.replicas, d.revision, d.generation) == ("web", 3, 7, 2)
    assert d.template_hash == template_hash(doc["spec"]["template"])
    assert d.rolling.max_surge == "1" and d.rolling.min_ready_seconds == 4
    assert d.canary_replicas == 2 and d.canary_steps == ({"setWeight": 5},)
    assert d.requests == Capacity(1000, GiB, 1)  # limits stand in for missing requests
    assert d.node_selector == {"zone": "a"} and d.route == {"host": "h"}


def test_template_requests_default_to_zero() -> None:
    assert template_requests({"image": "x"}) == Capacity(0, 0, 1)


def test_node_free_and_load() -> None:
    n = NodeState("a", capacity=Capacity(1000, 1000, 10), allocated=Capacity(500, 250, 2))
    assert n.free == Capacity(500, 750, 8)
    assert n.load == pytest.approx(0.375)


def test_replica_gone() -> None:
    r = ReplicaState("web-1", "web")
    assert not r.gone
    assert r.with_(draining=True).gone
    assert r.with_(phase=Phase.TERMINATING).gone
    assert r.with_(phase=Phase.FAILED).gone
    assert not r.with_(phase=Phase.RUNNING).gone
