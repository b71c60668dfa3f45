"""Removing what Gantry (or a test) created on the host, by name prefix.

Network namespaces, links (bridges, veths), nft tables and cgroups are named
with a prefix that marks their owner ("gantry" for a cluster, "gt" + a short
random tag for a test); mounts live under a state directory. These helpers
find what carries the prefix and remove it, so `gantry down` and the test
fixtures leave nothing behind even after a crash. They never touch anything
without the prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# How long `sweep` retries removing a cgroup whose killed tasks are still exiting.
CGROUP_REMOVE_TIMEOUT = 10.0


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def netns_names(prefix: str) -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def link_names(prefix: str) -> list[str]:
    out = _run(["ip", "-j", "link", "show"]).stdout
    try:
        links = json.loads(out or "[]")
    except json.JSONDecodeError:
        return []
    return [str(link["ifname"]) for link in links if str(link.get("ifname", "")).startswith(prefix)]


def nft_tables(prefix: str) -> list[tuple[str, str]]:
    out = _run(["nft", "-j", "list", "tables"]).stdout
    try:
        items = json.loads(out or "{}").get("nftables", [])
    except json.JSONDecodeError:
        return []
    return [
        (t["table"]["family"], t["table"]["name"])
        for t in items
        if "table" in t and t["table"]["name"].startswith(prefix)
    ]


def mounts_under(path: Path) -> list[str]:
    root = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].encode().decode("unicode_escape")
            if (target + "/").startswith(root):
                found.append(target)
    return found


def cgroup_dirs(prefix: str) -> list[Path]:
    """Top-level cgroups named with the prefix, in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return []
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        if not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        for candidate in (hierarchy, *(p for p in [hierarchy / "unified"] if p.is_dir())):
            with contextlib.suppress(OSError):
                found.extend(
                    p for p in candidate.iterdir() if p.is_dir() and p.name.startswith(prefix)
                )
    # v2 directly at the root (pure v2 hosts)
    with contextlib.suppress(OSError):
        found.extend(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return sorted(set(found))


def _kill_cgroup(path: Path) -> None:
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            for pid in procs.read_text().split():
                os.kill(int(pid), 9)


def _rmdir_tree(path: Path) -> None:
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _remove_cgroups(paths: list[Path], timeout: float = CGROUP_REMOVE_TIMEOUT) -> None:
    """Kill every task in the cgroups, then remove them, retrying until gone or `timeout`.

    rmdir fails (EBUSY) while killed tasks are still exiting, so a single try after
    the SIGKILLs can leave the cgroup behind; each retry kills again (a task may have
    forked before it died) and polls every 50 ms.
    """
    deadline = time.monotonic() + timeout
    remaining = list(paths)
    while True:
        for path in remaining:
            _kill_cgroup(path)
            _rmdir_tree(path)
        remaining = [p for p in remaining if p.exists()]
        if not remaining or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


@dataclass
class Sweep:
    """What was found and removed; `left` lists what could not be removed."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def sweep(prefix: str, *, state_dir: Path | None = None) -> Sweep:
    """Remove every netns, link, nft table, cgroup and mount that is ours."""
    result = Sweep()
    if state_dir is not None and state_dir.exists():
        for target in sorted(mounts_under(state_dir), key=len, reverse=True):
            _run(["umount", "-l", target])
            result.removed.append(f"mount {target}")
    for name in netns_names(prefix):
        for pid in _run(["ip", "netns", "pids", name]).stdout.split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), 9)
        _run(["ip", "netns", "delete", name])
        result.removed.append(f"netns {name}")
    for name in link_names(prefix):
        _run(["ip", "link", "delete", name])
        result.removed.append(f"link {name}")
    for family, name in nft_tables(prefix):
        _run(["nft", "delete", "table", family, name])
        result.removed.append(f"nft table {family} {name}")
    cgroups = cgroup_dirs(prefix)
    _remove_cgroups(cgroups)
    result.removed += [f"cgroup {path}" for path in cgroups]
    result.left = leftovers(prefix, state_dir=state_dir)
    return result


def leftovers(prefix: str, *, state_dir: Path | None = None) -> list[str]:
    left = [f"netns {n}" for n in netns_names(prefix)]
    left += [f"link {n}" for n in link_names(prefix)]
    left += [f"nft table {f} {n}" for f, n in nft_tables(prefix)]
    left += [f"cgroup {p}" for p in cgroup_dirs(prefix) if p.exists()]
    if state_dir is not None and state_dir.exists():
        left += [f"mount {m}" for m in mounts_under(state_dir)]
    return left
