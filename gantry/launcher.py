"""The local cluster: what `gantry up`, `gantry status` and `gantry down` run.

`plan_parts` is pure: from the settings it derives each part's command line,
ports, pid file, log and health check. The rest starts parts in order (etcd,
registry, controller, agent, proxy), waits for each to be healthy, records
them in `<state>/run/`, and stops exactly the processes it recorded — checked
by pid *and* start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gantry import hostclean, procs


@dataclass(frozen=True)
class ClusterSettings:
    """Settings of the local cluster (section [cluster], env GANTRY_CLUSTER_*)."""

    state_dir: Path = Path("/var/lib/gantry")
    host: str = "127.0.0.1"
    etcd_port: int = 12379
    etcd_peer_port: int = 12380
    registry_port: int = 15000
    controller_port: int = 17070
    controller_metrics_port: int = 17071
    agent_port: int = 17072
    proxy_port: int = 18080
    proxy_admin_port: int = 18081
    # Prefix of every host object the agent creates (netns, links, nft, cgroups).
    prefix: str = "gantry"
    runtime: str = "core"
    node_name: str = "node-1"
    # Proxy worker processes; 0 = one per core.
    proxy_workers: int = 0
    # Build and push the demo images (busybox, hello:v1, hello:v2) when missing.
    build_images: bool = True
    health_timeout: float = 60.0


@dataclass(frozen=True)
class Health:
    kind: str  # http | grpc
    target: str  # URL or host:port


@dataclass(frozen=True)
class Part:
    name: str
    argv: tuple[str, ...]
    listens: dict[str, str]
    health: Health
    binary_package: tuple[str, str] | None = None
    ports: dict[str, int] = field(default_factory=dict)


class LaunchError(Exception):
    """A part that cannot be started: one line naming the fix."""


PART_ORDER = ("etcd", "registry", "controller", "agent", "proxy")


def plan_parts(s: ClusterSettings, *, python: str) -> list[Part]:
    """Each part's command line, ports and health check, in start order."""
    h, state = s.host, s.state_dir
    etcd_ep = f"{h}:{s.etcd_port}"
    registry_ep = f"{h}:{s.registry_port}"
    controller_ep = f"{h}:{s.controller_port}"
    workers = s.proxy_workers or os.cpu_count() or 1
    return [
        Part(
            "etcd",
            ("etcd",),  # replaced by procs.etcd_command at start
            {"client": f"http://{etcd_ep}"},
            Health("http", f"http://{etcd_ep}/health"),
            ("etcd", "etcd-server"),
            {"etcd-port": s.etcd_port, "etcd-peer-port": s.etcd_peer_port},
        ),
        Part(
            "registry",
            ("docker-registry", "serve", str(state / "registry.yml")),
            {"registry": f"http://{registry_ep}"},
            Health("http", f"http://{registry_ep}/v2/"),
            ("docker-registry", "docker-registry"),
            {"registry-port": s.registry_port},
        ),
        Part(
            "controller",
            (
                python,
                "-m",
                "controller",
                "--listen",
                controller_ep,
                "--metrics",
                f"{h}:{s.controller_metrics_port}",
                "--etcd",
                etcd_ep,
                "--id",
                "controller-1",
            ),  # fmt: skip
            {"grpc": controller_ep, "metrics": f"http://{h}:{s.controller_metrics_port}/metrics"},
            Health("grpc", controller_ep),
            None,
            {
                "controller-port": s.controller_port,
                "controller-metrics-port": s.controller_metrics_port,
            },
        ),
        Part(
            "agent",
            (
                python,
                "-m",
                "agent",
                "--controller",
                controller_ep,
                "--name",
                s.node_name,
                "--address",
                h,
                "--listen",
                f"{h}:{s.agent_port}",
                "--state-dir",
                str(state / "agent"),
                "--runtime",
                s.runtime,
                "--prefix",
                s.prefix,
                "--registry",
                registry_ep,
            ),  # fmt: skip
            {"http": f"http://{h}:{s.agent_port}", "metrics": f"http://{h}:{s.agent_port}/metrics"},
            Health("http", f"http://{h}:{s.agent_port}/healthz"),
            None,
            {"agent-port": s.agent_port},
        ),
        Part(
            "proxy",
            (
                python,
                "-m",
                "proxy",
                "--listen",
                f"{h}:{s.proxy_port}",
                "--admin",
                f"{h}:{s.proxy_admin_port}",
                "--controller",
                controller_ep,
                "--workers",
                str(workers),
            ),  # fmt: skip
            {"http": f"http://{h}:{s.proxy_port}", "admin": f"http://{h}:{s.proxy_admin_port}"},
            Health("http", f"http://{h}:{s.proxy_admin_port}/healthz"),
            None,
            {"proxy-port": s.proxy_port, "proxy-admin-port": s.proxy_admin_port},
        ),
    ]


def grpc_serving(target: str, timeout: float = 1.0) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError:
        return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def is_healthy(health: Health) -> bool:
    if health.kind == "grpc":
        return grpc_serving(health.target)
    return procs.http_ok(health.target)


# --- the run directory: pid files that name exactly what we started ---------


def run_dir(s: ClusterSettings) -> Path:
    return s.state_dir / "run"


