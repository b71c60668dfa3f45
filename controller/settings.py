"""The controller's settings: one frozen dataclass, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControllerSettings:
    """Filled by gantry.config.load_settings(section="controller")."""

    # Where the gRPC services listen (Cluster, Nodes, Discovery, health, reflection).
    listen: str = "127.0.0.1:7070"
    # The address other processes reach this controller at (default: listen).
    advertise: str = ""
    # Where /metrics is served ("" disables it).
    metrics: str = "127.0.0.1:7071"
    # etcd endpoints, comma separated.
    etcd: str = "127.0.0.1:2379"
    # This controller's id in the election (default: advertise address).
    id: str = ""
    # Leadership lease TTL, seconds.
    leader_ttl: int = 5
    # Node liveness lease TTL, seconds, and the heartbeat interval agents are told to use.
    node_ttl: int = 3
    heartbeat_interval: float = 1.0
    # How long a NotReady node keeps its replicas before they are replaced elsewhere.
    node_grace: float = 3.0
    # How long a replica leaving the proxy waits before its container is stopped.
    drain_seconds: float = 2.0
    # Full relist of deployments into the work queue, seconds.
    resync_seconds: float = 30.0
    # Concurrent reconcile workers (each handles one deployment at a time).
    workers: int = 4
    # Largest number of operations per etcd transaction.
    txn_ops: int = 100

    @property
    def address(self) -> str:
        return self.advertise or self.listen

    @property
    def ident(self) -> str:
        return self.id or self.address

    @property
    def etcd_endpoints(self) -> list[str]:
        return [e.strip() for e in self.etcd.split(",") if e.strip()]
