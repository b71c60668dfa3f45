"""Provisioning: images, the OCI bundle and the node network for one container.

Owns the `Provisioner` seam (pull / prepare / release) with its data
(`PortMap`, `Prepared`), the real `HostProvisioner` (images from the node's
store, pulled when missing; bundles under the state dir built from the
pure `spec_options`; the node network with its host-port range) and
`make_provisioner`, which builds it from the settings.

It does not run, signal or watch containers (that is the Runtime, driven by
agent/worker.py), and it decides nothing about a replica's lifecycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.settings import AgentSettings
from gantry import procs
from gantry.v1 import types_pb2

# ---- the provisioning seam -------------------------------------------------------


@dataclass(frozen=True)
class PortMap:
    name: str
    container_port: int
    host_port: int


@dataclass(frozen=True)
class Prepared:
    """A container's bundle and network, ready for runtime.create."""

    bundle: Path
    ip: str
    ports: tuple[PortMap, ...] = ()


class Provisioner(Protocol):
    """Images, bundles and networks: everything a container needs besides the runtime."""

    async def pull(self, image: str) -> None:
        """Make the image present locally (pull it when missing)."""
        ...

    async def prepare(
        self, container_id: str, template: types_pb2.PodTemplate, *, hostname: str
    ) -> Prepared:
        """Build the bundle and the network (netns, veth, IP, published ports)."""
        ...

    async def release(self, container_id: str) -> None:
        """Remove the container's network and bundle; harmless when already gone."""
        ...


# ---- the real provisioner: images + spec builder + network ------------------------------------


def image_ref(image: str, registry: str) -> str:
    """A bare name ('web:1') is pulled from the node's registry; a full ref is kept."""
    first = image.split("/", 1)[0]
    names_registry = "/" in image and ("." in first or ":" in first or first == "localhost")
    if names_registry or not registry:
        return image
    return f"{registry}/{image}"


def parse_user(text: str) -> tuple[int, int]:
    """The image's User: 'uid[:gid]' numbers only (names need the image's passwd)."""
    if not text:
        return 0, 0
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"image user {text!r}: only numeric uid[:gid] is supported")
    return int(uid), int(gid or uid)


def spec_options(
    *,
    template: types_pb2.PodTemplate,
    image_config: dict[str, Any],
    layer_dirs: Sequence[Path],
    bundle: Path,
    hostname: str,
    netns_path: str,
) -> Any:
    """The SpecOptions for a container of `template` over an image (pure)."""
    from agent.runtime import spec
    from controller.model import parse_cpu, parse_memory

    cfg = image_config.get("config") or {}
    entrypoint = list(template.command) or list(cfg.get("Entrypoint") or [])
    cmd = list(template.args) if template.args or template.command else list(cfg.get("Cmd") or [])
    argv = entrypoint + cmd
    if not argv:
        raise ValueError("template: no command, and the image defines no Entrypoint or Cmd")
    env = dict(e.split("=", 1) for e in (cfg.get("Env") or spec.DEFAULT_ENV) if "=" in e)
    env.update({e.name: e.value for e in template.env})
    uid, gid = parse_user(str(cfg.get("User") or ""))
    limits = template.resources.limits
    memory = parse_memory(limits.memory) if limits.memory else None
    cpu = parse_cpu(limits.cpu) if limits.cpu else None
    return spec.SpecOptions(
        args=tuple(argv),
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=template.working_dir or str(cfg.get("WorkingDir") or "/"),
        uid=uid,
        gid=gid,
        hostname=hostname[:63],
        rootfs=str(bundle / "rootfs"),
        overlay=spec.Overlay(
            lower=tuple(str(d) for d in reversed(layer_dirs)),
            upper=str(bundle / "upper"),
            work=str(bundle / "work"),
        ),
        netns_path=netns_path,
        memory_bytes=memory,
        cpu_quota_us=spec.cpus_to_quota(cpu / 1000) if cpu else None,
        pids_limit=1024,
    )


class HostProvisioner:
    """Images from the node's store (pulled when missing), bundles, the node network."""

    def __init__(self, settings: AgentSettings, *, images: Any, network: Any) -> None:
        self.settings = settings
        self.images = images
        self.network = network
        self.bundles = settings.state_dir / "bundles"
        lo, _, hi = settings.host_ports.partition("-")
        self.port_range = range(int(lo), int(hi or lo) + 1)
        self._next_port = self.port_range.start

    async def pull(self, image: str) -> None:
        await self.images.resolve(image_ref(image, self.settings.registry))

    def _host_ports(self, count: int) -> list[int]:
        """Ports to publish on: not published already, and no listener of the host's on them."""
        taken = {p.host_port for a in self.network.attachments().values() for p in a.ports}
        out: list[int] = []
        for _ in range(len(self.port_range)):
            port = self._next_port
            self._next_port = port + 1 if port + 1 < self.port_range.stop else self.port_range.start
            if port not in taken and port not in out and not procs.port_taken("0.0.0.0", port):
                out.append(port)
                if len(out) == count:
                    return out
        raise RuntimeError(f"no free host port left in {self.settings.host_ports}")

    async def prepare(
        self, container_id: str, template: types_pb2.PodTemplate, *, hostname: str
    ) -> Prepared:
        from agent import network as net
        from agent.runtime import spec

        image = await self.images.resolve(image_ref(template.image, self.settings.registry))
        bundle = self.bundles / container_id
        specs = [p for p in template.ports if p.container_port]
        host_ports = self._host_ports(len(specs)) if specs else []
        mappings = [
            net.PortMapping(h, p.container_port, (p.protocol or "tcp").lower())
            for h, p in zip(host_ports, specs, strict=True)
        ]
        att = await self.network.attach(container_id, mappings)
        try:
            opts = spec_options(
                template=template,
                image_config=image.config,
                layer_dirs=image.layer_dirs,
                bundle=bundle,
                hostname=hostname,
                netns_path=att.netns_path,
            )
            await asyncio.to_thread(_make_bundle, bundle, spec.build_spec(opts))
        except BaseException:
            await self.release(container_id)
            raise
        ports = tuple(
            PortMap(p.name, p.container_port, m.host_port)
            for p, m in zip(specs, att.ports, strict=True)
        )
        return Prepared(bundle=bundle, ip=att.ip, ports=ports)

    async def release(self, container_id: str) -> None:
        await self.network.detach(container_id)
        bundle = self.bundles / container_id
        if bundle.exists():
            await asyncio.to_thread(_remove_tree, bundle)

    async def close(self) -> None:
        await self.images.close()


def _make_bundle(bundle: Path, doc: dict[str, Any]) -> None:
    from agent.runtime import spec

    for sub in ("upper", "work"):
        (bundle / sub).mkdir(parents=True, exist_ok=True)
    spec.write_bundle(bundle, doc)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def make_provisioner(settings: AgentSettings) -> HostProvisioner:
    from agent.images.service import Images
    from agent.network import NetworkConfig, NodeNetwork

    cfg = NetworkConfig(
        state_dir=settings.state_dir / "network",
        prefix=settings.prefix,
        node_address=settings.address,
        **({"subnet": settings.subnet} if settings.subnet else {}),
    )
    network = NodeNetwork(cfg)
    await network.setup()
    # The cluster's own registry is spoken to over plain HTTP (Docker's "insecure registry").
    insecure = frozenset({settings.registry}) if settings.registry else frozenset()
    images = Images(settings.state_dir / "images", insecure=insecure)
    return HostProvisioner(settings, images=images, network=network)
