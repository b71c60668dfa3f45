"""Leader election over etcd: a lease plus a create-if-absent transaction.

Owns the key /gantry/leader. A candidate grants a lease (TTL `ttl`) and
creates the key holding its id and gRPC address, only if absent. The winner
keeps the lease alive and sets the store's fence (the key's create_revision),
which every later write compares, so a deposed or paused leader can never
write. Losers watch the key and try again when it goes. While leading, the
caller's `lead()` coroutine runs; it is cancelled the moment leadership is
lost (lease gone, keepalive failing for longer than the TTL, or a fenced
write finding the key no longer ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controller import keys
from controller.errors import NotLeader, StoreUnavailable
from controller.store import Fence, ModIs, Put, Store

log = logging.getLogger(__name__)


class Election:
    def __init__(self, store: Store, *, ident: str, address: str, ttl: int = 5) -> None:
        self.store = store
        self.ident = ident
        self.address = address
        self.ttl = max(1, ttl)
        self.leader_id = ""
        self.leader_address = ""
        self.terms = 0

    @property
    def is_leader(self) -> bool:
        return self.store.fence is not None

    async def _campaign(self) -> int | None:
        """Try once to become leader; the lease id when we won."""
        lease = await self.store.grant(self.ttl)
        t_value = {"id": self.ident, "address": self.address}
        try:
            await self.store.txn(
                [ModIs(keys.LEADER, 0)], [Put(keys.LEADER, t_value, lease)], fenced=False
            )
        except Exception:
            await self.store.revoke(lease)
            return None
        item = await self.store.get(keys.LEADER)
        if item is None or item.lease != lease:
            await self.store.revoke(lease)
            return None
        self.store.fence = Fence(keys.LEADER, item.create_revision)
        self.leader_id, self.leader_address = self.ident, self.address
        self.terms += 1
        log.info(
            "elected leader %s (term %d, fence %d)", self.ident, self.terms, item.create_revision
        )
        return lease

    async def _refresh_view(self) -> None:
        item = await self.store.get(keys.LEADER)
        self.leader_id = str(item.value.get("id", "")) if item else ""
        self.leader_address = str(item.value.get("address", "")) if item else ""

    async def _hold(self, lease: int) -> None:
        """Keep the lease alive; return when leadership is lost."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while self.store.fence is not None:
            await asyncio.sleep(self.ttl / 3)
            try:
                remaining = await asyncio.wait_for(self.store.keepalive(lease), self.ttl / 2)
            except (StoreUnavailable, TimeoutError):
                remaining = -1
            if remaining > 0:
                last_ok = loop.time()
            elif remaining == 0 or loop.time() - last_ok > self.ttl * 0.8:
                log.warning("leader %s lost its lease", self.ident)
                return

    async def _wait_vacant(self) -> None:
        """Return when the leader key is (probably) gone; re-checks at least every TTL/2."""
        await self._refresh_view()
        if not self.leader_id:
            return
        with contextlib.suppress(TimeoutError, StoreUnavailable):
            async with asyncio.timeout(self.ttl / 2):
                rev = await self.store.revision()
                async for change in self.store.watch(keys.LEADER, rev + 1):
                    if change.value is None:
                        return

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever; run `lead()` during each term."""
        while True:
            try:
                lease = await self._campaign()
            except StoreUnavailable as exc:
                log.warning("election: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if lease is None:
                with contextlib.suppress(StoreUnavailable):
                    await self._wait_vacant()
                continue
            await self._term(lead, lease)

    async def _term(self, lead: Callable[[], Awaitable[None]], lease: int) -> None:
        work = asyncio.create_task(self._lead_guarded(lead), name="leader-work")
        hold = asyncio.create_task(self._hold(lease), name="leader-lease")
        try:
            await asyncio.wait({work, hold}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.store.fence = None
            for task in (work, hold):
                task.cancel()
            await asyncio.gather(work, hold, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.revoke(lease))
            self.leader_id = self.leader_address = ""
            log.info("%s stepped down", self.ident)

    async def _lead_guarded(self, lead: Callable[[], Awaitable[None]]) -> None:
        try:
            await lead()
        except NotLeader:
            log.warning("%s was deposed (fence failed)", self.ident)

    async def resign(self) -> None:
        """Give up leadership now (graceful shutdown): revoke happens in _term."""
        self.store.fence = None


def require_leader(election: Election, leader_record: Mapping[str, Any] | None) -> None:
    """Raise NotLeader (naming the current leader's address) unless we lead."""
    if not election.is_leader:
        raise NotLeader(str((leader_record or {}).get("address", "") or election.leader_address))
