"""The images Gantry ships: a busybox base and the demo app `hello` v1 and v2.

`make_busybox_rootfs` lays out a root file system from Debian's
busybox-static and deploy/images/busybox/rootfs; `ensure_demo_images` (what
`gantry up` calls) builds busybox, hello:v1 and hello:v2 into a store and
pushes whichever the registry lacks. Idempotent: when the registry has all
three it only asks, and rebuilding hits the layer cache.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

from agent.images.errors import BuildError
from agent.images.service import Images

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy" / "images"
BUSYBOX_BINARY = Path("/bin/busybox")
BUSYBOX_CONFIG = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Cmd": ["/bin/sh"],
}
DEMO_TAGS = ("busybox:latest", "hello:v1", "hello:v2")


def make_busybox_rootfs(
    dest: Path, *, busybox: Path = BUSYBOX_BINARY, deploy: Path = DEPLOY
) -> None:
    """Lay out a busybox root file system in the empty directory `dest`."""
    if not busybox.is_file():
        raise BuildError(f"{busybox}: not found; install Debian's busybox-static")
    listing = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise BuildError(f"{busybox} --list-full failed: {listing.stderr.strip()}")
    for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                    ("tmp", 0o1777), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755),
                    ("root", 0o700), ("etc", 0o755), ("var/run", 0o755)):  # fmt: skip
        (dest / d).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / d, mode)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    os.chmod(dest / "bin" / "busybox", 0o755)
    for applet in sorted(set(listing.stdout.split())):
        # Every applet in /bin (like the official busybox image) and at its usual path.
        for link in {dest / "bin" / Path(applet).name, dest / applet}:
            if link.name == "busybox" or link.exists() or link.is_symlink():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", link)
    shutil.copytree(deploy / "busybox" / "rootfs", dest, dirs_exist_ok=True)


async def build_demo_images(images: Images, *, deploy: Path = DEPLOY) -> list[str]:
    """busybox:latest, hello:v1, hello:v2 in the local store (cached when unchanged)."""
    if images.store.lookup("busybox:latest") is None:
        rootfs = images.store.tmp / "busybox-rootfs"
        await asyncio.to_thread(shutil.rmtree, rootfs, True)
        rootfs.mkdir()
        try:
            await asyncio.to_thread(make_busybox_rootfs, rootfs, deploy=deploy)
            await images.import_rootfs(rootfs, "busybox:latest", config=BUSYBOX_CONFIG)
        finally:
            await asyncio.to_thread(shutil.rmtree, rootfs, True)
    context = deploy / "hello"
    for version in ("v1", "v2"):
        await images.build(
            context, f"hello:{version}", gantryfile=context / f"Gantryfile.{version}"
        )
    return list(DEMO_TAGS)


async def ensure_demo_images_async(store_root: Path, registry: str) -> list[str]:
    """Push busybox, hello:v1, hello:v2 to `registry` (host:port) unless it has them."""
    async with Images(store_root, insecure=frozenset({registry})) as images:
        remote = [f"{registry}/{tag}" for tag in DEMO_TAGS]
        present = [await images.client.remote_digest(r) is not None for r in remote]
        if all(present):
            return remote
        await build_demo_images(images)
        for tag, ref, there in zip(DEMO_TAGS, remote, present, strict=True):
            if not there:
                await images.push(ref, source=tag)
                images.store.tag(ref, images.store.lookup(tag) or "")
        return remote


def ensure_demo_images(store_root: Path, registry: str) -> list[str]:
    """Sync wrapper for the launcher (not from inside a running event loop)."""
    return asyncio.run(ensure_demo_images_async(store_root, registry))
