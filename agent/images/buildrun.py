"""Running a build's RUN step in a container, through the Runtime seam.

`step_runtime()` is the one place that chooses the runtime for RUN steps:
Gantry's isolation core when `prepare_core()` could fork it (before any
thread exists, as `gantry build` does), else agent/runtime's `Runc`.
`run_step` writes an OCI runtime-spec bundle (agent.runtime.spec) for a
rootfs that is already an overlay mount, runs the command with the image's
env, working dir and user, and returns the exit code and the tail of the
output.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.images.users import ids_in_layers
from agent.runtime.base import ContainerIO, Runtime
from agent.runtime.spec import SpecOptions, build_spec

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_CORE: Runtime | None = None


def prepare_core(state_root: Path) -> bool:
    """Fork the isolation core for RUN steps; call before any thread exists.

    Returns False (and RUN steps fall back to runc) when threads already run,
    as inside a test process, since forking a threaded process is unsafe.
    """
    global _CORE
    import atexit
    import threading

    if _CORE is not None:
        return True
    if threading.active_count() > 1:
        return False
    from agent.runtime.core import Core

    core = Core.prefork(state_dir=state_root, prefix="gantry-build", pool_size=0)
    atexit.register(core.close)  # reap the zygote and close its socket on the way out
    _CORE = core
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
    """A RUN step's config.json: the runtime spec builder's, over a prepared rootfs."""
    if not any(e.startswith("PATH=") for e in env):
        env = [DEFAULT_PATH, *env]
    return build_spec(
        SpecOptions(
            args=tuple(argv),
            env=tuple(env),
            cwd=cwd or "/",
            uid=uid,
            gid=gid,
            hostname=hostname,
            rootfs=str(rootfs),
        )
    )


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