def process_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record(s: ClusterSettings, name: str, pid: int) -> None:
    run_dir(s).mkdir(parents=True, exist_ok=True)
    pidfile = run_dir(s) / f"{name}.pid"
    pidfile.write_text(json.dumps({"pid": pid, "start": process_start_time(pid)}))


def recorded_pid(s: ClusterSettings, name: str) -> int | None:
    """The pid we started for `name`, if that very process still runs."""
    try:
        data = json.loads((run_dir(s) / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    pid = int(data.get("pid", 0))
    if pid <= 0 or not procs.pid_alive(pid) or process_start_time(pid) != data.get("start"):
        return None
    return pid


# --- up / status / down -------------------------------------------------------


def check_startable(parts: list[Part], s: ClusterSettings) -> None:
    """Fail before starting anything: a missing binary or a taken port."""
    for part in parts:
        if recorded_pid(s, part.name):
            continue
        if part.binary_package:
            try:
                procs.require_binary(*part.binary_package)
            except procs.ServiceError as exc:
                raise LaunchError(str(exc)) from None
        for flag, port in part.ports.items():
            if procs.port_taken(s.host, port):
                raise LaunchError(
                    f"port {port} ({part.name}) is taken on {s.host}: stop what uses it or pick another with --{flag}"
                )


def _start(part: Part, s: ClusterSettings) -> int:
    logs = s.state_dir / "logs"
    if part.name == "etcd":
        argv = procs.etcd_command(name="gantry", data_dir=s.state_dir / "etcd", host=s.host,
                                  client_port=s.etcd_port, peer_port=s.etcd_peer_port)  # fmt: skip
    else:
        argv = list(part.argv)
    if part.name == "registry":
        argv[0] = procs.require_binary("docker-registry", "docker-registry")
        (s.state_dir / "registry.yml").write_text(
            procs.registry_config(root=s.state_dir / "registry", host=s.host, port=s.registry_port)
        )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        svc = procs.spawn(part.name, argv, log=logs / f"{part.name}.log", health_url="",
                          healthy=lambda: is_healthy(part.health), env=env,
                          timeout=s.health_timeout)  # fmt: skip
    except procs.ServiceError as exc:
        raise LaunchError(str(exc)) from None
    record(s, part.name, svc.pid)
    return svc.pid


def up(s: ClusterSettings, *, say: Callable[[str], None] = print) -> list[Part]:
    s.state_dir.mkdir(parents=True, exist_ok=True)
    parts = plan_parts(s, python=sys.executable)
    check_startable(parts, s)
    for part in parts:
        pid = recorded_pid(s, part.name)
        if pid and is_healthy(part.health):
            say(f"{part.name:<11} already running (pid {pid})")
            continue
        if pid:
            procs.stop_pid(pid)
        pid = _start(part, s)
        say(
            f"{part.name:<11} healthy (pid {pid})  "
            + "  ".join(f"{k} {v}" for k, v in part.listens.items())
        )
        if part.name == "registry" and s.build_images:
            _ensure_images(s, say)
    (s.state_dir / "cluster.json").write_text(json.dumps(asdict(s), default=str, indent=2))
    return parts


def _ensure_images(s: ClusterSettings, say: Callable[[str], None]) -> None:
    from agent.images.demo import ensure_demo_images
    from agent.images.errors import ImageError

    try:
        refs = ensure_demo_images(s.state_dir / "images", f"{s.host}:{s.registry_port}")
    except ImageError as exc:
        raise LaunchError(f"demo images: {exc} (or skip them with --no-images)") from None
    say(f"{'images':<11} " + ", ".join(refs))


@dataclass(frozen=True)
class PartStatus:
    name: str
    pid: int | None
    healthy: bool
    listens: dict[str, str]


def status(s: ClusterSettings) -> list[PartStatus]:
    out = []
    for part in plan_parts(s, python=sys.executable):
        pid = recorded_pid(s, part.name)
        out.append(PartStatus(part.name, pid, bool(pid) and is_healthy(part.health), part.listens))
    return out


def down(s: ClusterSettings, *, say: Callable[[str], None] = print) -> hostclean.Sweep:
    """Stop what `up` started (newest first), then remove the host objects it made."""
    for name in reversed(PART_ORDER):
        pid = recorded_pid(s, name)
        if pid:
            procs.stop_pid(pid, timeout=15.0)
            say(f"{name:<11} stopped (pid {pid})")
        (run_dir(s) / f"{name}.pid").unlink(missing_ok=True)
    result = hostclean.sweep(s.prefix, state_dir=s.state_dir)
    for item in result.removed:
        say(f"removed {item}")
    return result


def load_cluster_settings(state_dir: Path, overrides: dict[str, object]) -> ClusterSettings:
    """Settings for a state dir: the saved cluster.json, then env, then flags."""
    from gantry.config import load_settings

    saved: dict[str, object] = {}
    try:
        saved = json.loads((state_dir / "cluster.json").read_text())
    except (OSError, ValueError):
        pass
    merged = {
        **{k: v for k, v in saved.items() if k != "state_dir"},
        **{k: v for k, v in overrides.items() if v is not None},
    }
    merged["state_dir"] = state_dir
    return load_settings(ClusterSettings, section="cluster", overrides=merged)
