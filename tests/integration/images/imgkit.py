"""Image test helpers: store snapshots, read-only overlay mounts, one-line errors."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every file, dir and link under a store (tmp/ and the lock aside), with content hashes."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts[:1] in (("tmp",), ("runc",)):
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(rel_dir / name)
            if rel in (".lock", "tmp", "runc"):
                continue
            if path.is_file() and not path.is_symlink():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "link" if path.is_symlink() else "dir"
    return out


@contextlib.contextmanager
def overlay(layer_dirs: tuple[Path, ...], work: Path) -> Iterator[Path]:
    """Mount the layers (lowest first) read-only as one overlay; yields the mount point."""
    merged = work / "merged"
    merged.mkdir(parents=True)
    lower = ":".join(str(p) for p in reversed(layer_dirs))
    if len(layer_dirs) == 1:
        (work / "empty").mkdir()
        lower += ":" + str(work / "empty")  # overlay wants two lowers when there is no upper
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged)], check=True
    )
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=False)


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg
