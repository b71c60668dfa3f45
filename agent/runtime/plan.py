"""From a bundle's config.json to the plain-data plan the core executes.

Pure: `parse(bundle, spec)` validates the OCI runtime spec and returns a
`Plan` (JSON-serialisable, sent to the zygote), or raises `BundleError`
naming the field at fault. Also the tables that turn names into numbers
(capabilities, rlimits, mount options). Nothing here touches the system.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.runtime import seccomp
from agent.runtime.base import BundleError
from agent.runtime.spec import ANN_LOWER, ANN_UPPER, ANN_WORK, default_mounts

CAPS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
CAP_LAST = 40

RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24

_FLAG_OPTS: dict[str, tuple[bool, int]] = {
    "ro": (True, MS_RDONLY),
    "rw": (False, MS_RDONLY),
    "nosuid": (True, MS_NOSUID),
    "suid": (False, MS_NOSUID),
    "nodev": (True, MS_NODEV),
    "dev": (False, MS_NODEV),
    "noexec": (True, MS_NOEXEC),
    "exec": (False, MS_NOEXEC),
    "noatime": (True, MS_NOATIME),
    "nodiratime": (True, MS_NODIRATIME),
    "strictatime": (True, MS_STRICTATIME),
    "bind": (True, MS_BIND),
    "rbind": (True, MS_BIND | MS_REC),
}
_PROPAGATION = {"private", "rprivate", "slave", "rslave", "shared", "rshared"}


@dataclass(frozen=True)
class MountPlan:
    destination: str
    type: str
    source: str
    flags: int
    data: str


@dataclass(frozen=True)
class Resources:
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None


@dataclass(frozen=True)
class Plan:
    """Everything the zygote needs to make one container; plain JSON data."""

    rootfs: str
    readonly_root: bool
    overlay_lower: list[str]
    overlay_upper: str
    overlay_work: str
    args: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    additional_gids: list[int]
    hostname: str
    new_netns: bool
    netns_path: str
    mounts: list[MountPlan]
    masked_paths: list[str]
    readonly_paths: list[str]
    cap_bounding: int
    cap_effective: int
    cap_permitted: int
    cap_inheritable: int
    cap_ambient: int
    rlimits: list[tuple[int, int, int]]
    no_new_privs: bool
    seccomp_hex: str  # assembled BPF program, hex
    cgroups_path: str
    resources: Resources = field(default_factory=Resources)

    def to_json(self) -> dict[str, Any]:
        # Shallow, not `asdict` (a deep copy): this is on every request's path.
        d = dict(self.__dict__)
        d["mounts"] = [dict(m.__dict__) for m in self.mounts]
        d["resources"] = dict(self.resources.__dict__)
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Plan:
        d = dict(d)
        d["mounts"] = [MountPlan(**m) for m in d["mounts"]]
        d["resources"] = Resources(**d["resources"])
        d["rlimits"] = [tuple(r) for r in d["rlimits"]]
        return Plan(**d)


def mount_flags(options: list[str]) -> tuple[int, str]:
    """OCI mount options -> (MS_* flags, data string)."""
    flags = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAG_OPTS:
            clear, bit = _FLAG_OPTS[opt]
            flags = flags | bit if clear else flags & ~bit
        elif opt in _PROPAGATION:
            continue
        else:
            data.append(opt)
    return flags, ",".join(data)


def _caps(names: Any, where: str) -> int:
    bits = 0
    for name in names or []:
        if name not in CAPS:
            raise BundleError(f"{where}: unknown capability {name!r}")
        bits |= 1 << CAPS[name]
    return bits


def _int_or_none(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise BundleError(f"{where}: expected an integer, got {v!r}")
    return v


def _resources(res: Mapping[str, Any]) -> Resources:
    mem = res.get("memory") or {}
    cpu = res.get("cpu") or {}
    pids = res.get("pids") or {}
    return Resources(
        memory_bytes=_int_or_none(mem.get("limit"), "linux.resources.memory.limit"),
        memory_swap_bytes=_int_or_none(mem.get("swap"), "linux.resources.memory.swap"),
        cpu_quota_us=_int_or_none(cpu.get("quota"), "linux.resources.cpu.quota"),
        cpu_period_us=_int_or_none(cpu.get("period"), "linux.resources.cpu.period"),
        cpu_shares=_int_or_none(cpu.get("shares"), "linux.resources.cpu.shares"),
        pids_limit=_int_or_none(pids.get("limit"), "linux.resources.pids.limit"),
    )


def _namespaces(linux: Mapping[str, Any]) -> tuple[bool, str]:
    types = {}
    for i, ns in enumerate(linux.get("namespaces") or []):
        if not isinstance(ns, Mapping) or "type" not in ns:
            raise BundleError(f"config.json: linux.namespaces[{i}] needs a type")
        types[ns["type"]] = str(ns.get("path") or "")
    for needed in ("pid", "mount"):
        if needed not in types or types[needed]:
            raise BundleError(f"config.json: linux.namespaces needs a new {needed!r} namespace")
    if "network" not in types:
        raise BundleError(
            "config.json: linux.namespaces needs a 'network' namespace (new or by path)"
        )
    path = types["network"]
    return (not path), path


def _mounts(spec: Mapping[str, Any]) -> list[MountPlan]:
    out = []
    for i, m in enumerate(spec.get("mounts") or []):
        dest = m.get("destination") if isinstance(m, Mapping) else None
        if not isinstance(dest, str) or not dest.startswith("/") or ".." in dest.split("/"):
            raise BundleError(f"config.json: mounts[{i}].destination must be an absolute path")
        flags, data = mount_flags(list(m.get("options") or []))
        mtype = str(m.get("type") or ("bind" if flags & MS_BIND else ""))
        if mtype == "bind":
            flags |= MS_BIND
        out.append(MountPlan(dest, mtype, str(m.get("source") or mtype), flags, data))
    return out


def default_mount_plans() -> list[MountPlan]:
    """The mounts every default spec starts with (spec.default_mounts), planned."""
    return _mounts({"mounts": default_mounts()})


def _rootfs(bundle: Path, spec: Mapping[str, Any]) -> tuple[str, bool]:
    root = spec.get("root") or {}
    path = root.get("path") if isinstance(root, Mapping) else None
    if not isinstance(path, str) or not path:
        raise BundleError(f"{bundle}/config.json: root.path is missing")
    full = Path(path) if os.path.isabs(path) else bundle / path
    return str(full), bool(root.get("readonly", False))


_BPF_CACHE: dict[str, str] = {}


def _bpf_hex(section: Any) -> str:
    """The assembled filter (hex), memoised by the section's canonical JSON."""
    key = json.dumps(section, sort_keys=True)
    hexprog = _BPF_CACHE.get(key)
    if hexprog is None:
        hexprog = seccomp.assemble(section).hex()
        if len(_BPF_CACHE) >= 32:
            _BPF_CACHE.clear()
        _BPF_CACHE[key] = hexprog
    return hexprog


