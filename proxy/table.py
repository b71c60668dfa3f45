"""The endpoint table as plain data, and routing by Host and path prefix.

Owns the proxy's domain view of the controller's `EndpointTable`: frozen
`Endpoint`/`Route`/`Table` values, their JSON form (what the supervisor hands
its workers and what `/admin/table` shows), and `Table.lookup`, which maps a
request's Host and path to a route with dict lookups and a scan of that
host's prefixes (longest first) -- nothing is compiled per request.
It must not import protobuf, grpc or asyncio: `proxy.discovery` converts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

STABLE = "stable"
CANARY = "canary"
TRACKS = (STABLE, CANARY)


class TableError(ValueError):
    """A table that cannot be used: names the route or endpoint at fault."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    deployment: str
    track: str
    address: str
    port: int
    revision: int = 0
    replica: str = ""
    ready: bool = True
    draining: bool = False
    weight: int = 1
    node: str = ""
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.address}:{self.port}")

    @property
    def serving(self) -> bool:
        """Takes new requests: ready and not draining."""
        return self.ready and not self.draining


@dataclass(frozen=True, slots=True)
class Route:
    deployment: str
    host: str = ""
    path_prefix: str = "/"
    canary_weight: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    stable: tuple[Endpoint, ...] = field(default=(), compare=False)
    canary: tuple[Endpoint, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        serving = [e for e in self.endpoints if e.serving]
        object.__setattr__(self, "stable", tuple(e for e in serving if e.track != CANARY))
        object.__setattr__(self, "canary", tuple(e for e in serving if e.track == CANARY))


def normalize_host(host: str) -> str:
    """'Example.COM:8080' -> 'example.com'; '[::1]:80' -> '[::1]'."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    return host.split(":", 1)[0]


def _normalize_prefix(prefix: str) -> str:
    return prefix if prefix.startswith("/") else "/" + prefix


@dataclass(frozen=True, slots=True)
class Table:
    version: int = 0
    routes: tuple[Route, ...] = ()
    # host ("" = any host) -> ((prefix, route), ...), longest prefix first.
    index: dict[str, tuple[tuple[str, Route], ...]] = field(default_factory=dict, compare=False)
    by_deployment: dict[str, Route] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        groups: dict[str, list[tuple[str, Route]]] = {}
        for route in self.routes:
            host = normalize_host(route.host)
            groups.setdefault(host, []).append((_normalize_prefix(route.path_prefix), route))
        for host, entries in groups.items():
            entries.sort(key=lambda pr: len(pr[0]), reverse=True)
            self.index[host] = tuple(entries)
        for route in self.routes:
            self.by_deployment[route.deployment] = route

    def lookup(self, host: str, path: str) -> Route | None:
        """The route for a (normalized) host and a path: exact host first, then any host."""
        for candidates in (self.index.get(host), self.index.get("")):
            if candidates:
                for prefix, route in candidates:
                    if path.startswith(prefix) and _on_boundary(path, prefix):
                        return route
        return None


def _on_boundary(path: str, prefix: str) -> bool:
    """'/api' matches '/api', '/api/x' and '/api?q', not '/apix'."""
    n = len(prefix)
    return n == len(path) or prefix.endswith("/") or path[n] in "/?#"


def endpoint_to_dict(e: Endpoint) -> dict[str, Any]:
    return {
        "deployment": e.deployment,
        "track": e.track,
        "revision": e.revision,
        "replica": e.replica,
        "address": e.address,
        "port": e.port,
        "ready": e.ready,
        "draining": e.draining,
        "weight": e.weight,
        "node": e.node,
    }


def table_to_dict(table: Table) -> dict[str, Any]:
    return {
        "version": table.version,
        "routes": [
            {
                "deployment": r.deployment,
                "host": r.host,
                "path_prefix": r.path_prefix,
                "canary_weight": r.canary_weight,
                "endpoints": [endpoint_to_dict(e) for e in r.endpoints],
            }
            for r in table.routes
        ],
    }


def _endpoint_from_dict(raw: dict[str, Any], where: str) -> Endpoint:
    try:
        port = int(raw["port"])
        track = str(raw.get("track") or STABLE)
        if track not in TRACKS:
            raise TableError(f"{where}: track must be stable or canary, got {track!r}")
        if not 0 < port < 65536:
            raise TableError(f"{where}: port {port} out of range")
        return Endpoint(
            deployment=str(raw.get("deployment", "")),
            track=track,
            address=str(raw["address"]),
            port=port,
            revision=int(raw.get("revision", 0)),
            replica=str(raw.get("replica", "")),
            ready=bool(raw.get("ready", True)),
            draining=bool(raw.get("draining", False)),
            weight=max(1, int(raw.get("weight") or 1)),
            node=str(raw.get("node", "")),
        )
    except KeyError as exc:
        raise TableError(f"{where}: missing {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise TableError(f"{where}: {exc}") from None


def table_from_dict(raw: dict[str, Any]) -> Table:
    """Validate and build a Table; TableError names the first bad entry."""
    routes: list[Route] = []
    for i, r in enumerate(raw.get("routes", [])):
        where = f"routes[{i}]"
        name = str(r.get("deployment") or "")
        if not name:
            raise TableError(f"{where}: missing deployment")
        weight = int(r.get("canary_weight") or 0)
        if not 0 <= weight <= 100:
            raise TableError(f"{where} ({name}): canary_weight {weight} not in 0..100")
        eps = tuple(
            _endpoint_from_dict({"deployment": name, **e}, f"{where} ({name}).endpoints[{j}]")
            for j, e in enumerate(r.get("endpoints", []))
        )
        routes.append(
            Route(
                deployment=name,
                host=str(r.get("host") or ""),
                path_prefix=str(r.get("path_prefix") or "/"),
                canary_weight=weight,
                endpoints=eps,
            )
        )
    return Table(version=int(raw.get("version") or 0), routes=tuple(routes))


def table_to_json(table: Table) -> bytes:
    return json.dumps(table_to_dict(table), separators=(",", ":")).encode()


def table_from_json(data: bytes) -> Table:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise TableError(f"table JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TableError("table JSON: expected an object")
    return table_from_dict(raw)
