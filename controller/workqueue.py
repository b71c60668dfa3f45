"""A queue of object keys: one key handled at a time, retried with backoff.

Watch events only `add` keys; the handler re-reads fresh state, so a missed
or duplicated event is harmless. A key added while it is being handled is
handled again afterwards. `add_after` schedules a key for later (a plan's
requeue_at); a handler raising `Temporary` retries the key with exponential
backoff; `NotLeader` propagates and stops the workers.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable

from controller.errors import NotLeader, Temporary

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[None]]


def backoff_delay(failures: int, *, base: float = 0.05, cap: float = 5.0) -> float:
    """0.05, 0.1, 0.2, ... capped: the delay after `failures` failed attempts."""
    return min(cap, base * (2 ** max(0, failures - 1)))


class WorkQueue:
    def __init__(self, name: str = "queue") -> None:
        self.name = name
        self._ready: list[str] = []
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._later: list[tuple[float, str]] = []
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()

    def depth(self) -> int:
        return len(self._queued) + len(self._later)

    def add(self, key: str) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wake.set()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        heapq.heappush(self._later, (asyncio.get_running_loop().time() + delay, key))
        self._wake.set()

    def _promote_due(self) -> float | None:
        now = asyncio.get_running_loop().time()
        while self._later and self._later[0][0] <= now:
            self.add(heapq.heappop(self._later)[1])
        return self._later[0][0] - now if self._later else None

    async def _next(self) -> str:
        while True:
            wait = self._promote_due()
            if self._ready:
                key = self._ready.pop(0)
                self._queued.discard(key)
                self._active.add(key)
                return key
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    async def worker(self, handle: Handler) -> None:
        """Handle keys forever; raises NotLeader when the handler does."""
        while True:
            key = await self._next()
            try:
                await handle(key)
                self._failures.pop(key, None)
            except NotLeader:
                self._done(key)
                raise
            except Temporary as exc:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                log.info("%s: %s failed (%s); retry #%d", self.name, key, exc, n)
                self._dirty.discard(key)
                self.add_after(key, backoff_delay(n))
            except Exception:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                log.exception("%s: %s failed; retry #%d", self.name, key, n)
                self._dirty.discard(key)
                self.add_after(key, backoff_delay(n, base=0.5, cap=30.0))
            finally:
                self._done(key)
