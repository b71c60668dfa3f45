"""The zygote: a pre-warmed, single-threaded helper that makes containers.

Forked from the agent before any thread exists (`Zygote.fork()`), it has
imported everything a container needs and serves requests over a
SOCK_SEQPACKET socketpair, one JSON message each way. For each "create" it
makes the cgroups, opens the log files, then does one raw
clone(NEWPID|NEWNS|NEWUTS|NEWIPC[|NEWNET]). The child becomes the
container's init (PID 1): it joins the cgroups (and a network namespace by
path), mounts the overlay root, /proc, /dev, /sys, masks paths,
pivot_roots, sets the hostname, then forks the application, which drops
capabilities (bounding set, capset, ambient), sets no_new_privs, loads the
seccomp filter, closes fds and execs. The init reaps zombies, forwards
signals to the application and, when it exits, writes its exit code into
the container's state dir (`exit`) before exiting itself.

Containers are not tied to the agent: the init calls setsid(), has no
parent-death signal, and when the zygote goes (it exits when the agent's end
of the socket closes) the inits are reparented and keep running. The zygote
also writes `exit` for an init it reaps that died without writing it (e.g.
SIGKILL).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import select
import signal
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any

from agent.runtime import cgroups, linux, seccomp
from agent.runtime.plan import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    Plan,
    Resources,
)
from agent.runtime.spec import seccomp_section

EXIT_FILE = "exit"
FIFO_FILE = "exec.fifo"
EXIT_FIFO = "exit.fifo"
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGALRM,
)
_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
MAX_MSG = 1 << 20


class SetupError(Exception):
    pass


# ---------------------------------------------------------------- child side


@dataclass
class ChildFds:
    status_w: int
    exit_dir: int
    stdout: int
    stderr: int
    netns: int
    fifo: int


def _inside(root: str, dest: str) -> str:
    target = os.path.join(root, dest.lstrip("/"))
    real = os.path.realpath(target)
    if real != root and not real.startswith(root + "/"):
        raise SetupError(f"mount destination {dest} escapes the root file system")
    return real


def _make_target(target: str, source_is_file: bool) -> None:
    if os.path.exists(target):
        return
    if source_is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    else:
        os.makedirs(target, exist_ok=True)


def _populate_dev(dev: str) -> None:
    for name, major, minor in _DEVICES:
        path = f"{dev}/{name}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in _DEV_LINKS:
        with contextlib.suppress(FileExistsError):
            os.symlink(target, f"{dev}/{name}")


def _do_mounts(root: str, plan: Plan) -> None:
    for m in plan.mounts:
        target = _inside(root, m.destination)
        if m.flags & MS_BIND:
            src = m.source
            _make_target(target, not os.path.isdir(src))
            linux.mount(src, target, None, m.flags & (MS_BIND | MS_REC))
            extra = m.flags & ~(MS_BIND | MS_REC)
            if extra:
                linux.mount(src, target, None, MS_BIND | MS_REMOUNT | extra)
            continue
        _make_target(target, False)
        linux.mount(m.source, target, m.type, m.flags, m.data or None)
        if m.destination == "/dev" and m.type == "tmpfs":
            _populate_dev(target)


def _mask_and_protect(plan: Plan) -> None:
    for p in plan.masked_paths:
        if not os.path.exists(p):
            continue
        if os.path.isdir(p):
            linux.mount("tmpfs", p, "tmpfs", MS_RDONLY)
        else:
            linux.mount("/dev/null", p, None, MS_BIND)
    for p in plan.readonly_paths:
        if not os.path.exists(p):
            continue
        linux.mount(p, p, None, MS_BIND | MS_REC)
        linux.mount(
            p, p, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID | MS_NODEV | MS_NOEXEC
        )


def _make_private() -> None:
    """Nothing mounted from here on propagates to the host (and pivot_root works)."""
    linux.mount("none", "/", None, MS_REC | MS_PRIVATE)


def _setup_root(plan: Plan, *, private: bool = False) -> None:
    root = os.path.realpath(plan.rootfs)
    if not private:
        _make_private()
    if plan.overlay_lower:
        opts = f"lowerdir={':'.join(plan.overlay_lower)}"
        if plan.overlay_upper:
            opts += f",upperdir={plan.overlay_upper},workdir={plan.overlay_work}"
        linux.mount("overlay", root, "overlay", 0, opts)
    else:
        linux.mount(root, root, None, MS_BIND | MS_REC)
    _do_mounts(root, plan)
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    _mask_and_protect(plan)
    if plan.readonly_root:
        linux.mount("/", "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _find_exec(plan: Plan) -> str:
    arg0 = plan.args[0]
    if "/" in arg0:
        if not (os.path.isfile(arg0) and os.access(arg0, os.X_OK)):
            raise SetupError(f"exec: {arg0!r}: no such executable file")
        return arg0
    path = next(
        (e[5:] for e in plan.env if e.startswith("PATH=")),
        "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    )
    for d in path.split(":"):
        cand = os.path.join(d or ".", arg0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise SetupError(f"exec: {arg0!r}: executable file not found in $PATH")


def _drop_privileges(plan: Plan) -> None:
    for cap in range(0, 64):
        if not (plan.cap_bounding >> cap) & 1:
            try:
                linux.prctl(linux.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    break
                raise
    if plan.uid or plan.gid:
        linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setgroups(plan.additional_gids)
    if plan.gid:
        os.setgid(plan.gid)
    if plan.uid:
        os.setuid(plan.uid)
    linux.capset(plan.cap_effective, plan.cap_permitted, plan.cap_inheritable)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(0, 64):
        if (plan.cap_ambient >> cap) & 1:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)


def _app_main(plan: Plan, fds: ChildFds, prepared_seccomp: Any, autostart: bool) -> None:
    """Runs as the container's application process, up to execve."""
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, *FORWARDED):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds.stdout if fds.stdout >= 0 else null, 1)
        os.dup2(fds.stderr if fds.stderr >= 0 else null, 2)
        for kind, soft, hard in plan.rlimits:
            resource.setrlimit(kind, (soft, hard))
        env = dict(e.split("=", 1) for e in plan.env if "=" in e)
        exe = _find_exec(plan)
        os.chdir(plan.cwd)
        _drop_privileges(plan)
        if not autostart:
            os.write(fds.status_w, b"R")
            if os.read(fds.fifo, 1) != b"S":
                os._exit(0)
        if plan.no_new_privs:
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        if prepared_seccomp is not None:
            linux.load_seccomp(prepared_seccomp)
        os.closerange(3, fds.status_w)
        linux.close_range_from(fds.status_w + 1)
        os.execve(exe, plan.args, env)
    except BaseException as e:  # noqa: BLE001 - reported to the zygote, then exit
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            os.write(2, f"gantry-init: {e}\n".encode())
        with contextlib.suppress(OSError):
            os.write(fds.status_w, f"E{e}".encode())
    os._exit(127)


