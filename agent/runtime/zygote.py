"""The zygote: a pre-warmed, single-threaded helper that makes containers.

Forked from the agent before any thread exists (`zygote_main`), it has
imported everything a container needs and serves requests over a
SOCK_SEQPACKET socketpair, one message each way (a JSON header; a request
also carries its plan, see `sandbox.pack`). For each "create" it opens the
log files, then either hands the request to a prepared sandbox from its pool
(`sandbox`) at once and, while the sandbox sets up, renames the sandbox's
cgroups to the container's and writes the limits before it lets the
sandbox exec; or it makes the cgroups and does one raw
clone(NEWPID|NEWNS|NEWUTS|NEWIPC[|NEWNET]) whose child becomes the
container's init and runs the set-up sequence (`childsetup`): cgroups,
network namespace, overlay root, /proc, /dev, /sys, masked paths,
pivot_root, hostname, then the application, which drops capabilities, sets
no_new_privs, loads seccomp, closes fds and execs. The init (`init`) reaps
zombies, forwards signals and records the exit code in the container's
state dir (`exit`). For "exec" it forks a child that enters the container's
namespaces and cgroups and runs the command there.

Owns the request loop, the pool's management (fill, take, drain, stale pool
cgroups) and the reaping of the inits it made. Containers are not tied to
the agent: the init calls setsid(), has no parent-death signal, and when the
zygote goes (it exits when the agent's end of the socket closes) the inits
are reparented and keep running. The zygote also writes `exit` for an init
it reaps that died without writing it (e.g. SIGKILL).

It must stay single-threaded and import everything at module top: it forks
and clones, and its children run Python up to execve.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
from typing import Any

from agent.runtime import cgroups, linux, seccomp
from agent.runtime.childsetup import (
    EXEC_NAMESPACES,
    ChildFds,
    SetupError,
    exec_main,
    init_main,
    prepared_seccomp,
)
from agent.runtime.pid1 import EXIT_FIFO, EXIT_FILE, FORWARDED, write_exit
from agent.runtime.plan import Plan, Resources
from agent.runtime.sandbox import (
    MAX_MSG,
    Sandbox,
    decode_plan,
    hand_over,
    let_go,
    sandbox_main,
    unpack,
)
from agent.runtime.spec import seccomp_section

__all__ = [
    "EXIT_FIFO",
    "EXIT_FILE",
    "FIFO_FILE",
    "FORWARDED",
    "MAX_MSG",
    "ChildFds",
    "SetupError",
    "Zygote",
    "prepared_seccomp",
    "zygote_main",
]

FIFO_FILE = "exec.fifo"


class Zygote:
    """The serving loop; lives in the forked helper process."""

    def __init__(self, sock: socket.socket, *, prefix: str = "gantry", pool_size: int = 0) -> None:
        self.sock = sock
        self.prefix = prefix
        self.layout = cgroups.detect()
        self.children: dict[int, str] = {}  # init pid -> state dir
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # A pool needs renamable cgroups (v1): on pure v2 hosts every request is cold.
        self.pool_size = pool_size if not cgroups.uses_v2(self.layout) else 0
        self.pool: list[Sandbox] = []
        self.seq = 0
        self._remove_stale_pool_cgroups()
        prepared_seccomp(seccomp.assemble(seccomp_section()).hex())  # warm the common filter

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self.fill_pool()
        refill = False
        while True:
            # Refill the pool once requests pause (a few ms), not while the
            # container just started still needs the CPU.
            ready, _, _ = select.select(
                [self.sock.fileno(), self.wake_r], [], [], 0.004 if refill else None
            )
            if not ready and refill:
                self.fill_pool()
                refill = False
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self.reap()
            if self.sock.fileno() in ready:
                try:
                    raw = self.sock.recv(MAX_MSG)
                except InterruptedError:
                    continue
                if not raw:
                    return
                reply = self.handle(*unpack(raw))
                self.sock.sendall(json.dumps(reply).encode())
                refill = len(self.pool) < self.pool_size

    # -- the pool of prepared sandboxes

    def fill_pool(self) -> None:
        while len(self.pool) < self.pool_size:
            name = f"/{self.prefix}/pool-{os.getpid()}-{self.seq}"
            self.seq += 1
            try:
                procs = cgroups.create(self.layout, name, Resources())
                procfds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in procs]
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                ours_app, theirs_app = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                flags = (
                    linux.CLONE_NEWPID | linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
                )
                pid = linux.clone(flags | linux.CLONE_NEWNET)
            except OSError as e:
                sys.stderr.write(f"gantry zygote: cannot prepare a sandbox: {e}\n")
                cgroups.remove(self.layout, name, timeout=0)
                self.pool_size = len(self.pool)
                return
            if pid == 0:
                try:
                    sandbox_main(theirs, theirs_app, procfds)
                finally:
                    os._exit(125)
            theirs.close()
            theirs_app.close()
            for fd in procfds:
                os.close(fd)
            self.pool.append(Sandbox(pid, ours, ours_app, name))

    def _remove_stale_pool_cgroups(self) -> None:
        """Empty pool cgroups a killed zygote left behind (a live one's stay: EBUSY)."""
        for mount in (*self.layout.v1_mounts, *([self.layout.v2] if self.layout.v2 else [])):
            with contextlib.suppress(OSError):
                for entry in os.scandir(os.path.join(mount, self.prefix)):
                    owner = entry.name.split("-")[1] if entry.name.startswith("pool-") else ""
                    if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                        with contextlib.suppress(OSError):
                            os.rmdir(entry.path)

    def drain_pool(self) -> None:
        for sb in self.pool:
            sb.chan.close()  # the sandbox reads EOF and exits
            sb.chan_app.close()
        for sb in self.pool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(sb.pid, 0)
            cgroups.remove(self.layout, sb.cgroup, timeout=2)
        self.pool = []

    def _take_sandbox(self, cgroups_path: str) -> Sandbox | None:
        """A prepared sandbox for this cgroup, if one fits (not yet renamed; one
        that died is found out at the hand-over)."""
        if not self.pool or not cgroups_path:
            return None
        target = "/" + cgroups.norm_path(cgroups_path)
        if os.path.dirname(target) != f"/{self.prefix}" or any(
            os.path.exists(d) for d in cgroups.dirs(self.layout, target)
        ):
            return None
        return self.pool.pop(0)

    def _discard(self, sb: Sandbox, *, remove_cgroup: bool = True) -> None:
        """End a sandbox that will not be used, and reap it: it records nothing."""
        sb.chan.close()
        sb.chan_app.close()
        with contextlib.suppress(OSError):
            os.kill(sb.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(sb.pid, 0)
        if remove_cgroup:
            cgroups.remove(self.layout, sb.cgroup, timeout=1)

    def _claim(self, sb: Sandbox, cgroups_path: str, res: Resources) -> None:
        """After the hand-over, while the sandbox sets up: rename its cgroups to the
        container's, write the limits, then let it exec. On failure the sandbox
        is killed and reaped (it can record nothing) and OSError raised."""
        try:
            cgroups.rename(self.layout, sb.cgroup, cgroups_path)
            sb.cgroup = cgroups_path
            cgroups.write_files(cgroups.resource_files(self.layout, sb.cgroup, res))
        except OSError:  # the client removes the container's cgroup, we the pool's
            self._discard(sb, remove_cgroup=sb.cgroup != cgroups_path)
            raise
        let_go(sb)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            state_dir = self.children.pop(pid, None)
            if state_dir and not os.path.exists(os.path.join(state_dir, EXIT_FILE)):
                code = os.waitstatus_to_exitcode(status)
                code = 128 - code if code < 0 else code
                with contextlib.suppress(OSError):
                    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        write_exit(fd, code)
                    finally:
                        os.close(fd)

    def handle(self, req: dict[str, Any], plan_raw: bytes = b"") -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        try:
            if op == "create":
                return self.create(req, plan_raw)
            if op == "exec":
                return self.exec(req, decode_plan(plan_raw))
        except (OSError, SetupError, ValueError, EOFError, KeyError, TypeError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def exec(self, req: dict[str, Any], plan: Plan) -> dict[str, Any]:
        """Run a command in a running container, under the container's own limits."""
        target = int(req["pid"])
        ns_fds = [
            (os.open(f"/proc/{target}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC), flag)
            for ns, flag in EXEC_NAMESPACES
        ]
        procs = [
            os.path.join(d, "cgroup.procs") for d in cgroups.dirs(self.layout, plan.cgroups_path)
        ]
        pid = os.fork()
        if pid == 0:
            try:
                exec_main(plan, ns_fds, procs, str(req["exit_path"]))
            finally:
                os._exit(125)
        for fd, _ in ns_fds:
            os.close(fd)
        return {"ok": True, "pid": pid, "start_time": linux.start_time(pid)}

    def create(self, req: dict[str, Any], plan_raw: bytes) -> dict[str, Any]:
        cg, netns_path = str(req["brief"]["cgroups_path"]), str(req["brief"]["netns_path"])
        res = Resources(**req["brief"]["resources"])
        state_dir = str(req["state_dir"])
        autostart = bool(req.get("autostart"))
        sandbox = self._take_sandbox(cg)
        procs = cgroups.create(self.layout, cg, res) if cg and not sandbox else []
        opened: list[int] = []

        def track(fd: int) -> int:
            opened.append(fd)
            return fd

        try:
            log_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            track(status_r)
            fds = ChildFds(
                status_w=track(status_w),
                exit_dir=track(os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)),
                stdout=track(os.open(req["stdout"], log_flags, 0o640)) if req.get("stdout") else -1,
                stderr=track(os.open(req["stderr"], log_flags, 0o640)) if req.get("stderr") else -1,
                netns=track(os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)) if netns_path else -1,
                fifo=-1,
            )
            if not autostart:
                fifo = os.path.join(state_dir, FIFO_FILE)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fifo)
                os.mkfifo(fifo, 0o600)
                fds.fifo = track(os.open(fifo, os.O_RDWR | os.O_CLOEXEC))
            pid = hand_over(sandbox, plan_raw, fds, autostart) if sandbox else 0
            if pid and sandbox:
                self._claim(sandbox, cg, res)
            if not pid:
                if sandbox:  # gone before the hand-over: a cold start in a fresh cgroup
                    self._discard(sandbox)
                    procs = cgroups.create(self.layout, cg, res) if cg else []
                pid = self._clone(decode_plan(plan_raw), fds, procs, status_r, autostart)
            self.children[pid] = state_dir
            start_time = linux.start_time(pid)
            os.close(status_w)
            opened.remove(status_w)
            msg = self._read_status(status_r, autostart)
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if msg.startswith(b"E"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # so it records nothing any more
                os.waitpid(pid, 0)
            self.children.pop(pid, None)
            return {"ok": False, "error": msg[1:].decode(errors="replace"), "pid": pid}
        return {"ok": True, "pid": pid, "start_time": start_time}

    def _clone(
        self, plan: Plan, fds: ChildFds, procs: list[str], status_r: int, autostart: bool
    ) -> int:
        prepared = prepared_seccomp(plan.seccomp_hex)
        flags = linux.CLONE_NEWPID | linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
        if plan.new_netns:
            flags |= linux.CLONE_NEWNET
        pid = linux.clone(flags)
        if pid == 0:
            try:
                os.close(status_r)
                self.sock.close()
                os.close(self.wake_r)
                os.close(self.wake_w)
                for sb in self.pool:
                    sb.chan.close()
                    sb.chan_app.close()
                init_main(plan, fds, procs, prepared, autostart)
            finally:
                os._exit(125)
        return pid

    @staticmethod
    def _read_status(fd: int, autostart: bool) -> bytes:
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except InterruptedError:
                continue
            if not chunk:
                return buf
            buf += chunk
            if not autostart and buf == b"R":
                return buf


def zygote_main(sock: socket.socket, *, prefix: str, pool_size: int) -> None:
    """Entry point in the forked helper; never returns."""
    code = 0
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        z = Zygote(sock, prefix=prefix, pool_size=pool_size)
        try:
            z.serve()
        finally:
            z.drain_pool()
    except BaseException as e:  # noqa: BLE001
        with contextlib.suppress(OSError):
            sys.stderr.write(f"gantry zygote: {e!r}\n")
        code = 1
    os._exit(code)
