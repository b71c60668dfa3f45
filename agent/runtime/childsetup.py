"""What runs inside a container's process, from clone/fork up to execve.

Owns the in-child setup sequence: leave the agent's session and stdio, join
the cgroups and the network namespace, set up the root file system (the
mounts themselves are `rootfs`'s), set the hostname; then, in the
application process, reset signals, redirect stdio, set rlimits, find the
executable, drop privileges (bounding set, ids, capset, ambient), wait for
the zygote's go (a pool sandbox) and for `start` if asked, set
no_new_privs, load seccomp, close fds and exec. Also the cold-path init's
entry (`init_main`), the `exec` request's child (`exec_main`), and the cache
of seccomp filters prepared before any request.

Everything here runs between clone/fork and exec in a child of the
single-threaded zygote: it must not start threads, set up logging or import
anything lazily (all imports stay at module top, loaded before the fork;
nothing can be imported after pivot_root). Errors reach the zygote over the
status pipe as b"E<message>", then the process ends with `os._exit`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
from dataclasses import dataclass
from typing import Any

from agent.runtime import linux
from agent.runtime.pid1 import FORWARDED, reap_forever
from agent.runtime.plan import Plan
from agent.runtime.rootfs import SetupError as SetupError  # re-exported
from agent.runtime.rootfs import setup_root


@dataclass
class ChildFds:
    status_w: int
    exit_dir: int
    stdout: int
    stderr: int
    netns: int
    fifo: int


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
    for cap in range(0, linux.CAP_LAST + 1):
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


def reset_signals() -> None:
    """The application starts with default signal dispositions."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, *FORWARDED):
        signal.signal(sig, signal.SIG_DFL)


def app_main(
    plan: Plan,
    fds: ChildFds,
    prepared_seccomp: Any,
    autostart: bool,
    *,
    go_fd: int = -1,
    signals_reset: bool = False,
) -> None:
    """Runs as the container's application process, up to execve.

    With `go_fd`, waits there for b"G" (the zygote has made the cgroups final)
    before it reports ready or execs; anything else ends it. `signals_reset`:
    `reset_signals()` was done already (a pool sandbox, ahead of its request).
    """
    try:
        if not signals_reset:
            reset_signals()
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
        if go_fd >= 0 and os.read(go_fd, 1) != b"G":
            raise SetupError("the zygote withdrew the container before its start")
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


def detach_and_join(procs: list[str] | list[int]) -> None:
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


def finish_setup(plan: Plan, fds: ChildFds, *, private: bool = False, staged: bool = False) -> None:
    if fds.netns >= 0:
        linux.setns(fds.netns, linux.CLONE_NEWNET)
        os.close(fds.netns)
    os.umask(0o022)
    setup_root(plan, private=private, staged=staged)
    if plan.hostname:
        linux.sethostname(plan.hostname)


def fail(fds: ChildFds, e: BaseException) -> None:
    with contextlib.suppress(OSError):
        os.write(fds.status_w, f"E{e}".encode())
    os._exit(126)


def _run_app(plan: Plan, fds: ChildFds, prepared_seccomp: Any, autostart: bool) -> None:
    app = os.fork()
    if app == 0:
        app_main(plan, fds, prepared_seccomp, autostart)
    # Keep only the state dir (for the exit code): nothing of the agent's.
    os.closerange(3, fds.exit_dir)
    linux.close_range_from(fds.exit_dir + 1)
    reap_forever(app, fds.exit_dir)


def init_main(
    plan: Plan, fds: ChildFds, procs: list[str], prepared_seccomp: Any, autostart: bool
) -> None:
    """Runs as PID 1 of the new PID namespace (cold path: cloned for this request)."""
    try:
        detach_and_join(procs)
        if fds.netns < 0 and plan.new_netns:
            linux.link_up("lo")
        finish_setup(plan, fds)
    except BaseException as e:  # noqa: BLE001
        fail(fds, e)
    _run_app(plan, fds, prepared_seccomp, autostart)


EXEC_NAMESPACES = (
    ("ipc", linux.CLONE_NEWIPC),
    ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET),
    ("pid", linux.CLONE_NEWPID),
    ("mnt", linux.CLONE_NEWNS),
)


def exec_main(plan: Plan, ns_fds: list[tuple[int, int]], procs: list[str], exit_path: str) -> None:
    """Forked from the zygote for `exec`: enter the container, run argv, record its code."""
    code = 126
    try:
        detach_and_join(procs)
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
            app_main(plan, fds, prepared_seccomp(plan.seccomp_hex), True)
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


_SECCOMP_CACHE: dict[str, Any] = {}


def prepared_seccomp(hexprog: str) -> Any:
    if not hexprog:
        return None
    if hexprog not in _SECCOMP_CACHE:
        _SECCOMP_CACHE[hexprog] = linux.prepare_seccomp(bytes.fromhex(hexprog))
    return _SECCOMP_CACHE[hexprog]
