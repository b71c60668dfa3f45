"""The work queue: one key at a time, deduplicated, re-run when dirtied, retried with backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from controller.errors import Conflict, NotLeader
from controller.workqueue import WorkQueue, backoff_delay


async def until(pred: Callable[[], bool], deadline: float = 5.0) -> None:
    for _ in range(int(deadline / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met before the deadline")


def test_backoff_grows_and_caps() -> None:
    assert [backoff_delay(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert backoff_delay(50) == 5.0


async def _run_workers(q: WorkQueue, handle, n: int = 3) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(q.worker(handle), name=f"test-worker-{i}") for i in range(n)]


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_one_key_at_a_time_and_dirty_keys_rerun() -> None:
    q = WorkQueue()
    active: set[str] = set()
    runs: list[str] = []
    overlap = False
    gate = asyncio.Event()

    async def handle(key: str) -> None:
        nonlocal overlap
        overlap |= key in active
        active.add(key)
        runs.append(key)
        if len(runs) == 1:
            await gate.wait()
        active.discard(key)

    tasks = await _run_workers(q, handle)
    try:
        q.add("a")
        await until(lambda: bool(runs))
        for _ in range(5):
            q.add("a")  # while "a" runs: coalesced into one re-run
        q.add("b")
        q.add("b")
        await until(lambda: runs.count("b") >= 1)
        gate.set()
        await until(lambda: runs.count("a") >= 2)
        for _ in range(10):
            await asyncio.sleep(0)
        assert runs.count("a") == 2 and runs.count("b") == 1
        assert not overlap
        assert q.depth() == 0
    finally:
        await _stop(tasks)


async def test_temporary_errors_retry_and_not_leader_stops() -> None:
    q = WorkQueue()
    attempts = 0

    async def handle(key: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Conflict("lost a race")
        if key == "stop":
            raise NotLeader("other:1")

    tasks = await _run_workers(q, handle, n=1)
    try:
        q.add("k")
        await until(lambda: attempts >= 3)
        q.add("stop")
        with pytest.raises(NotLeader):
            async with asyncio.timeout(5):
                await tasks[0]
    finally:
        await _stop(tasks)


async def test_add_after_delays() -> None:
    q = WorkQueue()
    seen = asyncio.Event()

    async def handle(key: str) -> None:
        seen.set()

    tasks = await _run_workers(q, handle, n=1)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        q.add_after("later", 0.2)
        assert q.depth() == 1
        async with asyncio.timeout(5):
            await seen.wait()
        assert loop.time() - start >= 0.19
    finally:
        await _stop(tasks)
