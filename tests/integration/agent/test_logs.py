"""Log files: cap by copy-and-truncate, tail, follow across a rotation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent.logs import LogError, LogStore


def append(path: Path, data: bytes) -> None:
    # Like a container's stdout: opened with O_APPEND.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_tail_lines(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    path = store.prepare("web-1")
    append(path, b"".join(b"line %d\n" % i for i in range(10)))
    assert store.tail("web-1", 3) == b"line 7\nline 8\nline 9\n"
    assert store.tail("web-1", None).count(b"\n") == 10
    assert store.tail("web-1", 0) == b""


def test_unknown_and_bad_names(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    with pytest.raises(LogError, match="no logs for replica 'nope'"):
        store.tail("nope", 10)
    with pytest.raises(LogError, match="not a valid name"):
        store.path("../etc/passwd")


def test_rotation_keeps_one_old_file_and_caps_size(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=100)
    path = store.prepare("web-1")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # a long-lived writer
    try:
        for round_ in range(3):
            os.write(fd, b"".join(b"r%d-%02d\n" % (round_, i) for i in range(30)))
            assert store.rotate_all() == ["web-1"]
            assert path.stat().st_size == 0
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert store.rotate_all() == []
    assert path.read_bytes() == b"after\n"  # appended at the new end, no hole
    old = store.old_path("web-1").read_bytes()
    assert old.startswith(b"r2-00\n") and b"r1-" not in old
    assert store.tail("web-1", 2) == b"r2-29\nafter\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web-1.log", "web-1.log.1"]


async def test_follow_sees_appends_and_survives_rotation(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=50)
    path = store.prepare("web-1")
    append(path, b"first\n")
    got = bytearray()

    async def reader() -> None:
        async for chunk in store.follow("web-1", lines=5, poll=0.02):
            got.extend(chunk)

    task = asyncio.create_task(reader(), name="follow")
    try:
        await until(lambda: got == b"first\n")
        append(path, b"second\n")
        await until(lambda: got.endswith(b"second\n"))
        append(path, b"x" * 60 + b"\n")
        store.rotate_all()
        append(path, b"third\n")
        await until(lambda: got.endswith(b"third\n"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert bytes(got) == b"first\nsecond\n" + b"x" * 60 + b"\nthird\n"


async def until(cond: object, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)
