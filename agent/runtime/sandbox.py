"""Prepared sandboxes: the pool's warm half of a container, both ends.

A sandbox is cloned by the zygote ahead of any request (new PID, mount, UTS,
IPC and network namespaces, cgroups joined, `lo` up, mounts private, the
default /proc, /dev and /sys staged by `rootfs.stage`; signals set as the
init and the application will want them) and forks its application process
at once; then its init and its application each wait on a SOCK_SEQPACKET
channel. `hand_over` (zygote side) sends them a request: the application
gets the plan and every file but the state dir, does the mounts and
pivot_root for the namespace and drops privileges (see `childsetup`) while
the zygote renames and limits the sandbox's cgroups, and execs only once
`let_go` says those are final; the init gets the state dir and the network
namespace.

Owns the `Sandbox` record, the sandbox's process entry points and the
messages, the client's requests included (`pack`/`unpack`: a JSON header,
then the plan as `encode_plan` made it, passed on untouched). It does not
decide when to fill, take or drain the pool (the zygote does). The child side runs between clone/fork and exec: no
threads, no logging, no lazy imports.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from agent.runtime import linux, rootfs
from agent.runtime.childsetup import (
    ChildFds,
    app_main,
    detach_and_join,
    fail,
    finish_setup,
    prepared_seccomp,
    reset_signals,
)
from agent.runtime.pid1 import become_init, reap_forever
from agent.runtime.plan import Plan

MAX_MSG = 1 << 20  # the largest JSON message on any of the zygote's sockets
_FD_NAMES = ("status_w", "exit_dir", "stdout", "stderr", "netns", "fifo")
GO = b"G"  # zygote -> handed-over application: cgroups renamed and limited, exec


@dataclass
class Sandbox:
    pid: int
    chan: socket.socket  # to its init
    chan_app: socket.socket  # to its pre-forked application process
    cgroup: str  # "/<prefix>/pool-..." until it is renamed for a container


def pack(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One message: a small JSON header, a newline, then a body (a plan) as is.

    The plan travels client -> zygote -> sandbox without being re-encoded
    (JSON text never holds a raw newline, so the first one splits).
    """
    return json.dumps(header).encode() + b"\n" + body


def encode_plan(p: Plan) -> bytes:
    """A plan as a message body: `marshal`, not JSON. The client, the zygote and
    the sandboxes are forks of one interpreter (one format), and a freshly
    forked child loads it several times faster."""
    return marshal.dumps(p.to_json())


def decode_plan(body: bytes) -> Plan:
    return Plan.from_json(marshal.loads(body))


def brief(p: Plan) -> dict[str, Any]:
    """What the zygote itself needs of a plan when a prepared sandbox takes it
    (it decodes the whole plan only to clone a container itself)."""
    return {
        "cgroups_path": p.cgroups_path,
        "resources": dict(p.resources.__dict__),
        "netns_path": p.netns_path,
    }


def unpack(raw: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, plan_raw = raw.partition(b"\n")
    header: dict[str, Any] = json.loads(head)
    return header, plan_raw


def hand_over(sb: Sandbox, plan_raw: bytes, fds: ChildFds, autostart: bool) -> int:
    """Give a prepared sandbox its plan and files; 0 if it is gone.

    The init gets the state dir (for the exit code) and the network namespace;
    the pre-forked application gets everything else and the plan, sets the
    container up at once, and waits for `let_go` before it execs.
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
    app_msg = pack({"fds": app_index, "autostart": autostart}, plan_raw)
    try:  # the application first: if it is gone, the init learns nothing
        socket.send_fds(sb.chan_app, [app_msg], app_send)
        socket.send_fds(sb.chan, [pack(init_msg)], init_send)
    except OSError:
        sb.chan_app.close()
        return 0
    finally:
        sb.chan.close()
    return sb.pid


def let_go(sb: Sandbox) -> None:
    """The container's cgroups are final: the handed-over application may exec.

    A send that fails means the application is gone; its status says why.
    """
    with contextlib.suppress(OSError):
        sb.chan_app.send(GO)
    sb.chan_app.close()


# ------------------------------------------------------------- sandbox side


def sandbox_main(chan_init: socket.socket, chan_app: socket.socket, procs: list[int]) -> None:
    """A prepared sandbox: namespaces made, cgroups joined, `lo` up, mounts private,
    kernel file systems staged, and the application's process already forked.
    Both wait for their request."""
    try:
        detach_and_join(procs)
        low, high = sorted((chan_init.fileno(), chan_app.fileno()))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        linux.close_range_from(high + 1)
        linux.link_up("lo")
        rootfs.make_private()
        staged = rootfs.stage()
        app = os.fork()
    except BaseException:  # noqa: BLE001 - the zygote sees the sandbox gone
        os._exit(126)
    if app == 0:
        chan_init.close()
        _sandbox_app(chan_app, staged)
    chan_app.close()
    become_init(app)
    _sandbox_init(chan_init, app)


def _recv(chan: socket.socket, nfds: int) -> tuple[dict[str, Any], bytes, list[int]]:
    msg, got, _, _ = socket.recv_fds(chan, MAX_MSG, nfds)
    if not msg:
        raise EOFError("the zygote went away")
    for fd in got:
        os.set_inheritable(fd, False)
    req, plan_raw = unpack(msg)
    return req, plan_raw, got


def _sandbox_app(chan: socket.socket, staged: bool) -> None:
    """The pre-forked application: does the mounts and pivot_root for the whole
    namespace (the init shares it), then drops privileges and, once the zygote
    says its cgroups are final (`GO` on the channel), execs."""
    reset_signals()
    try:
        req, plan_raw, got = _recv(chan, len(_FD_NAMES))
    except BaseException:  # noqa: BLE001 - nothing to become
        os._exit(0)
    idx = req["fds"]
    fds = ChildFds(**{n: (got[idx[n]] if idx[n] >= 0 else -1) for n in _FD_NAMES})
    plan = decode_plan(plan_raw)
    try:
        finish_setup(plan, fds, private=True, staged=staged)
    except BaseException as e:  # noqa: BLE001
        fail(fds, e)
    prepared = prepared_seccomp(plan.seccomp_hex)
    autostart = bool(req.get("autostart"))
    app_main(plan, fds, prepared, autostart, go_fd=chan.fileno(), signals_reset=True)


def _sandbox_init(chan: socket.socket, app: int) -> None:
    """The sandbox's PID 1: joins the container's network, then reaps and forwards."""
    try:
        req, _, got = _recv(chan, 2)
        chan.close()
    except BaseException:  # noqa: BLE001 - the zygote went away: end the sandbox
        with contextlib.suppress(OSError):
            os.kill(app, signal.SIGKILL)
        os._exit(0)
    idx = req["fds"]
    if idx["netns"] >= 0:
        with contextlib.suppress(OSError):  # the app reports a bad netns itself
            linux.setns(got[idx["netns"]], linux.CLONE_NEWNET)
        os.close(got[idx["netns"]])
    reap_forever(app, got[idx["exit_dir"]], became=True)
