"""Cgroups for containers on v1, v2 and hybrid hosts.

Owns the layout detection (pure, from /proc/self/mountinfo text), the
per-controller limit files a `Resources` becomes (pure), and the small I/O
helpers that create a container's cgroup in every hierarchy, write its
limits and remove it. Joining is done by the container's own process
(writing "0" to each `cgroup.procs` path `procs_files` returns).
It never changes a hierarchy's mount options or the root cgroup's files.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.runtime.plan import Resources

# v1 hierarchies a container joins (cpuset is left out: a new cpuset cgroup
# starts with no cpus/mems and cannot take tasks until they are copied).
V1_JOIN = ("memory", "pids", "cpu", "cpuacct", "devices", "freezer", "blkio")

# Device rules for v1's devices controller, as runc and Docker set them.
DEVICE_ALLOW = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",  # null
    "c 1:5 rwm",  # zero
    "c 1:7 rwm",  # full
    "c 1:8 rwm",  # random
    "c 1:9 rwm",  # urandom
    "c 5:0 rwm",  # tty
    "c 5:1 rwm",  # console
    "c 5:2 rwm",  # ptmx
    "c 136:* rwm",  # pts
    "c 10:200 rwm",  # tun
)


class CgroupError(OSError):
    pass


@dataclass(frozen=True)
class Layout:
    """Where each v1 controller is mounted, and the cgroup2 mount if any."""

    v1: dict[str, str] = field(default_factory=dict)
    v2: str | None = None
    v2_controllers: frozenset[str] = frozenset()
    v1_mounts: tuple[str, ...] = ()  # every v1 hierarchy (runc also uses cpuset, name=systemd)

    def controller_home(self, controller: str) -> str:
        """'v1' or 'v2' or '' (absent) for a controller."""
        if controller in self.v1:
            return "v1"
        if self.v2 is not None and controller in self.v2_controllers:
            return "v2"
        return ""


def parse_mountinfo(text: str) -> tuple[dict[str, str], str | None, tuple[str, ...]]:
    """(v1 controller -> mount point, cgroup2 mount point, all v1 mounts) from mountinfo."""
    v1: dict[str, str] = {}
    v2: str | None = None
    mounts: list[str] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mnt = fields[4].replace("\\040", " ")
        fstype, super_opts = rfields[0], rfields[2]
        if fstype == "cgroup2" and v2 is None:
            v2 = mnt
        elif fstype == "cgroup":
            if mnt not in mounts:
                mounts.append(mnt)
            for opt in super_opts.split(","):
                if opt in V1_JOIN or opt == "cpuset":
                    v1.setdefault(opt, mnt)
    return v1, v2, tuple(mounts)


def detect() -> Layout:
    with open("/proc/self/mountinfo") as f:
        v1, v2, mounts = parse_mountinfo(f.read())
    ctrls: frozenset[str] = frozenset()
    if v2 is not None:
        with contextlib.suppress(OSError):
            ctrls = frozenset(Path(v2, "cgroup.controllers").read_text().split())
    return Layout(v1=v1, v2=v2, v2_controllers=ctrls, v1_mounts=mounts)


def norm_path(cgroups_path: str) -> str:
    rel = cgroups_path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise CgroupError(f"linux.cgroupsPath {cgroups_path!r} is not a usable path")
    return rel


def dirs(layout: Layout, cgroups_path: str) -> list[str]:
    """Every directory the container's cgroup has (one per hierarchy joined)."""
    rel = norm_path(cgroups_path)
    seen: list[str] = []
    for ctrl in V1_JOIN:
        if ctrl in layout.v1:
            d = os.path.join(layout.v1[ctrl], rel)
            if d not in seen:
                seen.append(d)
    if layout.v2 is not None and (uses_v2(layout) or not seen):
        seen.append(os.path.join(layout.v2, rel))
    return seen


def uses_v2(layout: Layout) -> bool:
    """Does any resource controller live in cgroup2? (Not on a hybrid host.)"""
    return any(layout.controller_home(c) == "v2" for c in ("memory", "pids", "cpu"))


def rename(layout: Layout, old_path: str, new_path: str) -> None:
    """Rename a cgroup in every hierarchy (v1 only: cgroup2 refuses rename)."""
    old, new = norm_path(old_path), norm_path(new_path)
    if os.path.dirname(old) != os.path.dirname(new):
        raise CgroupError(f"cgroup rename {old_path} -> {new_path}: parents differ")
    for d in dirs(layout, old_path):
        os.rename(d, d[: -len(old)] + new)


def limit_files(layout: Layout, cgroups_path: str, res: Resources) -> list[tuple[str, str]]:
    """(file, value) pairs to write, in order (pure): resource limits, then devices."""
    return resource_files(layout, cgroups_path, res) + device_files(layout, cgroups_path)


