"""The container's view of the file system, set up from inside its mount namespace.

Owns the mount sequence: make mounts private, mount the root (overlay or
bind), the plan's mounts (populating a tmpfs /dev with the device nodes),
pivot_root, masked and read-only paths, a read-only root. Also the kernel
file systems a pool sandbox stages before any request (`stage`): /proc with
the masked and read-only paths, /dev with devpts, shm and mqueue, and a
read-only /sys, mounted under a tmpfs over the sandbox's own /proc (the
host's procfs, which nothing there reads); a request whose plan begins with
exactly the default mounts, has the default masked and read-only paths and
makes its own network namespace moves them into its root (MS_MOVE), any
other is set up the usual way. Nothing it mounts propagates to the host, and
the staging vanishes with the old root.

Runs between clone/fork and exec in a child of the single-threaded zygote:
no threads, no logging, no lazy imports (nothing can be imported after
pivot_root).
"""

from __future__ import annotations

import contextlib
import os
import stat

from agent.runtime import linux
from agent.runtime.plan import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MountPlan,
    Plan,
    default_mount_plans,
)
from agent.runtime.spec import MASKED_PATHS, READONLY_PATHS

_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
MS_MOVE = 8192
STAGE = "/proc"  # in a pool sandbox's mount namespace only
STAGED_MOUNTS: tuple[MountPlan, ...] = tuple(default_mount_plans())
_STAGED_TOPS = ("/proc", "/dev", "/sys")  # the mounts moved, each with its submounts


class SetupError(Exception):
    pass


def _inside(root: str, dest: str) -> str:
    target = os.path.join(root, dest.lstrip("/"))
    real = os.path.realpath(target)
    if real != root and not real.startswith(root + "/"):
        raise SetupError(f"mount destination {dest} escapes the root file system")
    return real


def _make_target(target: str, source_is_file: bool) -> None:
    if os.path.exists(target):
        return
    if source_is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    else:
        os.makedirs(target, exist_ok=True)


def _populate_dev(dev: str) -> None:
    for name, major, minor in _DEVICES:
        path = f"{dev}/{name}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in _DEV_LINKS:
        with contextlib.suppress(FileExistsError):
            os.symlink(target, f"{dev}/{name}")


def _do_mounts(root: str, mounts: list[MountPlan] | tuple[MountPlan, ...]) -> None:
    for m in mounts:
        target = _inside(root, m.destination)
        if m.flags & MS_BIND:
            src = m.source
            _make_target(target, not os.path.isdir(src))
            linux.mount(src, target, None, m.flags & (MS_BIND | MS_REC))
            extra = m.flags & ~(MS_BIND | MS_REC)
            if extra:
                linux.mount(src, target, None, MS_BIND | MS_REMOUNT | extra)
            continue
        _make_target(target, False)
        linux.mount(m.source, target, m.type, m.flags, m.data or None)
        if m.destination == "/dev" and m.type == "tmpfs":
            _populate_dev(target)


def _mask_and_protect(masked: list[str], readonly: list[str], base: str = "") -> None:
    """Mask and protect paths of the root at `base` ("" once pivoted)."""
    for p in (base + q for q in masked):
        if not os.path.exists(p):
            continue
        if os.path.isdir(p):
            linux.mount("tmpfs", p, "tmpfs", MS_RDONLY)
        else:
            linux.mount(f"{base}/dev/null", p, None, MS_BIND)
    for p in (base + q for q in readonly):
        if not os.path.exists(p):
            continue
        linux.mount(p, p, None, MS_BIND | MS_REC)
        linux.mount(
            p, p, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID | MS_NODEV | MS_NOEXEC
        )


def make_private() -> None:
    """Nothing mounted from here on propagates to the host (and pivot_root works)."""
    linux.mount("none", "/", None, MS_REC | MS_PRIVATE)


def stage() -> bool:
    """In a pool sandbox (mounts private): mount the default kernel file systems
    under STAGE. False, with nothing left staged, if any step fails."""
    try:
        linux.mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=700")
    except OSError:
        return False
    try:
        _do_mounts(STAGE, STAGED_MOUNTS)
        _mask_and_protect(list(MASKED_PATHS), list(READONLY_PATHS), base=STAGE)
    except (OSError, SetupError):
        linux.umount2(STAGE, linux.MNT_DETACH)
        return False
    return True


def fits_staged(plan: Plan) -> bool:
    """Does this plan want exactly the staged mounts, paths and network? (pure)"""
    n = len(STAGED_MOUNTS)
    return (
        tuple(plan.mounts[:n]) == STAGED_MOUNTS
        and plan.masked_paths == list(MASKED_PATHS)
        and plan.readonly_paths == list(READONLY_PATHS)
        and not plan.netns_path  # the staged /sys shows the sandbox's own network
    )


def _others_clear(root: str, plan: Plan) -> bool:
    """No other mount lands in /proc or /sys (where the masks must come last)."""
    kernel = tuple(os.path.join(root, d) for d in ("proc", "sys"))
    for m in plan.mounts[len(STAGED_MOUNTS) :]:
        t = _inside(root, m.destination)
        if t in kernel or t.startswith(tuple(k + "/" for k in kernel)):
            return False
    return True


def _use_staged(root: str, plan: Plan) -> bool:
    """Move the staged mounts into the root if the plan fits them. The staging
    goes with the old root at pivot_root; before a bind mount (whose source may
    be under the host's /proc) it is unmounted at once."""
    use = fits_staged(plan) and _others_clear(root, plan)
    if use:
        for top in _STAGED_TOPS:
            target = _inside(root, top)
            _make_target(target, False)
            linux.mount(STAGE + top, target, None, MS_MOVE)
    if any(m.flags & MS_BIND for m in plan.mounts):
        linux.umount2(STAGE, linux.MNT_DETACH)
    return use


def setup_root(plan: Plan, *, private: bool = False, staged: bool = False) -> None:
    """Mount the container's root and everything under it, then pivot into it.

    `staged`: the mount namespace has the staged kernel file systems (a pool
    sandbox); they are used if the plan fits them.
    """
    root = os.path.realpath(plan.rootfs)
    if not private:
        make_private()
    if plan.overlay_lower:
        opts = f"lowerdir={':'.join(plan.overlay_lower)}"
        if plan.overlay_upper:
            opts += f",upperdir={plan.overlay_upper},workdir={plan.overlay_work}"
        linux.mount("overlay", root, "overlay", 0, opts)
    else:
        linux.mount(root, root, None, MS_BIND | MS_REC)
    use_staged = staged and _use_staged(root, plan)
    _do_mounts(root, plan.mounts[len(STAGED_MOUNTS) :] if use_staged else plan.mounts)
    os.chdir(root)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    if not use_staged:
        _mask_and_protect(plan.masked_paths, plan.readonly_paths)
    if plan.readonly_root:
        linux.mount("/", "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
