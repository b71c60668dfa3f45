"""A whole Gantry cluster on one machine: hosts made of network namespaces.

The multi-node end-to-end tests and the rollout benchmark start the same
shapes deploy/cluster/ describes for real machines: a `ctl` host runs etcd,
the registry, two controllers (one leads, one stands by) and the proxy; each
node host `n1..nN` runs an agent. Every process is configured by a TOML file
with the table deploy/cluster/gantry.toml.example shows, and runs in its
host's network namespace (`nsenter --net`). Agents get distinct object
prefixes (`<prefix minus one char><n>`), so `destroy` sweeps them all.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantry import hostclean, launcher, netlab, procs

CONTROLLER_PORTS = (7070, 7080)
PROXY_PORT, PROXY_ADMIN_PORT = 8080, 8081
REGISTRY_PORT, ETCD_PORT, ETCD_PEER_PORT = 5000, 2379, 2380
AGENT_PORT = 7072


def toml_table(name: str, values: dict[str, object]) -> str:
    lines = [f"[{name}]"]
    for key, value in values.items():
        lines.append(
            f"{key} = {value!r}".replace("'", '"') if isinstance(value, str) else f"{key} = {value}"
        )
    return "\n".join(lines) + "\n"


@dataclass
class LabCluster:
    prefix: str
    workdir: Path
    nodes: int = 3
    node_grace: float = 3.0
    drain_seconds: float = 1.0
    runtime: str = "core"
    lab: netlab.Lab = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lab = netlab.Lab(self.prefix, ["ctl", *self.node_names])

    @property
    def node_names(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    @property
    def ctl(self) -> str:
        return self.lab.addresses["ctl"]

    @property
    def controllers(self) -> list[str]:
        return [f"{self.ctl}:{p}" for p in CONTROLLER_PORTS]

    @property
    def registry(self) -> str:
        return f"{self.ctl}:{REGISTRY_PORT}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.ctl}:{PROXY_PORT}"

    def agent_prefix(self, node: str) -> str:
        return f"{self.prefix[:-1]}{node[1:]}"

    def demo_deployment(
        self,
        name: str,
        *,
        image: str = "hello:v1",
        replicas: int = 3,
        strategy: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A deployment of a demo image from the lab's registry, routed by Host `<name>.local`."""
        template: dict[str, Any] = {
            "image": f"{self.registry}/{image}",
            "ports": [{"name": "http", "containerPort": 8080}],
            "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        }
        if env:
            template["env"] = [{"name": k, "value": v} for k, v in env.items()]
        return {
            "apiVersion": "gantry/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "template": template,
                "strategy": strategy or {"type": "RollingUpdate"},
                "route": {"host": f"{name}.local"},
            },
        }

    # -- the configuration files: the shapes of deploy/cluster/ ---------------

    def controller_config(self, i: int) -> str:
        return toml_table("controller", {
            "id": f"controller-{i + 1}", "listen": self.controllers[i],
            "metrics": f"{self.ctl}:{CONTROLLER_PORTS[i] + 1}", "etcd": f"{self.ctl}:{ETCD_PORT}",
            "node_grace": self.node_grace, "drain_seconds": self.drain_seconds,
        })  # fmt: skip

    def agent_config(self, node: str) -> str:
        address = self.lab.addresses[node]
        return toml_table("agent", {
            "name": node, "address": address, "listen": f"{address}:{AGENT_PORT}",
            "controller": ",".join(self.controllers), "registry": self.registry,
            "state_dir": str(self.workdir / node), "runtime": self.runtime,
            "prefix": self.agent_prefix(node), "subnet": f"10.214.{node[1:]}.0/24",
            "termination_grace_seconds": 5.0,
        })  # fmt: skip

    def proxy_config(self) -> str:
        return toml_table("proxy", {
            "listen": f"{self.ctl}:{PROXY_PORT}", "admin": f"{self.ctl}:{PROXY_ADMIN_PORT}",
            "controller": ",".join(self.controllers), "workers": 1, "proxy_id": "proxy-1",
            # One LAN hop: a node whose link is cut costs a request 0.5 s before its
            # retry (the 2 s default stalls every client of a lost node for seconds).
            # Below the kernel's 1 s SYN retransmission, so a SYN dropped by a full
            # accept queue fails the attempt too; the retry goes to another endpoint.
            "connect_timeout": 0.5,
        })  # fmt: skip

    # -- processes --------------------------------------------------------------

    def spawn(
        self,
        name: str,
        host: str,
        argv: list[str],
        healthy: Callable[[], bool],
        timeout: float = 60,
    ) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        with log:
            proc = self.lab.popen(
                host, argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.processes[name] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (
                    (self.workdir / f"{name}.log")
                    .read_text(errors="replace")
                    .strip()
                    .splitlines()[-3:]
                )
                raise RuntimeError(f"{name} exited with {proc.returncode}: {' | '.join(tail)}")
            if netlab.in_netns(self.lab.ns(host), healthy):
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"{name} not healthy within {timeout:.0f}s (log {self.workdir / name}.log)"
        )

    def start_python(
        self, name: str, host: str, module: str, config: str, healthy: Callable[[], bool]
    ) -> None:
        path = self.workdir / f"{name}.toml"
        path.write_text(config)
        self.spawn(name, host, [sys.executable, "-m", module, "--config", str(path)], healthy)

    def start_controller(self, i: int) -> None:
        target = self.controllers[i]
        self.start_python(f"controller-{i + 1}", "ctl", "controller", self.controller_config(i),
                          lambda: launcher.grpc_serving(target))  # fmt: skip

    def start_agent(self, node: str) -> None:
        url = f"http://{self.lab.addresses[node]}:{AGENT_PORT}/healthz"
        self.start_python(
            f"agent-{node}", node, "agent", self.agent_config(node), lambda: procs.http_ok(url)
        )

    def start(self, *, images: bool = True) -> LabCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lab.create()
        ctl = self.ctl
        etcd = procs.etcd_command(name="lab", data_dir=self.workdir / "etcd", host=ctl,
                                  client_port=ETCD_PORT, peer_port=ETCD_PEER_PORT)  # fmt: skip
        self.spawn("etcd", "ctl", etcd, lambda: procs.http_ok(f"http://{ctl}:{ETCD_PORT}/health"))
        (self.workdir / "registry.yml").write_text(
            procs.registry_config(root=self.workdir / "registry", host=ctl, port=REGISTRY_PORT)
        )
        registry = [
            procs.require_binary("docker-registry", "docker-registry"),
            "serve",
            str(self.workdir / "registry.yml"),
        ]
        self.spawn(
            "registry", "ctl", registry, lambda: procs.http_ok(f"http://{self.registry}/v2/")
        )
        if images:
            from agent.images.demo import ensure_demo_images

            netlab.in_netns(
                self.lab.ns("ctl"), ensure_demo_images, self.workdir / "images", self.registry
            )
        for i in range(len(CONTROLLER_PORTS)):
            self.start_controller(i)
        for node in self.node_names:
            self.start_agent(node)
        admin = f"http://{ctl}:{PROXY_ADMIN_PORT}/healthz"
        self.start_python(
            "proxy", "ctl", "proxy", self.proxy_config(), lambda: procs.http_ok(admin)
        )
        return self

    def stop(self, name: str, *, kill: bool = False) -> None:
        proc = self.processes.pop(name)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
        else:
            procs.stop_pid(proc.pid, proc=proc)

    def gantry(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The CLI, run on the ctl host against both controllers."""
        argv = ["nsenter", f"--net=/var/run/netns/{self.lab.ns('ctl')}", sys.executable, "-m",
                "gantry.cli.main", "--controller", ",".join(self.controllers), *args]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"gantry {' '.join(args)}: {result.stderr.strip()}")
        return result

    def destroy(self) -> list[str]:
        for name in list(self.processes)[::-1]:
            with contextlib.suppress(Exception):
                self.stop(name)
        sweep_prefix = self.prefix[:-1]
        hostclean.sweep(sweep_prefix, state_dir=self.workdir)
        return hostclean.leftovers(sweep_prefix, state_dir=self.workdir)
