"""Routing by Host and longest path prefix; the table's JSON form and validation."""

from __future__ import annotations

import pytest

from proxy.table import (
    Endpoint,
    Route,
    Table,
    TableError,
    normalize_host,
    table_from_dict,
    table_from_json,
    table_to_json,
)


def table() -> Table:
    return Table(
        version=3,
        routes=(
            Route(deployment="root", path_prefix="/"),
            Route(deployment="api", path_prefix="/api"),
            Route(deployment="api-v2", path_prefix="/api/v2"),
            Route(deployment="shop", host="shop.example.com", path_prefix="/"),
            Route(deployment="shop-img", host="shop.example.com", path_prefix="/img/"),
        ),
    )


@pytest.mark.parametrize(
    ("host", "path", "want"),
    [
        ("x", "/", "root"),
        ("x", "/api", "api"),
        ("x", "/api/users", "api"),
        ("x", "/api?q=1", "api"),
        ("x", "/apix", "root"),
        ("x", "/api/v2/things", "api-v2"),
        ("shop.example.com", "/", "shop"),
        ("shop.example.com", "/img/a.png", "shop-img"),
        ("shop.example.com", "/api", "shop"),
    ],
)
def test_lookup_longest_prefix_exact_host_first(host: str, path: str, want: str) -> None:
    route = table().lookup(host, path)
    assert route is not None and route.deployment == want


def test_no_catch_all_means_no_route() -> None:
    t = Table(routes=(Route(deployment="api", path_prefix="/api"),))
    assert t.lookup("x", "/other") is None


def test_normalize_host() -> None:
    assert normalize_host("Shop.Example.COM:8080") == "shop.example.com"
    assert normalize_host("[::1]:80") == "[::1]"


def test_json_round_trip() -> None:
    t = Table(
        version=7,
        routes=(
            Route(
                deployment="web",
                canary_weight=20,
                endpoints=(
                    Endpoint("web", "stable", "10.0.0.1", 80, revision=1, replica="web-1"),
                    Endpoint("web", "canary", "10.0.0.2", 80, revision=2, draining=True),
                ),
            ),
        ),
    )
    back = table_from_json(table_to_json(t))
    assert back.version == 7 and back.routes == t.routes
    assert [e.key for e in back.routes[0].canary] == []  # draining: not serving
    assert [e.key for e in back.routes[0].stable] == ["10.0.0.1:80"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"routes": [{"host": "x"}]}, "routes[0]: missing deployment"),
        ({"routes": [{"deployment": "w", "canary_weight": 101}]}, "canary_weight 101"),
        (
            {"routes": [{"deployment": "w", "endpoints": [{"address": "a", "port": 0}]}]},
            "endpoints[0]: port 0",
        ),
        (
            {
                "routes": [
                    {"deployment": "w", "endpoints": [{"address": "a", "port": 1, "track": "beta"}]}
                ]
            },
            "track",
        ),
        ({"routes": [{"deployment": "w", "endpoints": [{"port": 1}]}]}, "missing address"),
    ],
)
def test_bad_tables_are_named(raw: dict, needle: str) -> None:
    with pytest.raises(TableError, match=None) as exc:
        table_from_dict(raw)
    assert needle in str(exc.value)


def test_bad_json() -> None:
    with pytest.raises(TableError, match="table JSON"):
        table_from_json(b"{nope")
