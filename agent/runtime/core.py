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
joined, `lo` up); a container whose cgroupsPath is `/<prefix>/<name>` takes
one (its cgroup is renamed), others are cloned on request. `exec()` runs a
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
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.runtime import cgroups, linux, plan, zygote
from agent.runtime.base import (
    BundleError,
    ContainerExists,
    ContainerIO,
    ContainerNotFound,
    ContainerState,
    Runtime,
    RuntimeError_,
    Status,
)

log = logging.getLogger("gantry.runtime.core")

KILLED_EXIT = 137  # an init that vanished without leaving an exit code was SIGKILLed
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class ZygoteGone(RuntimeError_):
    """The helper process is not running (restart the agent's Core)."""


def check_id(container_id: str) -> str:
    if (
        not container_id
        or len(container_id) > 128
        or not set(container_id) <= _ID_CHARS
        or container_id[0] == "."
    ):
        raise BundleError(f"container id {container_id!r} must be 1-128 of [A-Za-z0-9_.-]")
    return container_id


def _read_int(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.lstrip("-").isdigit() else None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


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
        p = plan.Plan.from_json({**p.to_json(), "cgroups_path": default_cgroup})
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

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        async with self.lock:
            if self.sock.fileno() < 0:
                raise ZygoteGone("the core's zygote was closed")
            self.sock.setblocking(False)
            try:
                await loop.sock_sendall(self.sock, json.dumps(msg).encode())
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


async def wait_pid_exit(pid: int, start_time: int) -> None:
    """Wait (without blocking the loop) until the process is gone or a zombie."""
    if pid <= 0 or linux.start_time(pid) != start_time:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        if linux.start_time(pid) != start_time:  # exited or reused before the fd
            return
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def wait_exit_code(
    d: Path, pid: int, start_time: int, *, grace: float, early_out: bool
) -> int:
    """Wait for `<d>/exit` (written just before the init exits) or the process's end.

    The init signals through the `exit.fifo` as soon as the code is written, so
    a waiter does not also wait for the namespaces' teardown (several ms).
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    fds: list[int] = []
    with contextlib.suppress(OSError):  # the init writes a byte here once `exit` is there
        fifo = os.open(d / zygote.EXIT_FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        fds.append(fifo)

        def on_fifo() -> None:
            loop.remove_reader(fifo)
            wake.set()

        loop.add_reader(fifo, on_fifo)
    if pid > 0 and linux.start_time(pid) == start_time:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
            fds.append(pidfd)

            def on_pid() -> None:
                loop.remove_reader(pidfd)
                wake.set()

            loop.add_reader(pidfd, on_pid)
    gone_at: float | None = None
    try:
        while True:
            wake.clear()
            code = _read_int(d / zygote.EXIT_FILE)
            if code is not None:
                return code
            alive = linux.start_time(pid) == start_time and linux.proc_state(pid) not in (
                "Z",
                "X",
                "",
            )
            timeout: float | None = None if len(fds) == 2 else 0.05
            if not alive:
                if early_out and linux.start_time(pid) != start_time:
                    break  # reaped and still no file: nobody recorded it
                gone_at = gone_at if gone_at is not None else loop.time()
                if loop.time() - gone_at > grace:
                    break
                timeout = 0.01
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
    code = _read_int(d / zygote.EXIT_FILE)
    return KILLED_EXIT if code is None else code


class ContainerFiles:
    """Per-container state on disk, shared by the core and the runc runtime."""

    name = "files"

    def __init__(self, *, state_dir: Path, prefix: str = "gantry") -> None:
        self.state_dir = Path(state_dir)
        self.prefix = prefix
        self.layout = cgroups.detect()
        (self.state_dir / "containers").mkdir(parents=True, exist_ok=True)

    def _dir(self, cid: str) -> Path:
        return self.state_dir / "containers" / check_id(cid)

    def _read(self, cid: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self._dir(cid) / "state.json").read_text())
            return data
        except FileNotFoundError:
            raise ContainerNotFound(f"container {cid!r} not found in {self.state_dir}") from None
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError_(f"container {cid!r}: unreadable state: {e}") from None

    def _write(self, cid: str, data: dict[str, Any]) -> None:
        d = self._dir(cid)
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, d / "state.json")

    def _exit_code(self, cid: str) -> int | None:
        return _read_int(self._dir(cid) / zygote.EXIT_FILE)

    def _state_of(self, cid: str, data: dict[str, Any]) -> ContainerState:
        bundle = Path(data.get("bundle", ""))
        if data.get("creating"):
            return ContainerState(cid, Status.CREATING, 0, bundle)
        pid, st = int(data.get("pid", 0)), int(data.get("start_time", 0))
        code = self._exit_code(cid)
        if pid == 0 and code is None:
            return ContainerState(cid, Status.CREATED, 0, bundle)
        alive = (
            code is None
            and linux.start_time(pid) == st
            and linux.proc_state(pid) not in ("Z", "X", "")
        )
        if alive:
            return ContainerState(
                cid, Status.RUNNING if data.get("started") else Status.CREATED, pid, bundle
            )
        if code is None and linux.start_time(pid) != st:
            code = KILLED_EXIT  # init gone and nobody could record why
        return ContainerState(cid, Status.STOPPED, 0, bundle, code)

    async def _wait_code(
        self, cid: str, pid: int, start_time: int, *, grace: float = 1.0, early_out: bool = True
    ) -> int:
        """The exit code, as soon as it is recorded (inotify) or the process is gone.

        After the process has gone, waits up to `grace` s for the file; with
        `early_out`, not at all once the process is reaped (nobody will write it).
        """
        return await wait_exit_code(
            self._dir(cid), pid, start_time, grace=grace, early_out=early_out
        )

    async def list(self) -> list[ContainerState]:
        out = []
        for d in sorted((self.state_dir / "containers").iterdir()):
            with contextlib.suppress(ContainerNotFound, RuntimeError_, KeyError, ValueError):
                out.append(self._state_of(d.name, self._read(d.name)))
        return out


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
        self._write(container_id, meta)
        req = {
            "op": "create",
            "plan": p.to_json(),
            "state_dir": str(d),
            "stdout": str(io.stdout) if io.stdout else None,
            "stderr": str(io.stderr) if io.stderr else None,
            "autostart": autostart,
        }
        try:
            reply = await self.client.request(req)
        except BaseException:
            await self._cleanup(container_id, p.cgroups_path)
            raise
        if not reply.get("ok"):
            await self._cleanup(container_id, p.cgroups_path)
            raise BundleError(f"container {container_id!r}: {reply.get('error')}")
        meta.update(
            pid=reply["pid"], start_time=reply["start_time"], started=autostart, creating=False
        )
        self._write(container_id, meta)
        log.info("created container %s pid %s", container_id, reply["pid"])

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
        p = plan.Plan.from_json({**p.to_json(), "args": list(argv)})
        exit_path = self._dir(container_id) / f"exec-{os.urandom(6).hex()}.exit"
        reply = await self.client.request(
            {"op": "exec", "pid": st.pid, "plan": p.to_json(), "exit_path": str(exit_path)}
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
        await self.create(container_id, bundle, io, autostart=True)
        return await self.wait(container_id)


async def delete_all(rt: Runtime) -> list[str]:
    """Force-delete every container a runtime's state dir knows (for `gantry down`)."""
    gone = []
    for st in await rt.list():
        await rt.delete(st.id, force=True)
        gone.append(st.id)
    return gone
