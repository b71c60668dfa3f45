"""Starting and stopping the real third-party services Gantry stands on.

etcd and the OCI registry (Debian's docker-registry) are started the same way
by `gantry up`, by the test fixtures and by the benchmarks: a command line
and config built by pure functions, a background process with its own log,
and a health check polled against a deadline. Processes are stopped by the
PID we started, never by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(Exception):
    """A service that cannot start: the message names the fix."""


_handed_out: set[int] = set()
_rng = random.Random()  # its own: tests may seed the module's


# The agent publishes containers' ports from 30000 up (agent.settings): stay below.
PORT_POOL_END = 30000


def _port_pool() -> range:
    """Ports below the kernel's ephemeral range (so an outgoing connection never holds
    one) and below the agent's published ports."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, min(low, PORT_POOL_END))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, never handed out twice by this process.

    bind(0) would hand out an ephemeral port: two calls in a row may return
    the same one, and a client connection may take it before the server
    binds. Ports below the ephemeral range, remembered, avoid both.
    """
    pool = _port_pool()
    for _ in range(500):
        port = _rng.choice(pool)
        if port not in _handed_out and not port_taken(host, port):
            _handed_out.add(port)
            return port
    raise ServiceError(f"no free port on {host} between {pool.start} and {pool.stop - 1}")


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceError(
            f"{name} not found on PATH: install it with 'apt-get install {package}' (or run 'make setup')"
        )
    return path


def etcd_command(
    *, name: str, data_dir: Path, host: str, client_port: int, peer_port: int
) -> list[str]:
    client = f"http://{host}:{client_port}"
    peer = f"http://{host}:{peer_port}"
    return [
        require_binary("etcd", "etcd-server"),
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
        "--initial-cluster-state", "new",
        "--log-level", "warn",
        "--logger", "zap",
        "--auto-compaction-mode", "revision",
        "--auto-compaction-retention", "10000",
    ]  # fmt: skip


def registry_config(*, root: Path, host: str, port: int) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}:{port}\n"
    )


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Service:
    """A background process we started, with its log and health URL."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    health_url: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.proc.pid, timeout=timeout, proc=self.proc)


def spawn(name: str, argv: list[str], *, log: Path, health_url: str, cwd: Path | None = None,
          env: dict[str, str] | None = None, timeout: float = 30.0,
          healthy: Callable[[], bool] | None = None) -> Service:  # fmt: skip
    """Start argv in its own session with output to `log`; wait until healthy.

    Healthy means `healthy()` is true, or else `health_url` answers 2xx.
    """
    check = healthy or (lambda: http_ok(health_url))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
    svc = Service(name, proc, log, health_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise ServiceError(
                f"{name} exited with {proc.returncode}: {' | '.join(tail)} (log: {log})"
            )
        if check():
            return svc
        time.sleep(0.05)
    svc.stop()
    raise ServiceError(f"{name} did not become healthy within {timeout:.0f}s (log: {log})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(
    pid: int, *, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM the process group we started, then SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            # not a group leader (or already gone): signal the process itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not pid_alive(pid):
                return
            time.sleep(0.02)


def start_etcd(data_dir: Path, *, host: str = "127.0.0.1", client_port: int | None = None,
               peer_port: int | None = None, name: str = "gantry") -> Service:  # fmt: skip
    client_port = client_port or free_port(host)
    peer_port = peer_port or free_port(host)
    argv = etcd_command(name=name, data_dir=data_dir / "etcd", host=host,
                        client_port=client_port, peer_port=peer_port)  # fmt: skip
    svc = spawn(
        "etcd", argv, log=data_dir / "etcd.log", health_url=f"http://{host}:{client_port}/health"
    )
    svc.extra["endpoint"] = f"{host}:{client_port}"
    return svc


def start_registry(data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> Service:
    port = port or free_port(host)
    binary = require_binary("docker-registry", "docker-registry")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "registry.yml"
    config.write_text(registry_config(root=data_dir / "registry", host=host, port=port))
    svc = spawn("registry", [binary, "serve", str(config)], log=data_dir / "registry.log",
                health_url=f"http://{host}:{port}/v2/")  # fmt: skip
    svc.extra["endpoint"] = f"{host}:{port}"
    return svc
