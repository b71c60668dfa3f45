"""Building OCI runtime-spec bundles (config.json) the Docker way.

Owns the pure construction of a config.json dict from a `SpecOptions`
(process, hostname, mounts, masked/read-only paths, namespaces, resources,
cgroups path, seccomp, the overlay-root annotations) and `write_bundle`,
the one function here that touches the disk. The same dict runs under the
core and under runc, which is what lets tests compare the two.

The root file system is described either by the bundle's own `rootfs`
directory or, for image layers, by three annotations: `gantry.overlay.lower`
(lower layer dirs, topmost first, joined by ':'), `gantry.overlay.upper` and
`gantry.overlay.work`. Both runtimes mount the overlay at root.path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_VERSION = "1.0.2"

ANN_LOWER = "gantry.overlay.lower"
ANN_UPPER = "gantry.overlay.upper"
ANN_WORK = "gantry.overlay.work"

# Docker's default capability set: 0x00000000a80425fb.
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# Syscalls refused with EPERM (a superset of what Docker's default profile
# refuses that a container could otherwise reach with its 14 capabilities).
DENIED_SYSCALLS: tuple[str, ...] = (
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "reboot",
    "bpf",
    "ptrace",
    "keyctl",
    "add_key",
    "request_key",
    "swapon",
    "swapoff",
    "acct",
    "open_by_handle_at",
    "name_to_handle_at",
    "perf_event_open",
    "userfaultfd",
    "iopl",
    "ioperm",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "lookup_dcookie",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "uselib",
    "vhangup",
    "nfsservctl",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)

# clone() flags that would make new namespaces; refused like Docker does.
CLONE_NS_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

DEFAULT_ENV: tuple[str, ...] = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)


@dataclass(frozen=True)
class Rlimit:
    type: str  # "RLIMIT_NOFILE"
    soft: int
    hard: int


@dataclass(frozen=True)
class Overlay:
    """The root is an overlay: lower layer dirs (topmost first) + upper/work."""

    lower: tuple[str, ...]
    upper: str
    work: str


@dataclass(frozen=True)
class SpecOptions:
    args: tuple[str, ...]
    env: tuple[str, ...] = DEFAULT_ENV
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    hostname: str = "container"
    rootfs: str = "rootfs"
    readonly_root: bool = False
    overlay: Overlay | None = None
    netns_path: str | None = None  # None: a new network namespace
    memory_bytes: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int = 100_000
    cpu_shares: int | None = None
    pids_limit: int | None = None
    cgroups_path: str | None = None  # "/<prefix>/<id>"
    rlimits: tuple[Rlimit, ...] = (Rlimit("RLIMIT_NOFILE", 1024, 1024),)
    capabilities: tuple[str, ...] = DEFAULT_CAPS
    seccomp: bool = True
    bind_mounts: tuple[tuple[str, str, bool], ...] = ()  # (host src, dest, readonly)
    annotations: Mapping[str, str] = field(default_factory=dict)


def cpus_to_quota(cpus: float, period_us: int = 100_000) -> int:
    """0.5 CPU -> 50000 us per 100000 us period."""
    return max(1000, int(round(cpus * period_us)))


def default_mounts() -> list[dict[str, Any]]:
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]


def seccomp_section() -> dict[str, Any]:
    """Default-allow profile refusing DENIED_SYSCALLS and namespace clones."""
    syscalls: list[dict[str, Any]] = [
        {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]
    for flag in CLONE_NS_FLAGS:
        syscalls.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }


def _resources(o: SpecOptions) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if o.memory_bytes is not None:
        res["memory"] = {"limit": o.memory_bytes, "swap": o.memory_bytes}
    cpu: dict[str, Any] = {}
    if o.cpu_quota_us is not None:
        cpu["quota"] = o.cpu_quota_us
        cpu["period"] = o.cpu_period_us
    if o.cpu_shares is not None:
        cpu["shares"] = o.cpu_shares
    if cpu:
        res["cpu"] = cpu
    if o.pids_limit is not None:
        res["pids"] = {"limit": o.pids_limit}
    return res


def _annotations(o: SpecOptions) -> dict[str, str]:
    ann = dict(o.annotations)
    if o.overlay is not None:
        ann[ANN_LOWER] = ":".join(o.overlay.lower)
        ann[ANN_UPPER] = o.overlay.upper
        ann[ANN_WORK] = o.overlay.work
    return ann


def build_spec(o: SpecOptions) -> dict[str, Any]:
    """The config.json dict for these options (pure)."""
    if not o.args:
        raise ValueError("spec: process.args must not be empty")
    caps = list(o.capabilities)
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "mount", "uts", "ipc")]
    namespaces.append(
        {"type": "network", "path": o.netns_path} if o.netns_path else {"type": "network"}
    )
    mounts = default_mounts()
    for src, dest, ro in o.bind_mounts:
        mounts.append(
            {
                "destination": dest,
                "type": "bind",
                "source": src,
                "options": ["rbind", "rprivate"] + (["ro"] if ro else []),
            }
        )
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": _resources(o),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if o.cgroups_path:
        linux["cgroupsPath"] = o.cgroups_path
    if o.seccomp:
        linux["seccomp"] = seccomp_section()
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": o.uid, "gid": o.gid, "additionalGids": list(o.additional_gids)},
            "args": list(o.args),
            "env": list(o.env),
            "cwd": o.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": r.type, "soft": r.soft, "hard": r.hard} for r in o.rlimits],
            "noNewPrivileges": True,
        },
        "root": {"path": o.rootfs, "readonly": o.readonly_root},
        "hostname": o.hostname,
        "mounts": mounts,
        "annotations": _annotations(o),
        "linux": linux,
    }


def write_bundle(bundle: Path, spec: Mapping[str, Any]) -> Path:
    """Write config.json into `bundle` (created if missing) and make the rootfs dir.

    Returns the bundle path. The write is atomic (tmp file + rename).
    """
    bundle.mkdir(parents=True, exist_ok=True)
    root = Path(str(spec.get("root", {}).get("path", "rootfs")))
    rootfs = root if root.is_absolute() else bundle / root
    rootfs.mkdir(parents=True, exist_ok=True)
    tmp = bundle / "config.json.tmp"
    tmp.write_text(json.dumps(spec, indent=1))
    os.replace(tmp, bundle / "config.json")
    return bundle


def with_args(spec: Mapping[str, Any], args: Sequence[str]) -> dict[str, Any]:
    """A copy of `spec` running other args (handy for tests and benches)."""
    out = json.loads(json.dumps(spec))
    out["process"]["args"] = list(args)
    return dict(out)