def parse(bundle: Path, spec: Mapping[str, Any]) -> Plan:
    """Validate config.json and turn it into a Plan; BundleError on bad input."""
    proc = spec.get("process")
    if not isinstance(proc, Mapping):
        raise BundleError(f"{bundle}/config.json: process is missing")
    args = proc.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise BundleError(f"{bundle}/config.json: process.args must be a non-empty list of strings")
    rootfs, ro = _rootfs(bundle, spec)
    linux = spec.get("linux") or {}
    new_netns, netns_path = _namespaces(linux)
    caps = proc.get("capabilities") or {}
    user = proc.get("user") or {}
    ann = spec.get("annotations") or {}
    rlimits = []
    for i, r in enumerate(proc.get("rlimits") or []):
        if r.get("type") not in RLIMITS:
            raise BundleError(
                f"{bundle}/config.json: process.rlimits[{i}].type {r.get('type')!r} is unknown"
            )
        rlimits.append((RLIMITS[r["type"]], int(r.get("soft", 0)), int(r.get("hard", 0))))
    try:
        bpf = _bpf_hex(linux["seccomp"]) if linux.get("seccomp") else ""
    except seccomp.SeccompError as e:
        raise BundleError(f"{bundle}/config.json: {e}") from None
    lower = [p for p in str(ann.get(ANN_LOWER, "")).split(":") if p]
    return Plan(
        rootfs=rootfs,
        readonly_root=ro,
        overlay_lower=lower,
        overlay_upper=str(ann.get(ANN_UPPER, "")),
        overlay_work=str(ann.get(ANN_WORK, "")),
        args=list(args),
        env=[str(e) for e in proc.get("env") or []],
        cwd=str(proc.get("cwd") or "/"),
        uid=int(user.get("uid", 0)),
        gid=int(user.get("gid", 0)),
        additional_gids=[int(g) for g in user.get("additionalGids") or []],
        hostname=str(spec.get("hostname") or ""),
        new_netns=new_netns,
        netns_path=netns_path,
        mounts=_mounts(spec),
        masked_paths=[str(p) for p in linux.get("maskedPaths") or []],
        readonly_paths=[str(p) for p in linux.get("readonlyPaths") or []],
        cap_bounding=_caps(caps.get("bounding"), "process.capabilities.bounding"),
        cap_effective=_caps(caps.get("effective"), "process.capabilities.effective"),
        cap_permitted=_caps(caps.get("permitted"), "process.capabilities.permitted"),
        cap_inheritable=_caps(caps.get("inheritable"), "process.capabilities.inheritable"),
        cap_ambient=_caps(caps.get("ambient"), "process.capabilities.ambient"),
        rlimits=rlimits,
        no_new_privs=bool(proc.get("noNewPrivileges", False)),
        seccomp_hex=bpf,
        cgroups_path=str(linux.get("cgroupsPath") or ""),
        resources=_resources(linux.get("resources") or {}),
    )
