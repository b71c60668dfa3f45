"""Thin ctypes wrappers over the Linux calls the core needs.

Owns nothing but the calls: clone (raw, fork-like), setns, mount, umount2,
pivot_root, prctl, capset, sethostname, seccomp loading, bringing `lo` up,
mknod. Each raises OSError with errno and the call's name. Loaded once at
import (the zygote imports this before any request; nothing may be imported
after pivot_root).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

_libc = ctypes.CDLL(None, use_errno=True)
# PyDLL keeps the GIL across the call: the raw clone's child must come back
# holding the same interpreter state the parent had.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_pysyscall = _pylibc.syscall
_pysyscall.restype = ctypes.c_long

SYS_CLONE = 56
SYS_PIVOT_ROOT = 155
SYS_CAPSET = 126
SYS_SETNS = 308
SYS_SETHOSTNAME = 170
SYS_CLOSE_RANGE = 436

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

_CAP_V3 = 0x20080522


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def clone(flags: int) -> int:
    """fork-like clone(2) with namespace flags; 0 in the child, pid in the parent."""
    ctypes.set_errno(0)
    return _check(
        int(
            _pysyscall(
                ctypes.c_long(SYS_CLONE), ctypes.c_ulong(flags | SIGCHLD), None, None, None, None
            )
        ),
        "clone",
    )


def setns(fd: int, nstype: int) -> None:
    _check(_syscall(SYS_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    ret = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    _check(ret, f"mount {fstype or ''} {source} on {target}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount2 {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_syscall(SYS_SETHOSTNAME, raw, ctypes.c_size_t(len(raw))), "sethostname")


PR_SET_NAME = 15


def set_name(name: str) -> None:
    """The process's comm name (what ps shows without arguments), <= 15 bytes."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), buf, 0, 0, 0), "prctl(PR_SET_NAME)")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(
            ctypes.c_int(option),
            ctypes.c_ulong(arg2),
            ctypes.c_ulong(arg3),
            ctypes.c_ulong(arg4),
            ctypes.c_ulong(arg5),
        ),
        f"prctl({option})",
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = struct.pack("=Ii", _CAP_V3, 0)
    data = struct.pack(
        "=IIIIII",
        effective & 0xFFFFFFFF,
        permitted & 0xFFFFFFFF,
        inheritable & 0xFFFFFFFF,
        effective >> 32,
        permitted >> 32,
        inheritable >> 32,
    )
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(data, len(data))
    _check(_syscall(SYS_CAPSET, hbuf, dbuf), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def prepare_seccomp(program: bytes) -> tuple[_SockFprog, ctypes.Array[ctypes.c_char]]:
    """Build the prctl argument ahead of time (keep both objects alive)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    return prog, buf


def load_seccomp(prepared: tuple[_SockFprog, ctypes.Array[ctypes.c_char]]) -> None:
    prog = prepared[0]
    ret = _libc.prctl(
        ctypes.c_int(PR_SET_SECCOMP),
        ctypes.c_ulong(SECCOMP_MODE_FILTER),
        ctypes.byref(prog),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    _check(ret, "seccomp")


def close_range_from(first: int) -> None:
    if (
        _syscall(SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(0))
        < 0
    ):
        os.closerange(first, 65536)


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def link_up(name: str = "lo") -> None:
    """Bring an interface up in the current network namespace (ioctl, no exec)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", name.encode(), 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(
            s.fileno(), _SIOCSIFFLAGS, struct.pack("16sh14x", name.encode(), flags | _IFF_UP)
        )


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks since boot); 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0
    rest = raw[raw.rfind(b")") + 2 :].split()
    return int(rest[19]) if len(rest) > 19 else 0


def proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ('' if gone, 'Z' for a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    rest = raw[raw.rfind(b")") + 2 :].split()
    return rest[0].decode() if rest else ""
