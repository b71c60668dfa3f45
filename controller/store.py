"""The typed door to etcd: reads, fenced compare-and-swap transactions, leases, watches.

Owns the aetcd client and maps its errors once to the controller's error tree
(`StoreUnavailable`, `Conflict`, `NotLeader`). Every write goes through
`txn`, which adds the leader fence (the election key must still carry this
controller's create_revision) unless the caller opts out; a failed fence
raises `NotLeader`, any other failed compare raises `Conflict`. It knows
nothing of deployments or replicas beyond keys and JSON values.

`Informer` keeps a local mirror of one prefix: list, then watch from the
listed revision; a compacted revision or a broken stream relists.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.utils

from controller import keys
from controller.errors import Conflict, NotLeader, StoreUnavailable

log = logging.getLogger(__name__)

Json = dict[str, Any]
MAX_MESSAGE = 512 * 2**20  # a full relist of 100,000 replicas is ~45 MB


@dataclass(frozen=True)
class Item:
    key: str
    value: Json
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Fence:
    """Leadership proof: the election key with the create_revision we wrote."""

    key: str
    create_revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: Json
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    """Delete a key, or (prefix=True) every key under it."""

    key: str
    prefix: bool = False


@dataclass(frozen=True)
class ModIs:
    """Compare: the key's mod_revision is `revision` (0: the key is absent)."""

    key: str
    revision: int


@dataclass(frozen=True)
class Change:
    """One watched change: value None means deleted."""

    key: str
    value: Json | None
    mod_revision: int


Op = Put | Delete
ItemLists = list[list[Item]]


class Compacted(StoreUnavailable):
    """The watch start revision was compacted away: relist."""


def encode(value: Json) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def decode(raw: bytes) -> Json:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _item(kv: Any) -> Item:
    return Item(
        key=kv.key.decode(),
        value=decode(kv.value),
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease,
    )


