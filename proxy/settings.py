"""The proxy's settings (section "proxy" of gantry.config.load_settings)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from proxy.select import Balance


@dataclass(frozen=True)
class ProxySettings:
    # Where clients connect (every worker binds it with SO_REUSEPORT).
    listen: str = "0.0.0.0:8080"
    # Admin server: /metrics, /healthz, /admin/table, /admin/stats.
    admin: str = "127.0.0.1:9180"
    # Controller gRPC addresses; the proxy follows the leader among them.
    controller: tuple[str, ...] = ()
    # Worker processes; 0 = one per CPU core.
    workers: int = 0
    balance: str = "least_request"
    proxy_id: str = ""
    connect_timeout: float = 2.0
    # From request head to the end of the response (WebSocket tunnels exempt).
    request_timeout: float = 60.0
    # A client must deliver a complete request head within this (slow clients get 408).
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    upstream_idle_timeout: float = 30.0
    max_header_bytes: int = 32768
    # Concurrent requests per endpoint and worker; 0 = no cap.
    max_inflight_per_endpoint: int = 1000
    max_idle_per_endpoint: int = 64
    outlier_consecutive: int = 5
    outlier_base_ejection: float = 2.0
    outlier_max_ejection: float = 60.0
    retry_budget_ratio: float = 0.2
    shutdown_timeout: float = 20.0
    # Seed of the worker's random source (0 = from the OS); workers add their index.
    seed: int = 0

    def balance_policy(self) -> Balance:
        return Balance(self.balance)

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["controller"] = list(self.controller)
        return out


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """'127.0.0.1:8080' -> ('127.0.0.1', 8080); ValueError names `what`."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
