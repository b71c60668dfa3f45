"""The Runtime protocol over the `runc` binary, for comparison with the core.

runc cannot mount an overlay from annotations, so `create` mounts it on the
host at the bundle's root.path (unmounted again by `delete`). `start` runs
`runc run` under a detached shell shim (`setsid -f sh -c ...`) that records
runc's exit status (the container's, 128+n for a signal) in the same `exit`
file the core uses, so exit codes survive the agent's death the same way.
A bundle without linux.cgroupsPath gets `/<prefix>/<id>` written into its
config.json (as the core defaults to), so nothing lands outside the prefix.
State files are shared with the core's (`ContainerFiles`), so `list`,
`state`, `wait` and adoption after a restart behave alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.runtime import cgroups, linux, plan, zygote
from agent.runtime.base import (
    BundleError,
    ContainerExists,
    ContainerIO,
    ContainerState,
    RuntimeError_,
    Status,
)
from agent.runtime.core import ContainerFiles, _real, wait_pid_exit
from agent.runtime.spec import write_bundle


def _read_spec(bundle: Path) -> dict[str, Any]:
    cfg = bundle / "config.json"
    try:
        spec = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{cfg}: unreadable: {e}") from None
    if not isinstance(spec, dict):
        raise BundleError(f"{cfg}: not a JSON object")
    return spec


def _mount_overlay(p: plan.Plan) -> bool:
    if not p.overlay_lower:
        return False
    opts = f"lowerdir={':'.join(p.overlay_lower)}"
    if p.overlay_upper:
        opts += f",upperdir={p.overlay_upper},workdir={p.overlay_work}"
    linux.mount("overlay", p.rootfs, "overlay", 0, opts)
    return True


def _umount(path: str) -> None:
    with contextlib.suppress(OSError):
        linux.umount2(path, linux.MNT_DETACH)


class Runc(ContainerFiles):
    name = "runc"

    def __init__(self, *, state_dir: Path, prefix: str = "gantry", runc: str = "runc") -> None:
        super().__init__(state_dir=state_dir, prefix=prefix)
        self.runc = runc
        self.root = self.state_dir / "runc"
        self.root.mkdir(parents=True, exist_ok=True)

    def _runc_argv(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.root), *args]

    async def create(self, container_id: str, bundle: Path, io: ContainerIO) -> None:
        d = self._dir(container_id)
        bundle = _real(bundle)
        spec = _read_spec(bundle)
        p = plan.parse(bundle, spec)
        if not p.cgroups_path:  # as the core does: under the prefix, never at the top
            spec.setdefault("linux", {})["cgroupsPath"] = f"/{self.prefix}/{container_id}"
            write_bundle(bundle, spec)
            p = plan.parse(bundle, spec)
        try:
            d.mkdir()
        except FileExistsError:
            raise ContainerExists(f"container {container_id!r} already exists") from None
        try:
            mounted = _mount_overlay(p)
        except OSError as e:
            os.rmdir(d)
            raise BundleError(f"container {container_id!r}: overlay: {e}") from None
        self._write(
            container_id,
            {
                "id": container_id,
                "bundle": str(bundle),
                "runtime": self.name,
                "rootfs_mount": p.rootfs if mounted else "",
                "cgroups_path": p.cgroups_path,
                "stdout": str(io.stdout) if io.stdout else "/dev/null",
                "stderr": str(io.stderr) if io.stderr else "/dev/null",
                "pid": 0,
                "start_time": 0,
                "started": False,
                "created_at": time.time(),
            },
        )

    async def start(self, container_id: str) -> None:
        data = self._read(container_id)
        if data.get("started"):
            raise RuntimeError_(f"container {container_id!r} was already started")
        d = self._dir(container_id)
        pidfile = d / "pid"
        run = self._runc_argv(
            "run", "--bundle", data["bundle"], "--pid-file", str(pidfile), container_id
        )
        q = shlex.quote
        script = (
            f"{shlex.join(run)} </dev/null >>{q(data['stdout'])} 2>>{q(data['stderr'])}; "
            f"echo $? > {q(str(d / 'exit.tmp'))} && mv {q(str(d / 'exit.tmp'))} {q(str(d / zygote.EXIT_FILE))}"
        )
        proc = await asyncio.create_subprocess_exec(
            "setsid", "-f", "sh", "-c", script,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                data.update(pid=pid, start_time=linux.start_time(pid), started=True)
                break
            if self._exit_code(container_id) is not None:
                data.update(pid=-1, start_time=-1, started=True)
                break
            if time.monotonic() > deadline:
                raise RuntimeError_(f"container {container_id!r}: runc did not start it in 30 s")
            await asyncio.sleep(0.002)
        self._write(container_id, data)

    async def state(self, container_id: str) -> ContainerState:
        return self._state_of(container_id, self._read(container_id))

    async def kill(self, container_id: str, signal: int) -> None:
        st = await self.state(container_id)
        if st.status != Status.RUNNING:
            raise RuntimeError_(f"container {container_id!r} is {st.status}: cannot signal it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, signal)

    async def wait(self, container_id: str) -> int:
        data = self._read(container_id)
        if not data.get("started"):
            raise RuntimeError_(f"container {container_id!r} was not started")
        return await self._wait_code(
            container_id, int(data["pid"]), int(data["start_time"]), grace=30, early_out=False
        )

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        data = self._read(container_id)
        st = self._state_of(container_id, data)
        if st.status == Status.RUNNING:
            if not force:
                raise RuntimeError_(f"container {container_id!r} is running; stop it or use force")
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)
            await wait_pid_exit(st.pid, int(data["start_time"]))
        if data.get("started"):
            await self._wait_code(
                container_id, st.pid, int(data["start_time"]), grace=10, early_out=False
            )
        proc = await asyncio.create_subprocess_exec(
            *self._runc_argv("delete", "--force", container_id),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await proc.wait()
        if data.get("cgroups_path"):
            await asyncio.to_thread(cgroups.remove, self.layout, str(data["cgroups_path"]))
        if data.get("rootfs_mount"):
            _umount(str(data["rootfs_mount"]))
        shutil.rmtree(self._dir(container_id), ignore_errors=True)

    async def exec(self, container_id: str, argv: Sequence[str], time_limit: float) -> int:
        """`runc exec`: argv in the running container under its own limits; its exit code."""
        st = await self.state(container_id)
        if st.status != Status.RUNNING:
            raise RuntimeError_(f"container {container_id!r} is {st.status}: cannot exec in it")
        proc = await asyncio.create_subprocess_exec(
            *self._runc_argv("exec", container_id, *argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(time_limit):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise

    async def run(self, container_id: str, bundle: Path, io: ContainerIO) -> int:
        await self.create(container_id, bundle, io)
        await self.start(container_id)
        return await self.wait(container_id)
