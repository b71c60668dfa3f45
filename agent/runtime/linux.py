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
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
# PyDLL keeps the GIL across the call: the raw clone's child must come back
# holding the same interpreter state the parent had.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pysyscall = _pylibc.syscall
_pysyscall.restype = ctypes.c_long


def _typed(name: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Any:
    """A libc function of its own with fixed argument types: a call converts
    plain ints and bytes directly (cheaper than a ctypes object per argument,
    which counts in a freshly forked child)."""
    fn = _libc[name]  # a new function object: its argtypes are its own
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


_C, _UL, _L, _P = ctypes.c_int, ctypes.c_ulong, ctypes.c_long, ctypes.c_char_p
_prctl = _typed("prctl", [_C, _UL, _UL, _UL, _UL])
_mount = _typed("mount", [_P, _P, _P, _UL, _P])
_umount2 = _typed("umount2", [_P, _C])
_prctl_p = _typed("prctl", [_C, _UL, ctypes.c_void_p, _UL, _UL])  # a pointer third
_sys_ii = _typed("syscall", [_L, _C, _C], _L)  # setns
_sys_pp = _typed("syscall", [_L, _P, _P], _L)  # pivot_root
_sys_pn = _typed("syscall", [_L, _P, ctypes.c_size_t], _L)  # sethostname
_sys_vv = _typed("syscall", [_L, ctypes.c_void_p, ctypes.c_void_p], _L)  # capset
_sys_uuu = _typed("syscall", [_L, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint], _L)

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
    _check(_sys_ii(SYS_SETNS, fd, nstype), "setns")


def mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    ret = _mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if ret < 0:
        _check(ret, f"mount {fstype or ''} {source} on {target}")


def umount2(target: str, flags: int) -> None:
    if _umount2(target.encode(), flags) < 0:
        _check(-1, f"umount2 {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_sys_pp(SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_sys_pn(SYS_SETHOSTNAME, raw, len(raw)), "sethostname")


PR_SET_NAME = 15


def set_name(name: str) -> None:
    """The process's comm name (what ps shows without arguments), <= 15 bytes."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), buf, 0, 0, 0), "prctl(PR_SET_NAME)")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret: int = _prctl(option, arg2, arg3, arg4, arg5)
    return ret if ret >= 0 else _check(ret, f"prctl({option})")


# Made at import, before any fork: making a ctypes array type (or a buffer of a
# new size) costs a few hundred us in a freshly forked child.
_CAP_HEADER = ctypes.create_string_buffer(8)
_CAP_DATA = ctypes.create_string_buffer(24)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    struct.pack_into("=Ii", _CAP_HEADER, 0, _CAP_V3, 0)
    struct.pack_into(
        "=IIIIII",
        _CAP_DATA,
        0,
        effective & 0xFFFFFFFF,
        permitted & 0xFFFFFFFF,
        inheritable & 0xFFFFFFFF,
        effective >> 32,
        permitted >> 32,
        inheritable >> 32,
    )
    hdr, data = ctypes.addressof(_CAP_HEADER), ctypes.addressof(_CAP_DATA)
    _check(_sys_vv(SYS_CAPSET, hdr, data), "capset")


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


CAP_LAST = _cap_last()  # the highest capability this kernel knows


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def prepare_seccomp(program: bytes) -> tuple[_SockFprog, ctypes.Array[ctypes.c_char]]:
    """Build the prctl argument ahead of time (keep both objects alive)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    return prog, buf


def load_seccomp(prepared: tuple[_SockFprog, ctypes.Array[ctypes.c_char]]) -> None:
    ret = _prctl_p(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prepared[0]), 0, 0)
    _check(ret, "seccomp")


def close_range_from(first: int) -> None:
    if _sys_uuu(SYS_CLOSE_RANGE, first, 0xFFFFFFFF, 0) < 0:
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