def _write_exit(dir_fd: int, code: int) -> None:
    fd = os.open("exit.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    os.write(fd, str(code).encode())
    os.close(fd)
    os.rename("exit.tmp", EXIT_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    try:  # wake a waiter at once (ENXIO: nobody is waiting, which is fine)
        fd = os.open(EXIT_FIFO, os.O_WRONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.write(fd, b"x")
    os.close(fd)


def _detach_and_join(procs: list[str] | list[int]) -> None:
    """First steps of every container process: own session, no agent stdio, cgroups."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    # Let go of the agent's stdio: a container must not hold its pipes open.
    null = os.open("/dev/null", os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    os.close(null)
    for p in procs:
        if isinstance(p, int):  # a cgroup.procs opened before a rename could move it
            os.write(p, b"0")
            os.close(p)
        else:
            with open(p, "w") as f:
                f.write("0")


def _finish_setup(plan: Plan, fds: ChildFds, *, private: bool = False) -> None:
    if fds.netns >= 0:
        linux.setns(fds.netns, linux.CLONE_NEWNET)
        os.close(fds.netns)
    os.umask(0o022)
    _setup_root(plan, private=private)
    if plan.hostname:
        linux.sethostname(plan.hostname)


def _fail(fds: ChildFds, e: BaseException) -> None:
    with contextlib.suppress(OSError):
        os.write(fds.status_w, f"E{e}".encode())
    os._exit(126)


def _run_app(plan: Plan, fds: ChildFds, prepared_seccomp: Any, autostart: bool) -> None:
    app = os.fork()
    if app == 0:
        _app_main(plan, fds, prepared_seccomp, autostart)
    # Keep only the state dir (for the exit code): nothing of the agent's.
    os.closerange(3, fds.exit_dir)
    linux.close_range_from(fds.exit_dir + 1)
    _reap_forever(app, fds.exit_dir)


def _init_main(
    plan: Plan, fds: ChildFds, procs: list[str], prepared_seccomp: Any, autostart: bool
) -> None:
    """Runs as PID 1 of the new PID namespace (cold path: cloned for this request)."""
    try:
        _detach_and_join(procs)
        if fds.netns < 0 and plan.new_netns:
            linux.link_up("lo")
        _finish_setup(plan, fds)
    except BaseException as e:  # noqa: BLE001
        _fail(fds, e)
    _run_app(plan, fds, prepared_seccomp, autostart)


_EXEC_NAMESPACES = (
    ("ipc", linux.CLONE_NEWIPC),
    ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET),
    ("pid", linux.CLONE_NEWPID),
    ("mnt", linux.CLONE_NEWNS),
)


def _exec_main(plan: Plan, ns_fds: list[tuple[int, int]], procs: list[str], exit_path: str) -> None:
    """Forked from the zygote for `exec`: enter the container, run argv, record its code."""
    code = 126
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(null, std)
        for p in procs:
            with open(p, "w") as f:
                f.write("0")
        exit_dir = os.open(os.path.dirname(exit_path), os.O_RDONLY | os.O_DIRECTORY)
        for fd, flag in ns_fds:
            linux.setns(fd, flag)  # the mount namespace last: it also moves our root
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()  # the child is in the container's PID namespace
        if child == 0:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            fds = ChildFds(
                status_w=status_w, exit_dir=exit_dir, stdout=-1, stderr=-1, netns=-1, fifo=-1
            )
            _app_main(plan, fds, prepared_seccomp(plan.seccomp_hex), True)
        os.close(status_w)
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        tmp = os.path.basename(exit_path) + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=exit_dir)
        os.write(fd, str(code).encode())
        os.close(fd)
        os.rename(tmp, os.path.basename(exit_path), src_dir_fd=exit_dir, dst_dir_fd=exit_dir)
    finally:
        os._exit(code)


_FD_NAMES = ("status_w", "exit_dir", "stdout", "stderr", "netns", "fifo")
_SECCOMP_CACHE: dict[str, Any] = {}


def prepared_seccomp(hexprog: str) -> Any:
    if not hexprog:
        return None
    if hexprog not in _SECCOMP_CACHE:
        _SECCOMP_CACHE[hexprog] = linux.prepare_seccomp(bytes.fromhex(hexprog))
    return _SECCOMP_CACHE[hexprog]


def _sandbox_main(chan_init: socket.socket, chan_app: socket.socket, procs: list[int]) -> None:
    """A prepared sandbox: namespaces made, cgroups joined, `lo` up, mounts private,
    and the application's process already forked. Both wait for their request."""
    try:
        _detach_and_join(procs)
        low, high = sorted((chan_init.fileno(), chan_app.fileno()))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        linux.close_range_from(high + 1)
        linux.link_up("lo")
        _make_private()
        app = os.fork()
    except BaseException:  # noqa: BLE001 - the zygote sees the sandbox gone
        os._exit(126)
    if app == 0:
        chan_init.close()
        _sandbox_app(chan_app)
    chan_app.close()
    _sandbox_init(chan_init, app)


def _recv(chan: socket.socket, nfds: int) -> tuple[dict[str, Any], list[int]]:
    msg, got, _, _ = socket.recv_fds(chan, MAX_MSG, nfds)
    if not msg:
        raise EOFError("the zygote went away")
    for fd in got:
        os.set_inheritable(fd, False)
    chan.close()
    req: dict[str, Any] = json.loads(msg)
    return req, got


def _sandbox_app(chan: socket.socket) -> None:
    """The pre-forked application: does the mounts and pivot_root for the whole
    namespace (the init shares it), then drops privileges and execs."""
    try:
        req, got = _recv(chan, len(_FD_NAMES))
    except BaseException:  # noqa: BLE001 - nothing to become
        os._exit(0)
    idx = req["fds"]
    fds = ChildFds(**{n: (got[idx[n]] if idx[n] >= 0 else -1) for n in _FD_NAMES})
    plan = Plan.from_json(req["plan"])
    try:
        _finish_setup(plan, fds, private=True)
    except BaseException as e:  # noqa: BLE001
        _fail(fds, e)
    _app_main(plan, fds, prepared_seccomp(plan.seccomp_hex), bool(req.get("autostart")))


def _sandbox_init(chan: socket.socket, app: int) -> None:
    """The sandbox's PID 1: joins the container's network, then reaps and forwards."""
    try:
        req, got = _recv(chan, 2)
    except BaseException:  # noqa: BLE001 - the zygote went away: end the sandbox
        with contextlib.suppress(OSError):
            os.kill(app, signal.SIGKILL)
        os._exit(0)
    idx = req["fds"]
    if idx["netns"] >= 0:
        with contextlib.suppress(OSError):  # the app reports a bad netns itself
            linux.setns(got[idx["netns"]], linux.CLONE_NEWNET)
        os.close(got[idx["netns"]])
    _reap_forever(app, got[idx["exit_dir"]])


def _reap_forever(app: int, exit_dir: int) -> None:
    def forward(sig: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.kill(app, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    with contextlib.suppress(OSError):
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        linux.set_name("gantry-init")
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == app:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            with contextlib.suppress(OSError):
                _write_exit(exit_dir, code)
            os._exit(code)


# --------------------------------------------------------------- zygote side


@dataclass
class Sandbox:
    pid: int
    chan: socket.socket  # to its init
    chan_app: socket.socket  # to its pre-forked application process
    cgroup: str  # "/<prefix>/pool-..." until it is renamed for a container


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
                reply = self.handle(json.loads(raw))
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
                    _sandbox_main(theirs, theirs_app, procfds)
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

    def _take_sandbox(self, plan: Plan) -> Sandbox | None:
        if not self.pool or not plan.cgroups_path:
            return None
        target = "/" + cgroups.norm_path(plan.cgroups_path)
        if os.path.dirname(target) != f"/{self.prefix}" or any(
            os.path.exists(d) for d in cgroups.dirs(self.layout, target)
        ):
            return None
        sb = self.pool.pop(0)
        if linux.proc_state(sb.pid) in ("", "Z", "X"):
            sb.chan.close()
            sb.chan_app.close()
            cgroups.remove(self.layout, sb.cgroup, timeout=0)
            return None
        try:
            cgroups.rename(self.layout, sb.cgroup, target)
        except OSError:
            sb.chan.close()
            sb.chan_app.close()
            cgroups.remove(self.layout, sb.cgroup, timeout=0)
            return None
        sb.cgroup = target
        return sb

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
                        _write_exit(fd, code)
                    finally:
                        os.close(fd)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        try:
            if op == "create":
                return self.create(req)
            if op == "exec":
                return self.exec(req)
        except (OSError, SetupError, ValueError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def exec(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run a command in a running container, under the container's own limits."""
        plan = Plan.from_json(req["plan"])
        target = int(req["pid"])
        ns_fds = [
            (os.open(f"/proc/{target}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC), flag)
            for ns, flag in _EXEC_NAMESPACES
        ]
        procs = [
            os.path.join(d, "cgroup.procs") for d in cgroups.dirs(self.layout, plan.cgroups_path)
        ]
        pid = os.fork()
        if pid == 0:
            try:
                _exec_main(plan, ns_fds, procs, str(req["exit_path"]))
            finally:
                os._exit(125)
        for fd, _ in ns_fds:
            os.close(fd)
        return {"ok": True, "pid": pid, "start_time": linux.start_time(pid)}

    def create(self, req: dict[str, Any]) -> dict[str, Any]:
        plan = Plan.from_json(req["plan"])
        state_dir = str(req["state_dir"])
        autostart = bool(req.get("autostart"))
        sandbox = self._take_sandbox(plan)
        procs = (
            cgroups.create(self.layout, plan.cgroups_path, plan.resources)
            if plan.cgroups_path
            else []
        )
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
                netns=track(os.open(plan.netns_path, os.O_RDONLY | os.O_CLOEXEC))
                if plan.netns_path
                else -1,
                fifo=-1,
            )
            with contextlib.suppress(FileExistsError):
                os.mkfifo(os.path.join(state_dir, EXIT_FIFO), 0o600)
            if not autostart:
                fifo = os.path.join(state_dir, FIFO_FILE)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fifo)
                os.mkfifo(fifo, 0o600)
                fds.fifo = track(os.open(fifo, os.O_RDWR | os.O_CLOEXEC))
            pid = self._hand_over(sandbox, req["plan"], fds, autostart) if sandbox else 0
            if not pid:
                pid = self._clone(plan, fds, procs, status_r, autostart)
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
            return {"ok": False, "error": msg[1:].decode(errors="replace"), "pid": pid}
        return {"ok": True, "pid": pid, "start_time": start_time}

    def _hand_over(
        self, sb: Sandbox, plan_json: dict[str, Any], fds: ChildFds, autostart: bool
    ) -> int:
        """Give a prepared sandbox its plan and files; 0 if it is gone.

        The init gets the state dir (for the exit code) and the network namespace;
        the pre-forked application gets everything else and the plan.
        """
        app_send: list[int] = []
        app_index: dict[str, int] = {}
        for name in _FD_NAMES:
            fd = getattr(fds, name)
            app_index[name] = -1
            if fd >= 0 and name != "exit_dir":
                app_index[name] = len(app_send)
                app_send.append(fd)
        init_send = [fds.exit_dir] + ([fds.netns] if fds.netns >= 0 else [])
        init_msg = {"fds": {"exit_dir": 0, "netns": 1 if fds.netns >= 0 else -1}}
        app_msg = {"plan": plan_json, "fds": app_index, "autostart": autostart}
        try:
            socket.send_fds(sb.chan, [json.dumps(init_msg).encode()], init_send)
            socket.send_fds(sb.chan_app, [json.dumps(app_msg).encode()], app_send)
        except OSError:
            return 0
        finally:
            sb.chan.close()
            sb.chan_app.close()
        return sb.pid

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
                _init_main(plan, fds, procs, prepared, autostart)
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
