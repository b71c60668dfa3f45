"""Per-container state on disk and waiting for a container's exit.

Owns the files under `<state_dir>/containers/<id>/` that the core and the
runc runtime share (`state.json`, `exit`, `exit.fifo`), what a container's
state is made of them and /proc (`ContainerFiles`), and the waits: for a
process's end (pidfd) and for a recorded exit code (`exit.fifo` wake-ups,
no polling while the init is alive). It starts no process and talks to no
zygote: the runtimes built on it (`core.Core`, `runc.Runc`) do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from agent.runtime import cgroups, linux
from agent.runtime.base import BundleError, ContainerNotFound, ContainerState, RuntimeError_, Status
from agent.runtime.pid1 import EXIT_FIFO, EXIT_FILE

KILLED_EXIT = 137  # an init that vanished without leaving an exit code was SIGKILLed
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


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
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(raw) if raw.lstrip(b"-").isdigit() else None


def write_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically (write a temporary beside it, then rename)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def open_exit_fifo(d: Path) -> int:
    """Open `<d>/exit.fifo` for reading, without waiting for a writer; -1 if absent."""
    try:
        return os.open(d / EXIT_FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


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


def _wake_on(loop: asyncio.AbstractEventLoop, fd: int, wake: asyncio.Event) -> None:
    def ready() -> None:
        loop.remove_reader(fd)
        wake.set()

    loop.add_reader(fd, ready)


async def wait_exit_code(
    d: Path, pid: int, start_time: int, *, grace: float, early_out: bool, fifo: int = -1
) -> int:
    """Wait for `<d>/exit` (written just before the init exits) or the process's end.

    The init signals through the `exit.fifo` as soon as the code is written, so
    a waiter does not also wait for the namespaces' teardown (several ms).
    `fifo`, if given, is that fifo already open (`open_exit_fifo`); it is closed.
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    fds: list[int] = []
    fifo = fifo if fifo >= 0 else open_exit_fifo(d)
    if fifo >= 0:  # the init writes a byte here once `exit` is there
        fds.append(fifo)
        _wake_on(loop, fifo, wake)
    if pid > 0 and linux.start_time(pid) == start_time:
        with contextlib.suppress(OSError):
            fds.append(os.pidfd_open(pid))
            _wake_on(loop, fds[-1], wake)
    gone_at: float | None = None
    try:
        while True:
            wake.clear()
            code = _read_int(d / EXIT_FILE)
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
    code = _read_int(d / EXIT_FILE)
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
        write_file(self._dir(cid) / "state.json", json.dumps(data).encode())

    def _exit_code(self, cid: str) -> int | None:
        return _read_int(self._dir(cid) / EXIT_FILE)

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
        self,
        cid: str,
        pid: int,
        start_time: int,
        *,
        grace: float = 1.0,
        early_out: bool = True,
        fifo: int = -1,
    ) -> int:
        """The exit code, as soon as it is recorded (exit.fifo) or the process is gone.

        After the process has gone, waits up to `grace` s for the file; with
        `early_out`, not at all once the process is reaped (nobody will write it).
        """
        return await wait_exit_code(
            self._dir(cid), pid, start_time, grace=grace, early_out=early_out, fifo=fifo
        )

    async def list(self) -> list[ContainerState]:
        out = []
        for d in sorted((self.state_dir / "containers").iterdir()):
            with contextlib.suppress(ContainerNotFound, RuntimeError_, KeyError, ValueError):
                out.append(self._state_of(d.name, self._read(d.name)))
        return out