class Store:
    """etcd behind typed calls; `fence` is set while this process leads."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.fence: Fence | None = None
        self._index = 0
        self._client: aetcd.Client | None = None
        self._lock = asyncio.Lock()

    async def _conn(self) -> aetcd.Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                host, _, port = self.endpoints[self._index % len(self.endpoints)].rpartition(":")
                client = aetcd.Client(
                    host=host or "127.0.0.1",
                    port=int(port),
                    timeout=self.timeout,
                    options={"grpc.max_receive_message_length": MAX_MESSAGE},
                )
                await client.connect()
                self._client = client
        return self._client

    async def _failover(self) -> None:
        client, self._client = self._client, None
        self._index += 1
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass

    async def _call(self, fn: Callable[[aetcd.Client], Awaitable[Any]]) -> Any:
        try:
            return await fn(await self._conn())
        except aetcd.exceptions.ConnectionFailedError as exc:
            await self._failover()
            raise StoreUnavailable(f"etcd unreachable: {exc}") from None
        except aetcd.exceptions.ClientError as exc:
            raise StoreUnavailable(f"etcd: {exc}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- reads ------------------------------------------------------------

    async def get(self, key: str) -> Item | None:
        kv = await self._call(lambda c: c.get(key.encode()))
        return _item(kv) if kv is not None else None

    async def list(self, prefix: str) -> tuple[list[Item], int]:
        """All items under prefix and the store revision they were read at."""
        res = await self._call(lambda c: c.get_prefix(prefix.encode()))
        return [_item(kv) for kv in res], res.header.revision

    async def read(self, *ranges: str) -> ItemLists:
        """Several reads at one revision in one round trip: a key, or a prefix ending in '/'."""

        def build(c: aetcd.Client) -> Awaitable[Any]:
            t = c.transactions
            ops = [
                t.get(
                    r.encode(),
                    aetcd.utils.prefix_range_end(r.encode()) if r.endswith("/") else None,
                )
                for r in ranges
            ]
            return c.transaction(compare=[], success=ops, failure=[])

        _, responses = await self._call(build)
        return [[_item(get) for _, get in resp] for resp in responses]

    async def revision(self) -> int:
        res = await self._call(lambda c: c.get_prefix(b"/gantry/leader", keys_only=True))
        return int(res.header.revision)

    # -- writes -----------------------------------------------------------

    async def txn(
        self, compares: Sequence[ModIs], ops: Sequence[Op], *, fenced: bool = True
    ) -> int:
        """Apply ops atomically if every compare (and the fence) holds; the new revision."""
        fence = self.fence
        if fenced and fence is None:
            raise NotLeader(await self.leader_address())

        def build(c: aetcd.Client) -> Awaitable[Any]:
            t = c.transactions
            cmp = [t.mod(m.key.encode()) == m.revision for m in compares]
            if fenced and fence is not None:
                cmp.append(t.create(fence.key.encode()) == fence.create_revision)
            success = [
                t.put(o.key.encode(), encode(o.value), lease=o.lease or None)
                if isinstance(o, Put)
                else t.delete(
                    o.key.encode(),
                    aetcd.utils.prefix_range_end(o.key.encode()) if o.prefix else None,
                )
                for o in ops
            ]
            return c.transaction(
                compare=cmp, success=success, failure=[t.get(keys.LEADER.encode())]
            )

        ok, responses = await self._call(build)
        if ok:
            return await self.revision() if not responses else _txn_revision(responses)
        if fenced and fence is not None:
            current = responses[0][0][1] if responses and responses[0] else None
            if current is None or current.create_revision != fence.create_revision:
                self.fence = None
                address = decode(current.value).get("address", "") if current else ""
                raise NotLeader(address)
        raise Conflict(f"concurrent write to one of {[m.key for m in compares]}")

    async def txn_batched(
        self, compares: Sequence[ModIs], pairs: Sequence[tuple[ModIs | None, Op]], *, size: int
    ) -> int:
        """Write pairs (own compare, op) in transactions of <= size ops, each with `compares`.

        Returns the store revision after the last transaction."""
        revision = 0
        for start in range(0, len(pairs), max(1, size)):
            chunk = pairs[start : start + size]
            own = [c for c, _ in chunk if c is not None]
            revision = await self.txn([*compares, *own], [op for _, op in chunk])
        return revision

    async def update(
        self,
        key: str,
        fn: Callable[[Json | None], Json | None],
        *,
        fenced: bool = True,
        attempts: int = 20,
    ) -> Json | None:
        """Read-modify-write with retries; fn returns the new value (None: delete)."""
        for _ in range(attempts):
            item = await self.get(key)
            new = fn(dict(item.value) if item else None)
            if item is not None and new == item.value:
                return new
            if item is None and new is None:
                return None
            op: Op = Put(key, new) if new is not None else Delete(key)
            try:
                await self.txn([ModIs(key, item.mod_revision if item else 0)], [op], fenced=fenced)
                return new
            except Conflict:
                await asyncio.sleep(0.01)
        raise Conflict(f"{key}: too many concurrent writes")

    # -- leases -----------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        lease = await self._call(lambda c: c.lease(ttl))
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; its remaining TTL (<= 0: the lease is gone)."""
        reply = await self._call(lambda c: c.refresh_lease(lease_id))
        return int(reply.TTL) if reply is not None else 0

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._call(lambda c: c.revoke_lease(lease_id))
        except StoreUnavailable:
            pass

    async def leader_address(self) -> str:
        try:
            item = await self.get(keys.LEADER)
        except StoreUnavailable:
            return ""
        return str(item.value.get("address", "")) if item else ""

    # -- watches ----------------------------------------------------------

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        """Changes under prefix from start_revision on; raises Compacted or StoreUnavailable."""
        watch = await self._call(
            lambda c: c.watch_prefix(prefix.encode(), start_revision=start_revision)
        )
        try:
            async for ev in watch:
                kv = ev.kv
                value = decode(kv.value) if ev.kind == "PUT" else None
                yield Change(kv.key.decode(), value, kv.mod_revision)
        except aetcd.exceptions.RevisionCompactedError as exc:
            raise Compacted(str(exc)) from None
        except aetcd.exceptions.ClientError as exc:
            await self._failover()
            raise StoreUnavailable(f"etcd watch: {exc}") from None
        finally:
            try:
                await watch.cancel()
            except Exception:  # noqa: BLE001 - the stream may be gone already
                pass


