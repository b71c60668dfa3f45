"""Prepared sandboxes: the pool's warm half of a container, both ends.

A sandbox is cloned by the zygote ahead of any request (new PID, mount, UTS,
IPC and network namespaces, cgroups joined, `lo` up, mounts private) and
forks its application process at once; then its init and its application
each wait on a SOCK_SEQPACKET channel. `hand_over` (zygote side) sends them
a request: the init gets the state dir and the network namespace, the
application the plan and every other file, does the mounts and pivot_root
for the namespace, drops privileges and execs (see `childsetup`).

Owns the `Sandbox` record, the sandbox's process entry points and the
hand-over messages. It does not decide when to fill, take or drain the pool
(the zygote does). The child side runs between clone/fork and exec: no
threads, no logging, no lazy imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from agent.runtime import linux
from agent.runtime.childsetup import (
    ChildFds,
    app_main,
    detach_and_join,
    fail,
    finish_setup,
    make_private,
    prepared_seccomp,
)
from agent.runtime.pid1 import reap_forever
from agent.runtime.plan import Plan

MAX_MSG = 1 << 20  # the largest JSON message on any of the zygote's sockets
_FD_NAMES = ("status_w", "exit_dir", "stdout", "stderr", "netns", "fifo")


@dataclass
class Sandbox:
    pid: int
    chan: socket.socket  # to its init
    chan_app: socket.socket  # to its pre-forked application process
    cgroup: str  # "/<prefix>/pool-..." until it is renamed for a container


def hand_over(sb: Sandbox, plan_json: dict[str, Any], fds: ChildFds, autostart: bool) -> int:
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


# ------------------------------------------------------------- sandbox side


def sandbox_main(chan_init: socket.socket, chan_app: socket.socket, procs: list[int]) -> None:
    """A prepared sandbox: namespaces made, cgroups joined, `lo` up, mounts private,
    and the application's process already forked. Both wait for their request."""
    try:
        detach_and_join(procs)
        low, high = sorted((chan_init.fileno(), chan_app.fileno()))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        linux.close_range_from(high + 1)
        linux.link_up("lo")
        make_private()
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
        finish_setup(plan, fds, private=True)
    except BaseException as e:  # noqa: BLE001
        fail(fds, e)
    app_main(plan, fds, prepared_seccomp(plan.seccomp_hex), bool(req.get("autostart")))


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
    reap_forever(app, got[idx["exit_dir"]])
