"""The agent's image step against a real registry: a bare name is pulled from --registry."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agent.agent import HostProvisioner
from agent.images.errors import ImageError
from agent.images.service import Images
from agent.settings import AgentSettings


def busybox_root(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    subprocess.run(["ln", "-s", "busybox", str(root / "bin" / "sh")], check=True)
    return root


class NoNetwork:
    def attachments(self) -> dict[str, object]:
        return {}


async def test_pull_bare_name_from_node_registry(registry: str, tmp_path: Path) -> None:
    async with Images(tmp_path / "builder") as builder:
        await builder.import_rootfs(busybox_root(tmp_path / "rootfs"), "busybox:latest")
        await builder.push(f"{registry}/busybox:latest", source="busybox:latest")

    settings = AgentSettings(state_dir=tmp_path / "node", registry=registry)
    images = Images(settings.state_dir / "images")
    prov = HostProvisioner(settings, images=images, network=NoNetwork())
    try:
        await prov.pull("busybox:latest")
        image = await images.resolve(f"{registry}/busybox:latest", pull=False)
        assert any((d / "bin" / "busybox").exists() for d in image.layer_dirs)
        with pytest.raises(ImageError):
            await prov.pull("nosuch:latest")
    finally:
        await prov.close()


def test_host_ports_skip_a_port_the_host_listens_on(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        busy = held.getsockname()[1]
        settings = AgentSettings(state_dir=tmp_path / "node", host_ports=f"{busy}-{busy + 50}")
        prov = HostProvisioner(settings, images=None, network=NoNetwork())
        ports = prov._host_ports(2)  # the range starts at the busy port
    assert busy not in ports and len(set(ports)) == 2
