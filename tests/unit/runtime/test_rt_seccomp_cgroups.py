"""Pure: the seccomp BPF program (run in a small classic-BPF interpreter) and cgroup layouts."""

from __future__ import annotations

import struct

import pytest

from agent.runtime import cgroups, seccomp
from agent.runtime.plan import Resources
from agent.runtime.spec import seccomp_section

ALLOW, EPERM, ENOSYS = seccomp.RET_ALLOW, seccomp.RET_ERRNO | 1, seccomp.RET_ERRNO | 38


def run_bpf(
    prog: bytes, nr: int, arch: int = seccomp.AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()
) -> int:
    """A classic-BPF interpreter for the opcodes the assembler emits."""
    full = list(args) + [0] * (6 - len(args))
    data = struct.pack("=iIQ6Q", nr, arch, 0, *full)
    ins = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    pc, a = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:
            a &= k
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x35:
            pc += jt if a >= k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


PROG = seccomp.assemble(seccomp_section())
NR = seccomp.SYSCALLS_X86_64


@pytest.mark.parametrize("name", ["mount", "umount2", "unshare", "setns", "pivot_root", "kexec_load", "init_module",
                                  "finit_module", "delete_module", "reboot", "bpf", "ptrace", "keyctl", "add_key",
                                  "request_key", "swapon", "swapoff", "acct", "open_by_handle_at"])  # fmt: skip
def test_refused_with_eperm(name: str) -> None:
    assert run_bpf(PROG, NR[name]) == EPERM


@pytest.mark.parametrize(
    "nr", [0, 1, 2, 3, 9, 39, 59, 60, 61, 231]
)  # read write open close mmap getpid execve exit wait4 exit_group
def test_ordinary_calls_allowed(nr: int) -> None:
    assert run_bpf(PROG, nr) == ALLOW


def test_clone_with_namespace_flags_refused_plain_fork_allowed() -> None:
    assert run_bpf(PROG, NR["clone"], args=(0x01200011,)) == ALLOW  # glibc fork flags
    assert run_bpf(PROG, NR["clone"], args=(0x00020000 | 17,)) == EPERM  # CLONE_NEWNS
    assert run_bpf(PROG, NR["clone"], args=(0x10000000,)) == EPERM  # CLONE_NEWUSER
    assert run_bpf(PROG, NR["clone3"]) == ENOSYS


def test_other_architectures_and_x32_refused() -> None:
    assert run_bpf(PROG, 1, arch=0x40000003) == seccomp.RET_KILL_PROCESS  # i386
    assert run_bpf(PROG, 0x40000000 + 1) == EPERM


def test_unsupported_operator_is_named() -> None:
    bad = {"defaultAction": "SCMP_ACT_ALLOW",
           "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_GT"}]}]}  # fmt: skip
    with pytest.raises(seccomp.SeccompError, match="SCMP_CMP_GT"):
        seccomp.assemble(bad)


HYBRID = """\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw shared:16 - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw shared:17 - cgroup cgroup rw,cpu,cpuacct
"""
PURE_V2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_hybrid_layout_uses_v1_files() -> None:
    v1, v2, mounts = cgroups.parse_mountinfo(HYBRID)
    assert v1 == {"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
                  "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct"}  # fmt: skip
    assert v2 == "/sys/fs/cgroup/unified" and "/sys/fs/cgroup/systemd" in mounts
    layout = cgroups.Layout(v1=v1, v2=v2, v2_controllers=frozenset(), v1_mounts=mounts)
    res = Resources(
        memory_bytes=1 << 20,
        memory_swap_bytes=1 << 20,
        pids_limit=5,
        cpu_quota_us=50_000,
        cpu_period_us=100_000,
    )
    files = dict(cgroups.limit_files(layout, "/gt/c", res))
    assert files["/sys/fs/cgroup/memory/gt/c/memory.limit_in_bytes"] == str(1 << 20)
    assert files["/sys/fs/cgroup/pids/gt/c/pids.max"] == "5"
    assert files["/sys/fs/cgroup/cpu,cpuacct/gt/c/cpu.cfs_quota_us"] == "50000"
    assert cgroups.dirs(layout, "/gt/c").count("/sys/fs/cgroup/cpu,cpuacct/gt/c") == 1


def test_pure_v2_layout_uses_v2_files() -> None:
    v1, v2, _ = cgroups.parse_mountinfo(PURE_V2)
    layout = cgroups.Layout(v1=v1, v2=v2, v2_controllers=frozenset({"memory", "pids", "cpu"}))
    res = Resources(
        memory_bytes=1 << 20,
        memory_swap_bytes=1 << 20,
        pids_limit=5,
        cpu_quota_us=50_000,
        cpu_shares=1024,
    )
    files = dict(cgroups.limit_files(layout, "gt/c", res))
    assert files["/sys/fs/cgroup/gt/c/memory.max"] == str(1 << 20)
    assert files["/sys/fs/cgroup/gt/c/memory.swap.max?"] == "0"
    assert files["/sys/fs/cgroup/gt/c/pids.max"] == "5"
    assert files["/sys/fs/cgroup/gt/c/cpu.max"] == "50000 100000"
    assert files["/sys/fs/cgroup/gt/c/cpu.weight"] == "39"
    assert cgroups.dirs(layout, "/gt/c") == ["/sys/fs/cgroup/gt/c"]


@pytest.mark.parametrize("bad", ["", "/", "/gt/../etc"])
def test_bad_cgroup_paths(bad: str) -> None:
    with pytest.raises(cgroups.CgroupError):
        cgroups.norm_path(bad)


def test_other_machines_are_refused_not_silently_killed() -> None:
    with pytest.raises(seccomp.SeccompError, match="x86_64 only, not aarch64"):
        seccomp.assemble(seccomp_section(), machine="aarch64")
