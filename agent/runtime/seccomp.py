"""Hand-assembled classic-BPF seccomp filters from a spec's linux.seccomp.

Pure: `assemble(section)` turns the OCI seccomp section (the subset Gantry
writes: default ALLOW or ERRNO, rules with ERRNO/ALLOW/KILL actions, and
argument conditions EQ / MASKED_EQ on 32-bit values) into the bytes of a
`struct sock_filter[]` for x86_64. No libseccomp, so nothing costly to import;
the core loads the bytes with prctl(PR_SET_SECCOMP) just before execve.
Unknown syscall names are skipped, as runc does.
"""

from __future__ import annotations

import platform
import struct
from collections.abc import Mapping
from typing import Any

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_AND_K = 0x54
_RET_K = 0x06

# x86_64 syscall numbers for the names profiles use to refuse things.
SYSCALLS_X86_64: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "personality": 135,
    "uselib": 134,
    "vhangup": 153,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone": 56,
    "clone3": 435,
    "mount_setattr": 442,
}


class SeccompError(ValueError):
    """The seccomp section uses something this assembler does not support."""


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _action(rule: Mapping[str, Any], where: str) -> int:
    act = str(rule.get("action", ""))
    if act == "SCMP_ACT_ALLOW":
        return RET_ALLOW
    if act == "SCMP_ACT_ERRNO":
        return RET_ERRNO | (int(rule.get("errnoRet", 1)) & 0xFFFF)
    if act in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
        return RET_KILL_PROCESS
    raise SeccompError(f"{where}: unsupported seccomp action {act!r}")


def _arg_check(arg: Mapping[str, Any], action: int, where: str) -> list[bytes]:
    """Instructions: A = low word of the arg; compare; return action on match."""
    index = int(arg.get("index", -1))
    value = int(arg.get("value", 0))
    value_two = int(arg.get("valueTwo", 0))
    op = str(arg.get("op", ""))
    if not 0 <= index < 6:
        raise SeccompError(f"{where}: argument index {index} out of range")
    if value > 0xFFFFFFFF or value_two > 0xFFFFFFFF:
        raise SeccompError(f"{where}: only 32-bit argument values are supported")
    out = [_ins(_LD_W_ABS, 0, 0, 16 + 8 * index)]
    if op == "SCMP_CMP_MASKED_EQ":
        out.append(_ins(_AND_K, 0, 0, value))
        out.append(_ins(_JEQ_K, 0, 1, value_two))
    elif op == "SCMP_CMP_EQ":
        out.append(_ins(_JEQ_K, 0, 1, value))
    else:
        raise SeccompError(f"{where}: unsupported argument operator {op!r}")
    out.append(_ins(_RET_K, 0, 0, action))
    return out


def _rules_by_nr(section: Mapping[str, Any]) -> dict[int, list[tuple[int, list[Any]]]]:
    by_nr: dict[int, list[tuple[int, list[Any]]]] = {}
    for i, rule in enumerate(section.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        action = _action(rule, where)
        args = list(rule.get("args") or [])
        if len(args) > 1:
            raise SeccompError(f"{where}: at most one argument condition is supported")
        for name in rule.get("names") or []:
            nr = SYSCALLS_X86_64.get(str(name))
            if nr is not None:
                by_nr.setdefault(nr, []).append((action, args))
    return by_nr


def assemble(section: Mapping[str, Any], *, machine: str = platform.machine()) -> bytes:
    """The filter program (sock_filter array bytes) for an OCI seccomp section."""
    if machine != "x86_64":
        raise SeccompError(f"linux.seccomp: the core's filter supports x86_64 only, not {machine}")
    default = _action(
        {"action": section.get("defaultAction"), "errnoRet": section.get("defaultErrnoRet", 1)},
        "linux.seccomp",
    )
    prog = [
        _ins(_LD_W_ABS, 0, 0, 4),
        _ins(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _ins(_RET_K, 0, 0, RET_KILL_PROCESS),
        _ins(_LD_W_ABS, 0, 0, 0),
        _ins(_JGE_K, 0, 1, X32_SYSCALL_BIT),
        _ins(_RET_K, 0, 0, RET_ERRNO | 1),
    ]
    for nr, rules in sorted(_rules_by_nr(section).items()):
        body: list[bytes] = []
        uses_args = False
        for action, args in rules:
            if args:
                uses_args = True
                body += _arg_check(args[0], action, f"linux.seccomp (syscall {nr})")
            else:
                body.append(_ins(_RET_K, 0, 0, action))
        if uses_args:
            body.append(_ins(_LD_W_ABS, 0, 0, 0))
        if len(body) > 255:
            raise SeccompError(f"linux.seccomp: too many rules for syscall {nr}")
        prog.append(_ins(_JEQ_K, 0, len(body), nr))
        prog += body
    prog.append(_ins(_RET_K, 0, 0, default))
    if len(prog) > 4096:
        raise SeccompError("linux.seccomp: filter longer than 4096 instructions")
    return b"".join(prog)
