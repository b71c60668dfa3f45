"""The etcd key layout of Gantry: every key the controller reads or writes.

Owns the names only (pure string functions); it does no I/O. Values are
JSON documents readable with `etcdctl get --prefix /gantry/`.

    /gantry/leader                          {"id", "address"}  (leased: election)
    /gantry/deployments/<name>              Deployment (protobuf-JSON camelCase)
    /gantry/revisions/<name>/<rev>          RevisionRecord
    /gantry/rollouts/<name>                 Rollout
    /gantry/replicas/<deployment>/<replica> Replica + {"desired", "drainSeconds", ...}
    /gantry/nodes/<name>                    Node + {"notReadySince"}
    /gantry/heartbeats/<name>               {"lease", "at"}  (leased: node liveness)
    /gantry/events/<kind>/<name>/<reason>   Event (one record per object and reason)
"""

from __future__ import annotations

ROOT = "/gantry/"
LEADER = "/gantry/leader"
DEPLOYMENTS = "/gantry/deployments/"
REVISIONS = "/gantry/revisions/"
ROLLOUTS = "/gantry/rollouts/"
REPLICAS = "/gantry/replicas/"
NODES = "/gantry/nodes/"
HEARTBEATS = "/gantry/heartbeats/"
EVENTS = "/gantry/events/"


def deployment(name: str) -> str:
    return f"{DEPLOYMENTS}{name}"


def revision(name: str, rev: int) -> str:
    return f"{REVISIONS}{name}/{rev:08d}"


def revisions(name: str) -> str:
    return f"{REVISIONS}{name}/"


def rollout(name: str) -> str:
    return f"{ROLLOUTS}{name}"


def replicas(deployment_name: str) -> str:
    return f"{REPLICAS}{deployment_name}/"


def replica(deployment_name: str, name: str) -> str:
    return f"{REPLICAS}{deployment_name}/{name}"


def node(name: str) -> str:
    return f"{NODES}{name}"


def heartbeat(name: str) -> str:
    return f"{HEARTBEATS}{name}"


def events(kind: str, name: str) -> str:
    return f"{EVENTS}{kind}/{name}/"


def event(kind: str, name: str, reason: str) -> str:
    return f"{EVENTS}{kind}/{name}/{reason}"


def tail(prefix: str, key: str) -> str:
    """The part of `key` after `prefix` ('' when key is outside it)."""
    return key[len(prefix) :] if key.startswith(prefix) else ""


def replica_parts(key: str) -> tuple[str, str] | None:
    """('web', 'web-x1y2') from /gantry/replicas/web/web-x1y2."""
    rest = tail(REPLICAS, key)
    if "/" not in rest:
        return None
    dep, _, name = rest.partition("/")
    return (dep, name) if dep and name else None
