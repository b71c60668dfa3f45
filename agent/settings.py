"""The node agent's settings: one frozen dataclass, built once at start-up.

Filled by gantry.config.load_settings from defaults < the TOML file's
[agent] table < GANTRY_AGENT_<FIELD> < command-line flags. Derived values
(capacity from the machine, the agent URL, labels) are computed by the pure
helpers below, never by code deep in the agent.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AgentSettings:
    # Controllers to follow, "host:port" each.
    controller: tuple[str, ...] = ()
    # The node's name (default: the host name) and the address its published ports answer on.
    name: str = ""
    address: str = "127.0.0.1"
    # The agent's HTTP server (/metrics, /healthz, /logs/<replica>).
    listen: str = "127.0.0.1:7070"
    # URL the CLI uses to reach the agent's HTTP server (default http://<address>:<listen port>).
    agent_url: str = ""
    state_dir: Path = Path("/var/lib/gantry/agent")
    # core | runc
    runtime: str = "core"
    # Names every host object (container ids, links, nft tables, cgroups) start with.
    prefix: str = "gantry"
    # Registry images are pulled from when a bare name is given ("host:port").
    registry: str = ""
    # Container subnet of this node (CIDR); empty: the network module's default.
    subnet: str = ""
    # Host ports published container ports get, "low-high".
    host_ports: str = "30000-32767"
    # Capacity offered to the scheduler; 0 = measured from the machine.
    cpu_millis: int = 0
    memory_bytes: int = 0
    pods: int = 110
    # Node labels, "k=v,k=v".
    labels: str = ""
    # Used when a template sets no terminationGracePeriodSeconds.
    termination_grace_seconds: float = 30.0
    heartbeat_interval: float = 1.0
    # Restart backoff: base doubling up to cap; reset after running `reset` seconds.
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    backoff_reset: float = 60.0
    # Each replica's log file is capped at this size (one older file is kept).
    log_max_bytes: int = 10 * 1024 * 1024
    # Stop every container when the agent exits (default: leave them running).
    stop_containers_on_exit: bool = False
    log_level: str = "INFO"


class SettingsError(ValueError):
    pass


def node_name(s: AgentSettings) -> str:
    return s.name or socket.gethostname()


def split_host_port(text: str, *, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SettingsError(f"{what}: expected host:port, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def agent_url(s: AgentSettings, bound_port: int) -> str:
    if s.agent_url:
        return s.agent_url
    return f"http://{s.address}:{bound_port}"


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"labels: expected k=v, got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def machine_memory_bytes(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def capacity(s: AgentSettings) -> tuple[int, int, int]:
    """(cpu_millis, memory_bytes, pods): settings win, else the machine's."""
    cpu = s.cpu_millis or (os.cpu_count() or 1) * 1000
    mem = s.memory_bytes
    if not mem:
        try:
            mem = machine_memory_bytes(Path("/proc/meminfo").read_text())
        except OSError:
            mem = 0
    return cpu, mem, s.pods


def validate(s: AgentSettings) -> None:
    """Raise SettingsError naming the first unusable setting."""
    if not s.controller:
        raise SettingsError("controller: at least one controller address is required")
    for c in s.controller:
        if not c.startswith("unix:"):  # grpc's unix:/path targets are fine as they are
            split_host_port(c, what="controller")
    split_host_port(s.listen, what="listen")
    if s.runtime not in ("core", "runc"):
        raise SettingsError(f"runtime: expected core or runc, got {s.runtime!r}")
    if not s.prefix or len(s.prefix) > 8 or not s.prefix.isalnum():
        raise SettingsError(f"prefix: 1-8 letters or digits, got {s.prefix!r}")
    if s.heartbeat_interval <= 0:
        raise SettingsError("heartbeat_interval: must be > 0")
    parse_labels(s.labels)
    lo, _, hi = s.host_ports.partition("-")
    if not lo.isdigit() or not (hi or lo).isdigit() or not 0 < int(lo) <= int(hi or lo) < 65536:
        raise SettingsError(f"host_ports: expected low-high within 1-65535, got {s.host_ports!r}")
