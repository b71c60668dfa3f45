"""Gantry's isolation core: the Runtime verbs over the pre-warmed zygote.

IMPORTANT: call `Core.prefork(...)` (which forks the zygote) first thing in
the agent's main, BEFORE grpc, asyncio or anything else starts a thread:
forking a threaded process is unsafe. The returned `Core` is then used from
asyncio; its verbs never block the loop for long.

State lives on disk under `<state_dir>/containers/<id>/` (`state.json`,
`exit`, `exec.fifo`), so a restarted agent's new `Core` adopts the
containers still running: `list()`, `state()`, `kill()`, `wait()` and
`delete()` work from those files and /proc alone (the init's pid is checked
against its start time, so a reused pid is never mistaken for it).
Containers outlive the agent and the zygote; an exit code is written by the
container's init (or by the zygote when it reaps an init killed outright).

The zygote keeps `pool_size` sandboxes ready (namespaces made, v1 cgroups
joined, `lo` up, /proc, /dev and /sys staged); a container whose cgroupsPath
is `/<prefix>/<name>` takes one (its cgroup is renamed), others are cloned
on request. State files and waits are `statefiles`'s (re-exported here). `exec()` runs a
command inside a running container under the container's own cgroups,
capabilities, seccomp filter, user, env and cwd.

Usage (agent main):
    core = Core.prefork(state_dir=Path("/run/gantry/gantry/runtime"), prefix="gantry")
    ... start asyncio/grpc ...
    await core.create(cid, bundle, ContainerIO(stdout=log, stderr=log)); await core.start(cid)
    code = await core.wait(cid); await core.delete(cid)
    core.close()  # at exit: stops the zygote, containers keep running
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.runtime import cgroups, linux, plan, zygote
from agent.runtime.base import (
    BundleError,
    ContainerExists,
    ContainerIO,
    ContainerState,
    Runtime,
    RuntimeError_,
    Status,
)
from agent.runtime.sandbox import brief, encode_plan, pack
from agent.runtime.statefiles import KILLED_EXIT as KILLED_EXIT  # re-exported from here
from agent.runtime.statefiles import ContainerFiles as ContainerFiles
from agent.runtime.statefiles import _read_int, _real, open_exit_fifo
from agent.runtime.statefiles import check_id as check_id
from agent.runtime.statefiles import wait_exit_code as wait_exit_code
from agent.runtime.statefiles import wait_pid_exit as wait_pid_exit

log = logging.getLogger("gantry.runtime.core")


class ZygoteGone(RuntimeError_):
    """The helper process is not running (restart the agent's Core)."""


def load_plan(bundle: Path, *, default_cgroup: str) -> plan.Plan:
    cfg = bundle / "config.json"
    try:
        spec = json.loads(cfg.read_text())
    except FileNotFoundError:
        raise BundleError(f"{cfg}: no such file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{cfg}: unreadable: {e}") from None
    if not isinstance(spec, dict):
        raise BundleError(f"{cfg}: not a JSON object")
    p = plan.parse(bundle, spec)
    if not p.cgroups_path:
        p = dataclasses.replace(p, cgroups_path=default_cgroup)
    return p


class ZygoteClient:
    """The agent's end of the socket to the zygote."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.lock = asyncio.Lock()

    @classmethod
    def fork(cls, *, prefix: str, pool_size: int) -> ZygoteClient:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            zygote.zygote_main(child, prefix=prefix, pool_size=pool_size)
        child.close()
        return cls(pid, parent)

    async def request(
        self,
        msg: dict[str, Any],
        p: plan.Plan | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Send one request (with its plan, if any) and return the zygote's reply.

        `while_waiting` (which must not raise) runs once the request is sent."""
        raw = pack(msg, encode_plan(p)) if p is not None else pack(msg)
        loop = asyncio.get_running_loop()
        async with self.lock:
            if self.sock.fileno() < 0:
                raise ZygoteGone("the core's zygote was closed")
            self.sock.setblocking(False)
            try:
                await loop.sock_sendall(self.sock, raw)
                if while_waiting is not None:
                    while_waiting()
                raw = await loop.sock_recv(self.sock, zygote.MAX_MSG)
            except OSError as e:
                raise ZygoteGone(f"the core's zygote (pid {self.pid}) is gone: {e}") from None
            if not raw:
                raise ZygoteGone(f"the core's zygote (pid {self.pid}) is gone")
            reply: dict[str, Any] = json.loads(raw)
            return reply

    def close(self, timeout: float = 5.0) -> None:
        """Close the socket (the zygote exits; containers keep running) and reap it."""
        if self.sock.fileno() >= 0:
            self.sock.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                timeout, deadline = 0, time.monotonic() + 1
            time.sleep(0.005)


class Core(ContainerFiles):
    """The Runtime protocol over Gantry's own isolation core."""

    name = "core"

    def __init__(self, client: ZygoteClient, *, state_dir: Path, prefix: str = "gantry") -> None:
        super().__init__(state_dir=state_dir, prefix=prefix)
        self.client = client

    @classmethod
    def prefork(cls, *, state_dir: Path, prefix: str = "gantry", pool_size: int = 1) -> Core:
        """Fork the zygote now (no threads may exist yet) and return the Core.

        `pool_size` sandboxes (namespaces made, cgroups joined) are kept ready
        for containers whose cgroupsPath is `/<prefix>/<name>`; 0 disables it.
        """
        client = ZygoteClient.fork(prefix=prefix, pool_size=pool_size)
        return cls(client, state_dir=state_dir, prefix=prefix)

    def close(self) -> None:
        """Stop the zygote. Containers keep running; a new Core adopts them."""
        self.client.close()

    # ------------------------------------------------------------ verbs

    async def create(
        self, container_id: str, bundle: Path, io: ContainerIO, *, autostart: bool = False
    ) -> None:
        await self._create(container_id, bundle, io, autostart=autostart)

    async def _create(
        self,
        container_id: str,
        bundle: Path,
        io: ContainerIO,
        *,
        autostart: bool,
        watch: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """`create`; returns the state written and, with `watch`, the container's
        exit fifo (else -1), made and opened while the zygote works, so that
        `run` has nothing to set up once the container is running."""
        d = self._dir(container_id)
        bundle = _real(bundle)
        p = load_plan(bundle, default_cgroup=f"/{self.prefix}/{container_id}")
        try:
            d.mkdir()
        except FileExistsError:
            raise ContainerExists(f"container {container_id!r} already exists") from None
        meta: dict[str, Any] = {
            "id": container_id,
            "bundle": str(bundle),
            "cgroups_path": p.cgroups_path,
            "runtime": self.name,
            "creating": True,
            "created_at": time.time(),
        }
        req = {
            "op": "create",
            "state_dir": str(d),
            "stdout": str(io.stdout) if io.stdout else None,
            "stderr": str(io.stderr) if io.stderr else None,
            "autostart": autostart,
            "brief": brief(p),
        }
        fifo = -1

        def make_fifo() -> None:  # meanwhile; the exit file is checked after it opens
            nonlocal fifo
            with contextlib.suppress(OSError):  # without it, a waiter falls back to the pidfd
                os.mkfifo(d / zygote.EXIT_FIFO, 0o600)
            fifo = open_exit_fifo(d) if watch else -1

        try:
            self._write(container_id, meta)
            reply = await self.client.request(req, p, make_fifo)
            if not reply.get("ok"):
                raise BundleError(f"container {container_id!r}: {reply.get('error')}")
        except BaseException:
            if fifo >= 0:
                os.close(fifo)
            await self._cleanup(container_id, p.cgroups_path)
            raise
        meta.update(
            pid=reply["pid"], start_time=reply["start_time"], started=autostart, creating=False
        )
        self._write(container_id, meta)
        log.info("created container %s pid %s", container_id, reply["pid"])
        return meta, fifo

    async def _cleanup(self, cid: str, cgroups_path: str) -> None:
        await asyncio.to_thread(cgroups.remove, self.layout, cgroups_path)
        shutil.rmtree(self._dir(cid), ignore_errors=True)

    async def start(self, container_id: str) -> None:
        data = self._read(container_id)
        st = self._state_of(container_id, data)
        if st.status != Status.CREATED:
            raise RuntimeError_(f"container {container_id!r} is {st.status}, not created")
        fifo = self._dir(container_id) / zygote.FIFO_FILE
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise RuntimeError_(f"container {container_id!r}: cannot start: {e}") from None
        try:
            os.write(fd, b"S")
        finally:
            os.close(fd)
        data["started"] = True
        self._write(container_id, data)
        with contextlib.suppress(OSError):
            fifo.unlink()

    async def state(self, container_id: str) -> ContainerState:
        return self._state_of(container_id, self._read(container_id))

    async def kill(self, container_id: str, signal: int) -> None:
        st = await self.state(container_id)
        if st.status not in (Status.CREATED, Status.RUNNING):
            raise RuntimeError_(f"container {container_id!r} is {st.status}: cannot signal it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, signal)

    async def wait(self, container_id: str) -> int:
        data = self._read(container_id)
        if data.get("creating"):
            raise RuntimeError_(f"container {container_id!r} is still being created")
        return await self._wait_code(container_id, int(data["pid"]), int(data["start_time"]))

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        data = self._read(container_id)
        st = self._state_of(container_id, data)
        if st.status in (Status.CREATED, Status.RUNNING):
            if not force:
                raise RuntimeError_(
                    f"container {container_id!r} is {st.status}; stop it or use force"
                )
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)
            await wait_pid_exit(st.pid, int(data["start_time"]))
        left = await asyncio.to_thread(
            cgroups.remove, self.layout, str(data.get("cgroups_path") or "")
        )
        if left:
            log.warning("container %s: cgroups left behind: %s", container_id, left)
        shutil.rmtree(self._dir(container_id), ignore_errors=True)

    async def exec(self, container_id: str, argv: Sequence[str], time_limit: float) -> int:
        """Run argv in a running container (its namespaces, cgroups, capabilities,
        seccomp, user, env and cwd); its exit code. TimeoutError after time_limit s."""
        data = self._read(container_id)
        st = self._state_of(container_id, data)
        if st.status != Status.RUNNING:
            raise RuntimeError_(f"container {container_id!r} is {st.status}: cannot exec in it")
        if not argv:
            raise BundleError(f"exec in {container_id!r}: empty command")
        p = load_plan(Path(data["bundle"]), default_cgroup=str(data.get("cgroups_path") or ""))
        p = dataclasses.replace(p, args=list(argv))
        exit_path = self._dir(container_id) / f"exec-{os.urandom(6).hex()}.exit"
        reply = await self.client.request(
            {"op": "exec", "pid": st.pid, "exit_path": str(exit_path)}, p
        )
        if not reply.get("ok"):
            raise RuntimeError_(f"exec in {container_id!r}: {reply.get('error')}")
        pid, start = int(reply["pid"]), int(reply["start_time"])
        try:
            async with asyncio.timeout(time_limit):
                await wait_pid_exit(pid, start)
                for _ in range(200):  # written just before the helper exits
                    code = _read_int(exit_path)
                    if code is not None:
                        return code
                    await asyncio.sleep(0.005)
                raise RuntimeError_(f"exec in {container_id!r}: no exit code recorded")
        except TimeoutError:
            if linux.start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # its child dies with it (PDEATHSIG)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(exit_path)

    async def run(self, container_id: str, bundle: Path, io: ContainerIO) -> int:
        meta, fifo = await self._create(container_id, bundle, io, autostart=True, watch=True)
        return await self._wait_code(container_id, meta["pid"], meta["start_time"], fifo=fifo)


async def delete_all(rt: Runtime) -> list[str]:
    """Force-delete every container a runtime's state dir knows (for `gantry down`)."""
    gone = []
    for st in await rt.list():
        await rt.delete(st.id, force=True)
        gone.append(st.id)
    return gone