def resource_files(layout: Layout, cgroups_path: str, res: Resources) -> list[tuple[str, str]]:
    """The memory, pids and cpu limit files for `res` (pure); a trailing '?' marks optional."""
    rel = norm_path(cgroups_path)
    out: list[tuple[str, str]] = []

    def base(ctrl: str) -> str | None:
        home = layout.controller_home(ctrl)
        if home == "v1":
            return os.path.join(layout.v1[ctrl], rel)
        if home == "v2" and layout.v2 is not None:
            return os.path.join(layout.v2, rel)
        return None

    mem = base("memory")
    if mem and res.memory_bytes is not None:
        if layout.controller_home("memory") == "v1":
            out.append((f"{mem}/memory.limit_in_bytes", str(res.memory_bytes)))
            if res.memory_swap_bytes is not None:
                out.append((f"{mem}/memory.memsw.limit_in_bytes?", str(res.memory_swap_bytes)))
        else:
            out.append((f"{mem}/memory.max", str(res.memory_bytes)))
            if res.memory_swap_bytes is not None:
                swap = max(0, res.memory_swap_bytes - res.memory_bytes)
                out.append((f"{mem}/memory.swap.max?", str(swap)))
    pids = base("pids")
    if pids and res.pids_limit is not None:
        out.append((f"{pids}/pids.max", str(res.pids_limit) if res.pids_limit > 0 else "max"))
    cpu = base("cpu")
    if cpu:
        out.extend(_cpu_files(layout, cpu, res))
    return out


def _cpu_files(layout: Layout, cpu: str, res: Resources) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if layout.controller_home("cpu") == "v1":
        if res.cpu_quota_us is not None:
            out.append((f"{cpu}/cpu.cfs_period_us", str(res.cpu_period_us or 100_000)))
            out.append((f"{cpu}/cpu.cfs_quota_us", str(res.cpu_quota_us)))
        if res.cpu_shares is not None:
            out.append((f"{cpu}/cpu.shares", str(res.cpu_shares)))
    else:
        if res.cpu_quota_us is not None:
            out.append((f"{cpu}/cpu.max", f"{res.cpu_quota_us} {res.cpu_period_us or 100_000}"))
        if res.cpu_shares is not None:
            weight = 1 + ((max(2, res.cpu_shares) - 2) * 9999) // 262142
            out.append((f"{cpu}/cpu.weight", str(weight)))
    return out


def device_files(layout: Layout, cgroups_path: str) -> list[tuple[str, str]]:
    """v1's device rules (pure): the same for every container."""
    if "devices" not in layout.v1:
        return []
    dev = os.path.join(layout.v1["devices"], norm_path(cgroups_path))
    return [(f"{dev}/devices.deny", "a")] + [(f"{dev}/devices.allow", r) for r in DEVICE_ALLOW]


def _enable_v2(layout: Layout, rel: str) -> None:
    """On v2, turn on our controllers in the ancestors we own (never the root)."""
    if layout.v2 is None:
        return
    wanted = [c for c in ("memory", "pids", "cpu") if layout.controller_home(c) == "v2"]
    if not wanted:
        return
    parts = rel.split("/")
    for i in range(1, len(parts)):
        ctl = Path(layout.v2, *parts[:i], "cgroup.subtree_control")
        with contextlib.suppress(OSError):
            ctl.write_text(" ".join("+" + c for c in wanted))


def create(layout: Layout, cgroups_path: str, res: Resources) -> list[str]:
    """Make the cgroup in every hierarchy and write its limits.

    Returns the `cgroup.procs` files the container's process must write "0" to.
    """
    rel = norm_path(cgroups_path)
    made = dirs(layout, cgroups_path)
    for d in made:
        os.makedirs(d, exist_ok=True)
    _enable_v2(layout, rel)
    write_files(limit_files(layout, cgroups_path, res))
    return [os.path.join(d, "cgroup.procs") for d in made]


def write_files(files: list[tuple[str, str]]) -> None:
    """Write each (file, value); CgroupError unless the file is marked optional ('?')."""
    for path, value in files:
        optional = path.endswith("?")
        path = path.rstrip("?")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            if not optional:
                raise CgroupError(
                    f"cgroup: cannot write {value!r} to {path}: {e.strerror}"
                ) from None


def pids_in(layout: Layout, cgroups_path: str) -> list[int]:
    out: set[int] = set()
    for d in dirs(layout, cgroups_path):
        with contextlib.suppress(OSError, ValueError):
            out.update(int(p) for p in Path(d, "cgroup.procs").read_text().split())
    return sorted(out)


def remove(layout: Layout, cgroups_path: str, *, timeout: float = 5.0) -> list[str]:
    """Remove the cgroup everywhere (waiting for exiting tasks); returns what is left."""
    rel = norm_path(cgroups_path)
    deadline = time.monotonic() + timeout
    left = []
    every = dirs(layout, cgroups_path)
    every += [os.path.join(m, rel) for m in layout.v1_mounts if os.path.join(m, rel) not in every]
    for d in every:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    left.append(d)
                    break
                time.sleep(0.01)
        # Parents we made (e.g. /<prefix>): remove if now empty.
        parent = os.path.dirname(d)
        for _ in range(rel.count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(parent)
            parent = os.path.dirname(parent)
    return left