def _txn_revision(responses: list[Any]) -> int:
    first = responses[0]
    for field in ("response_put", "response_delete_range"):
        if first.HasField(field):
            return int(getattr(first, field).header.revision)
    return 0


Listener = Callable[[str, Json | None], None]


class Informer:
    """A local mirror of one prefix, kept by list + watch; listeners hear every change."""

    def __init__(self, store: Store, prefix: str, *, name: str) -> None:
        self.store = store
        self.prefix = prefix
        self.name = name
        self.items: dict[str, Json] = {}
        self.revision = 0
        self.synced = asyncio.Event()
        self._listeners: list[Listener] = []

    def listen(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _emit(self, key: str, value: Json | None) -> None:
        for fn in self._listeners:
            try:
                fn(key, value)
            except Exception:
                log.exception("informer %s listener failed on %s", self.name, key)

    async def _relist(self) -> None:
        items, revision = await self.store.list(self.prefix)
        fresh = {i.key: i.value for i in items}
        old, self.items, self.revision = self.items, fresh, revision
        for key in old.keys() - fresh.keys():
            self._emit(key, None)
        for key, value in fresh.items():
            if old.get(key) != value:
                self._emit(key, value)
        self.synced.set()

    async def run(self) -> None:
        """List (unless already synced), then watch from the last revision seen, forever."""
        backoff = 0.1
        need_list = not self.synced.is_set()
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for change in self.store.watch(self.prefix, self.revision + 1):
                    backoff = 0.1
                    self.revision = max(self.revision, change.mod_revision)
                    if change.value is None:
                        self.items.pop(change.key, None)
                    else:
                        self.items[change.key] = change.value
                    self._emit(change.key, change.value)
            except Compacted as exc:
                log.warning("informer %s: %s; relisting", self.name, exc)
                need_list = True
                continue
            except StoreUnavailable as exc:
                log.warning("informer %s: %s; relisting", self.name, exc)
                need_list = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


class Mirror:
    """Informers over the prefixes the servers stream from, with one change counter.

    `version` grows on every change; stream handlers `wait_change` and then
    re-send their whole view.
    """

    PREFIXES = {
        "deployments": keys.DEPLOYMENTS,
        "replicas": keys.REPLICAS,
        "nodes": keys.NODES,
        "heartbeats": keys.HEARTBEATS,
        "rollouts": keys.ROLLOUTS,
        "leader": keys.LEADER,
    }

    def __init__(self, store: Store) -> None:
        self.informers = {n: Informer(store, p, name=n) for n, p in self.PREFIXES.items()}
        self.version = 0
        self._event = asyncio.Event()
        for inf in self.informers.values():
            inf.listen(self._bump)

    def __getitem__(self, name: str) -> dict[str, Json]:
        return self.informers[name].items

    def _bump(self, key: str, value: Json | None) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_change(self, seen: int, wait: float | None = None) -> int:
        """Wait until version > seen (or `wait` seconds); the current version."""
        while self.version <= seen:
            try:
                async with asyncio.timeout(wait):
                    await self._event.wait()
            except TimeoutError:
                break
        return self.version

    async def wait_synced(self) -> None:
        for inf in self.informers.values():
            await inf.synced.wait()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(inf.run(), name=f"informer-{name}")
            for name, inf in self.informers.items()
        ]
