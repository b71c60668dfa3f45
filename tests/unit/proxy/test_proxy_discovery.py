"""Discovery's boundary: EndpointTable messages become domain tables; bad ones are named."""

from __future__ import annotations

import random

import pytest

from proxy.discovery import next_backoff, table_from_proto
from proxy.fake_discovery import endpoint_table
from proxy.table import TableError


def test_table_from_proto() -> None:
    msg = endpoint_table(
        9,
        [
            {
                "deployment": "web",
                "host": "shop.test",
                "path_prefix": "/api",
                "canary_weight": 25,
                "endpoints": [
                    {"track": "stable", "port": 8001},
                    {"track": "canary", "port": 8002, "weight": 3},
                    {"track": "stable", "port": 8003, "draining": True},
                ],
            }
        ],
    )
    table = table_from_proto(msg)
    assert table.version == 9
    route = table.lookup("shop.test", "/api/x")
    assert route is not None and route.canary_weight == 25
    assert [e.port for e in route.stable] == [8001]
    assert [(e.port, e.weight) for e in route.canary] == [(8002, 3)]


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        ({"deployment": "web", "canary_weight": 140}, "canary_weight 140"),
        ({"deployment": "web", "endpoints": [{"port": 0}]}, "endpoints[0]: bad address"),
        ({"deployment": "", "endpoints": []}, "missing deployment"),
    ],
)
def test_bad_tables_are_refused_with_a_reason(route: dict, needle: str) -> None:
    with pytest.raises(TableError) as exc:
        table_from_proto(endpoint_table(1, [route]))
    assert needle in str(exc.value)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    delays = []
    d = 0.0
    for _ in range(10):
        d = next_backoff(d, rng)
        delays.append(d)
    assert 0.08 <= delays[0] <= 0.12
    assert all(x <= 5.0 * 1.2 for x in delays)
    assert delays[-1] >= 5.0 * 0.8
