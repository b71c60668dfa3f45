"""Running a build's RUN step in a container, through the Runtime seam.

`step_runtime()` is the one place that chooses the runtime for RUN steps:
agent/runtime's `Runc` (the Runtime protocol over runc). The Core needs its
zygote forked before any thread starts, which a CLI build cannot promise;
`RuncOnce`, a minimal self-contained runc wrapper, is the one-line fallback. `run_step` writes an OCI
runtime-spec bundle for a rootfs that is already an overlay mount, runs the
command with the image's env, working dir and user, and returns the exit
code and the tail of the output.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.images.users import ids_in_layers
from agent.runtime.base import ContainerIO, ContainerState, Runtime

CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RuncOnce:
    """The smallest Runtime that runs a bundle to completion with runc (build steps only)."""

    name = "runc"

    def __init__(self, state_root: Path) -> None:
        self.state_root = state_root

    async def run(self, container_id: str, bundle: Path, io: ContainerIO) -> int:
        runc = shutil.which("runc")
        if runc is None:
            raise FileNotFoundError(
                "runc not found on PATH: install it with 'apt-get install runc'"
            )
        out = await asyncio.to_thread(open, io.stdout, "ab") if io.stdout else None
        try:
            proc = await asyncio.create_subprocess_exec(
                runc, "--root", str(self.state_root), "run", "--bundle", str(bundle), container_id,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
            try:
                return await proc.wait()
            except asyncio.CancelledError:
                await self.delete(container_id, force=True)
                raise
        finally:
            if out:
                out.close()

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        runc = shutil.which("runc") or "runc"
        proc = await asyncio.create_subprocess_exec(
            runc, "--root", str(self.state_root), "delete", *(["--force"] if force else []), container_id,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()

    async def create(self, container_id: str, bundle: Path, io: ContainerIO) -> None:
        raise NotImplementedError

    async def start(self, container_id: str) -> None:
        raise NotImplementedError

    async def state(self, container_id: str) -> ContainerState:
        raise NotImplementedError

    async def kill(self, container_id: str, signal: int) -> None:
        raise NotImplementedError

    async def wait(self, container_id: str) -> int:
        raise NotImplementedError

    async def list(self) -> list[ContainerState]:
        return []


_CORE: Runtime | None = None


def prepare_core(state_root: Path) -> bool:
    """Fork the isolation core for RUN steps; call before any thread exists.

    Returns False (and RUN steps fall back to runc) when threads already run,
    as inside a test process, since forking a threaded process is unsafe.
    """
    global _CORE
    import threading

    if _CORE is not None:
        return True
    if threading.active_count() > 1:
        return False
    from agent.runtime.core import Core

    _CORE = Core.prefork(state_dir=state_root, prefix="gantry-build", pool_size=0)
    return True


def step_runtime(state_root: Path) -> Runtime:
    """The runtime RUN steps use: the isolation core when `prepare_core` ran, else runc."""
    if _CORE is not None:
        return _CORE
    from agent.runtime.runc import Runc

    return Runc(state_dir=state_root, prefix="gantry-build")


def resolve_user(rootfs: Path, user: str) -> tuple[int, int]:
    """'name[:group]' or 'uid[:gid]' -> (uid, gid) using the rootfs's /etc/passwd and /etc/group."""
    return ids_in_layers([rootfs], user)


def bundle_config(
    rootfs: Path, *, argv: list[str], env: list[str], cwd: str, uid: int, gid: int, hostname: str
) -> dict[str, Any]:
    if not any(e.startswith("PATH=") for e in env):
        env = [DEFAULT_PATH, *env]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": argv,
            "env": env,
            "cwd": cwd or "/",
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


@dataclass(frozen=True)
class StepOutcome:
    exit_code: int
    output_tail: str


async def run_step(
    runtime: Runtime,
    rootfs: Path,
    bundle_dir: Path,
    *,
    argv: list[str],
    env: list[str],
    cwd: str,
    user: str,
) -> StepOutcome:
    """Run argv in a container whose root is `rootfs`; the bundle lives in bundle_dir."""
    uid, gid = resolve_user(rootfs, user)
    await asyncio.to_thread(bundle_dir.mkdir, parents=True, exist_ok=True)
    container_id = "gantry-build-" + secrets.token_hex(4)
    config = bundle_config(
        rootfs, argv=argv, env=env, cwd=cwd, uid=uid, gid=gid, hostname=container_id[:63]
    )
    (bundle_dir / "config.json").write_text(json.dumps(config))
    log = bundle_dir / "output.log"
    try:
        code = await runtime.run(container_id, bundle_dir, ContainerIO(stdout=log, stderr=log))
    finally:
        await runtime.delete(container_id, force=True)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    return StepOutcome(code, " | ".join(tail))
