"""Container logs: one size-capped file per replica, tail and follow.

The runtime writes a container's stdout and stderr straight into
`<dir>/<replica>.log` (opened for append, so a container keeps writing while
the agent restarts). The agent caps the file by copy-and-truncate: when it
grows past `max_bytes`, its content moves to `<replica>.log.1` (the one old
file kept) and the live file is truncated to zero; writers opened with
O_APPEND go on at the new end. Restarts of the same replica append to the
same file. Reading never blocks the event loop for long: tails read at most
the last `max_bytes` of each file.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


class LogError(Exception):
    """A log request that cannot be answered (names the replica)."""


class LogStore:
    def __init__(self, directory: Path, *, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, replica: str) -> Path:
        if not _SAFE.match(replica):
            raise LogError(f"replica name {replica!r}: not a valid name")
        return self.directory / f"{replica}.log"

    def old_path(self, replica: str) -> Path:
        return self.directory / f"{replica}.log.1"

    def prepare(self, replica: str) -> Path:
        """The file a new container of `replica` writes to (created empty if absent)."""
        path = self.path(replica)
        path.touch(exist_ok=True)
        return path

    def remove(self, replica: str) -> None:
        for p in (self.path(replica), self.old_path(replica)):
            p.unlink(missing_ok=True)

    def replicas(self) -> list[str]:
        return sorted(p.name[: -len(".log")] for p in self.directory.glob("*.log"))

    # ---- capping ---------------------------------------------------------------

    def rotate_if_needed(self, replica: str) -> bool:
        """Copy-and-truncate when the live file passed the cap; True when rotated."""
        path = self.path(replica)
        try:
            if path.stat().st_size <= self.max_bytes:
                return False
        except FileNotFoundError:
            return False
        tmp = self.old_path(replica).with_suffix(".1.tmp")
        shutil.copyfile(path, tmp)
        os.truncate(path, 0)
        os.replace(tmp, self.old_path(replica))
        return True

    def rotate_all(self) -> list[str]:
        return [r for r in self.replicas() if self.rotate_if_needed(r)]

    # ---- reading ---------------------------------------------------------------

    def tail(self, replica: str, lines: int | None) -> bytes:
        """The last `lines` lines (all when None) of the old and live files."""
        path = self.path(replica)
        if not path.exists() and not self.old_path(replica).exists():
            raise LogError(f"no logs for replica {replica!r} on this node")
        data = _read_capped(self.old_path(replica), self.max_bytes) + _read_capped(
            path, self.max_bytes
        )
        if lines is None:
            return data
        if lines <= 0:
            return b""
        parts = data.splitlines(keepends=True)
        return b"".join(parts[-lines:])

    async def follow(
        self, replica: str, *, lines: int | None, poll: float = 0.2
    ) -> AsyncIterator[bytes]:
        """The tail, then whatever is appended, until the consumer stops iterating."""
        path = self.path(replica)
        head = await asyncio.to_thread(self.tail, replica, lines)
        if head:
            yield head
        offset = _size(path)
        while True:
            await asyncio.sleep(poll)
            size = _size(path)
            if size < offset:  # rotated: the rest of what we read is in .1 now
                rest = await asyncio.to_thread(_read_from, self.old_path(replica), offset)
                if rest:
                    yield rest
                offset = 0
            if size > offset:
                chunk = await asyncio.to_thread(_read_from, path, offset, size)
                offset += len(chunk)
                if chunk:
                    yield chunk


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_capped(path: Path, cap: int) -> bytes:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - cap))
            return f.read(cap)
    except FileNotFoundError:
        return b""


def _read_from(path: Path, offset: int, end: int | None = None) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(-1 if end is None else max(0, end - offset))
    except FileNotFoundError:
        return b""
