"""Backend choice: canary split, override, sticky bucket, balancing, caps, ejection."""

from __future__ import annotations

import random
from collections import Counter

from proxy.select import (
    Balance,
    Choice,
    NoBackend,
    RequestKey,
    choose,
    parse_bucket,
    parse_override,
    pick_endpoint,
)
from proxy.table import Endpoint, Route


def ep(port: int, track: str = "stable", **kw: object) -> Endpoint:
    return Endpoint(deployment="web", track=track, address="10.0.0.1", port=port, **kw)  # type: ignore[arg-type]


def route(weight: int, stable: int = 3, canary: int = 1) -> Route:
    eps = [ep(8000 + i) for i in range(stable)] + [ep(9000 + i, "canary") for i in range(canary)]
    return Route(deployment="web", canary_weight=weight, endpoints=tuple(eps))


def split(r: Route, n: int = 10_000, seed: int = 7) -> float:
    rng = random.Random(seed)
    canary = 0
    for _ in range(n):
        c = choose(r, RequestKey(), Balance.LEAST_REQUEST, rng, inflight={}, ejected=())
        assert isinstance(c, Choice)
        canary += c.track == "canary"
    return canary / n


def test_weight_10_gives_10_percent_within_1_5() -> None:
    assert abs(split(route(10)) - 0.10) <= 0.015


def test_split_is_independent_of_replica_counts() -> None:
    assert abs(split(route(10, stable=1, canary=9)) - 0.10) <= 0.015
    assert abs(split(route(50, stable=9, canary=1), seed=3) - 0.50) <= 0.02


def test_weight_0_and_100_are_exact() -> None:
    assert split(route(0), n=2000) == 0.0
    assert split(route(100), n=2000) == 1.0


def test_header_override_wins_over_weight() -> None:
    rng = random.Random(1)
    for _ in range(200):
        always = choose(
            route(0),
            RequestKey(override="always"),
            Balance.LEAST_REQUEST,
            rng,
            inflight={},
            ejected=(),
        )
        never = choose(
            route(100),
            RequestKey(override="never"),
            Balance.LEAST_REQUEST,
            rng,
            inflight={},
            ejected=(),
        )
        assert isinstance(always, Choice) and always.track == "canary"
        assert isinstance(never, Choice) and never.track == "stable"


def test_sticky_bucket_keeps_a_user_on_one_version() -> None:
    rng = random.Random(2)
    first = choose(route(30), RequestKey(), Balance.LEAST_REQUEST, rng, inflight={}, ejected=())
    assert isinstance(first, Choice) and first.set_cookie
    for _ in range(100):
        again = choose(
            route(30),
            RequestKey(bucket=first.bucket),
            Balance.LEAST_REQUEST,
            rng,
            inflight={},
            ejected=(),
        )
        assert isinstance(again, Choice)
        assert again.track == first.track and not again.set_cookie
    # raising the weight keeps users already on the canary there
    for bucket in range(100):
        low = choose(
            route(10),
            RequestKey(bucket=bucket),
            Balance.LEAST_REQUEST,
            rng,
            inflight={},
            ejected=(),
        )
        high = choose(
            route(50),
            RequestKey(bucket=bucket),
            Balance.LEAST_REQUEST,
            rng,
            inflight={},
            ejected=(),
        )
        assert isinstance(low, Choice) and isinstance(high, Choice)
        if low.track == "canary":
            assert high.track == "canary"


def test_no_canary_endpoints_means_stable_and_no_cookie() -> None:
    c = choose(
        route(50, canary=0),
        RequestKey(override="always"),
        Balance.LEAST_REQUEST,
        random.Random(1),
        inflight={},
        ejected=(),
    )
    assert isinstance(c, Choice) and c.track == "stable" and not c.set_cookie


def test_cookie_and_header_parsing() -> None:
    assert parse_bucket("a=1; gantry-bucket=42; b=2") == 42
    assert parse_bucket("gantry-bucket=100") is None
    assert parse_bucket("gantry-bucket=x") is None
    assert parse_bucket(None) is None
    assert parse_override(" Always ") == "always"
    assert parse_override("sometimes") is None


def test_least_request_prefers_the_less_loaded_of_two() -> None:
    eps = (ep(1), ep(2))
    rng = random.Random(3)
    picks = Counter(
        pick_endpoint(
            eps, Balance.LEAST_REQUEST, rng, inflight={eps[0].key: 5}, ejected=(), cap=0
        ).key  # type: ignore[union-attr]
        for _ in range(100)
    )
    assert picks == {eps[1].key: 100}


def test_least_request_spreads_evenly_when_idle() -> None:
    eps = tuple(ep(p) for p in range(1, 5))
    rng = random.Random(4)
    counts = Counter(
        pick_endpoint(eps, Balance.LEAST_REQUEST, rng, inflight={}, ejected=(), cap=0).key
        for _ in range(8000)
    )  # type: ignore[union-attr]
    assert all(1700 < n < 2300 for n in counts.values())


def test_round_robin_cycles() -> None:
    eps = tuple(ep(p) for p in range(1, 4))
    got = [
        pick_endpoint(
            eps, Balance.ROUND_ROBIN, random.Random(), inflight={}, ejected=(), cap=0, seq=i
        )
        for i in range(6)
    ]
    assert got == [eps[0], eps[1], eps[2], eps[0], eps[1], eps[2]]


def test_weighted_follows_weights() -> None:
    eps = (ep(1, weight=1), ep(2, weight=3))
    rng = random.Random(5)
    counts = Counter(
        pick_endpoint(eps, Balance.WEIGHTED, rng, inflight={}, ejected=(), cap=0).key
        for _ in range(8000)
    )  # type: ignore[union-attr]
    assert abs(counts[eps[1].key] / 8000 - 0.75) < 0.03


def test_ejected_are_skipped_unless_all_are() -> None:
    eps = (ep(1), ep(2))
    rng = random.Random(6)
    for _ in range(50):
        assert (
            pick_endpoint(eps, Balance.LEAST_REQUEST, rng, inflight={}, ejected={eps[0].key}, cap=0)
            is eps[1]
        )
    both = {e.key for e in eps}
    assert pick_endpoint(eps, Balance.LEAST_REQUEST, rng, inflight={}, ejected=both, cap=0) in eps


def test_cap_refuses_when_every_endpoint_is_full() -> None:
    eps = (ep(1), ep(2))
    full = {eps[0].key: 2, eps[1].key: 2}
    got = pick_endpoint(
        eps, Balance.LEAST_REQUEST, random.Random(), inflight=full, ejected=(), cap=2
    )
    assert isinstance(got, NoBackend) and "cap" in got.reason
    one_free = {eps[0].key: 2}
    assert (
        pick_endpoint(
            eps, Balance.ROUND_ROBIN, random.Random(), inflight=one_free, ejected=(), cap=2
        )
        is eps[1]
    )


def test_draining_and_unready_get_no_new_requests() -> None:
    r = Route(deployment="web", endpoints=(ep(1, draining=True), ep(2, ready=False), ep(3)))
    rng = random.Random(7)
    for _ in range(50):
        c = choose(r, RequestKey(), Balance.ROUND_ROBIN, rng, inflight={}, ejected=())
        assert isinstance(c, Choice) and c.endpoint.port == 3
    empty = Route(deployment="web", endpoints=(ep(1, draining=True),))
    none = choose(empty, RequestKey(), Balance.LEAST_REQUEST, rng, inflight={}, ejected=())
    assert isinstance(none, NoBackend) and "web" in none.reason


def test_retry_excludes_the_failed_endpoint() -> None:
    eps = (ep(1), ep(2))
    for _ in range(20):
        got = pick_endpoint(
            eps,
            Balance.LEAST_REQUEST,
            random.Random(),
            inflight={},
            ejected=(),
            cap=0,
            exclude=eps[0].key,
        )
        assert got is eps[1]
    alone = pick_endpoint(
        eps[:1],
        Balance.LEAST_REQUEST,
        random.Random(),
        inflight={},
        ejected=(),
        cap=0,
        exclude=eps[0].key,
    )
    assert isinstance(alone, NoBackend)


def test_retry_prefers_another_node() -> None:
    def on(node: str, port: int) -> Endpoint:
        return Endpoint(deployment="web", track="stable", address="10.0.0.1", port=port, node=node)

    eps = (on("n1", 1), on("n1", 2), on("n2", 3), on("n3", 4))
    got = Counter()
    rng = random.Random(3)
    for _ in range(200):
        e = pick_endpoint(
            eps, Balance.LEAST_REQUEST, rng, inflight={}, ejected=(), cap=0, exclude=eps[0].key
        )
        assert isinstance(e, Endpoint)
        got[e.node] += 1
    assert got["n1"] == 0 and got["n2"] > 0 and got["n3"] > 0
    # only the failed node's other replica is left: it is used
    only = pick_endpoint(
        eps[:2], Balance.LEAST_REQUEST, rng, inflight={}, ejected=(), cap=0, exclude=eps[0].key
    )
    assert only is eps[1]
    # without node names, another address counts as another machine
    by_addr = (ep(1), ep(2), Endpoint(deployment="web", track="stable", address="10.0.0.2", port=1))
    for _ in range(50):
        e = pick_endpoint(
            by_addr,
            Balance.LEAST_REQUEST,
            rng,
            inflight={},
            ejected=(),
            cap=0,
            exclude=by_addr[0].key,
        )
        assert e is by_addr[2]


def test_same_seed_same_choices() -> None:
    r = route(25)
    a = [
        choose(r, RequestKey(), Balance.LEAST_REQUEST, random.Random(9), inflight={}, ejected=())
        for _ in range(1)
    ]
    b = [
        choose(r, RequestKey(), Balance.LEAST_REQUEST, random.Random(9), inflight={}, ejected=())
        for _ in range(1)
    ]
    assert a == b
